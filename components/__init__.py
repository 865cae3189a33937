"""The pipeline steps as TorchX and KFP components, both generated from `metaheac.steps` and `spec.py`."""
