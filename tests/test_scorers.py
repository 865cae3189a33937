"""Scoring in the method contract: for every registered method, the scores `adapt` reports
(`Method.adapt_and_score`), those `expand` ranks by (`adaptation.score`, the adapted model's `score`) and those
`expand_shard` ranks by (`AdaptedModel.scorer`, alone and in its group, `UserScorer.batched`) agree for the
same campaign and users.

Tolerance: 2e-5 absolute on probabilities. The paths compute the same function in float32 with sums in
another order: the network's first layer split by field (`model.scoring`, float32 tables), and for
MetaHeac+LR the users' topic mixes inferred per scored batch rather than per users table (the E-step's
float32 sums); `adapt` and `expand` share one function and agree exactly.
"""

from __future__ import annotations

import pytest
import torch

from metaheac.adaptation import score
from metaheac.data.tensors import Rows
from metaheac.method_names import RECOMMENDED
from metaheac.methods import METHODS
from metaheac.model.config import ModelConfig
from metaheac.model.scoring import ScoreConfig
from metaheac.training.config import MetaTrainConfig
from metaheac.training.joint import JointTrainConfig
from tests.tiny import TINY, tiny_rows, with_category

FEATURES = with_category([1, 1, 2, 2, 1, 3, 2, 2])
ROWS = tiny_rows(FEATURES, [150, 150, 150, 150, 0, 120])
CAMPAIGN = 5
TOLERANCE = 2e-5


@pytest.mark.parametrize("name", list(METHODS))
def test_adapt_expand_and_expand_shard_score_a_campaign_alike(name: str) -> None:
    spec = METHODS[name]
    # the recommended method's defaults (32 topics, 3 x 32 factors), a tiny network for the others
    config = ModelConfig(embedding_dim=8) if name == RECOMMENDED else TINY
    general = spec.train(FEATURES, ROWS.select(ROWS.campaign < 4), config, seed=0, progress=False,
                         meta_config=MetaTrainConfig(task_count=2, batch_size=16, max_steps=2, device="cpu"),
                         joint_config=JointTrainConfig(batch_size=16, max_steps=2))
    users = torch.arange(len(FEATURES.users))
    seeds = ROWS.select(ROWS.campaign == CAMPAIGN)
    targets = Rows(torch.full((len(users),), CAMPAIGN), users, torch.zeros(len(users)))
    adapted = spec.adapt_and_score(general, FEATURES, seeds, targets, progress=False)["score"].to_numpy()

    ((campaign, model),) = spec.adapt_campaigns(general, FEATURES, {CAMPAIGN: seeds}, spec.adapt_config())
    expanded = score(model, FEATURES, campaign, users).numpy()  # as `expand` scores every user
    assert (expanded == adapted).all()

    ids = FEATURES.campaigns.fields[CAMPAIGN]
    scorer = model.scorer(ids, ScoreConfig(precision="float32"), {})
    single, lists = FEATURES.users.single, FEATURES.users.lists
    shard = scorer(single, lists).numpy()
    assert shard == pytest.approx(adapted, abs=TOLERANCE)
    other = model.scorer(FEATURES.campaigns.fields[CAMPAIGN - 1], ScoreConfig(precision="float32"), {})
    if scorer.group is not None and scorer.group == other.group:  # in its group, as `score_shard` scores it
        together = scorer.batched([other, scorer])(single, lists)
        assert torch.equal(together[:, 1], scorer(single, lists))
