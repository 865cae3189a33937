"""The online stage: seed sets, a campaign's request, scoring a user base in shards, audiences, the model registry."""
