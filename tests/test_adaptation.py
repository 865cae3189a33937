"""Adaptation (the online stage) and scoring: the overlay path against the official copy + Adam loop."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from metaheac.adaptation import (
    AdaptConfig,
    AdaptedModel,
    _holdout,
    adapt,
    adapt_and_score_campaigns,
    adapt_campaigns,
    campaign_seed,
    score,
)
from metaheac.data.tensors import Features, Rows
from metaheac.model.baselines import MLP, LogisticRegression, MMoE, SharedBottom
from metaheac.model.heac import HybridExpertsCritics
from tests.tiny import TINY, tiny_features, tiny_rows

CONFIG = AdaptConfig(batch_size=16)
# 37 and 16 rows: a short last batch and exact batches; 5 rows: fewer than one batch.
COUNTS = [37, 16, 5, 60]


def data(counts: list[int] = COUNTS) -> tuple[Features, Rows]:
    features = tiny_features()
    return features, tiny_rows(features, counts)


def network(kind=HybridExpertsCritics, dtype: torch.dtype = torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    return kind(tiny_features().schema, TINY).to(dtype)


def of(rows: Rows, campaign: int) -> Rows:
    return rows.select(rows.campaign == campaign)


def official(general, features: Features, rows: Rows, config: AdaptConfig):
    """The oracle: the official protocol written plainly, a full copy and Adam over every parameter."""
    model = copy.deepcopy(general)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(campaign_seed(config.seed, int(rows.campaign[0])))
    for _ in range(config.epochs):
        for index in torch.randperm(len(rows), generator=generator).split(config.batch_size):
            picked = rows.select(index)
            p = model(features.batch(picked.campaign, picked.user))
            loss = F.binary_cross_entropy(p, picked.label.to(p.dtype))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def everyone(features: Features, campaign: int):
    users = torch.arange(len(features.users))
    return users, features.batch(torch.full_like(users, campaign), users)


@pytest.mark.parametrize("kind", [HybridExpertsCritics, LogisticRegression, MLP, SharedBottom, MMoE])
def test_overlay_adaptation_equals_the_official_copy_and_adam(kind) -> None:
    features, rows = data()
    general = network(kind, torch.float64)
    adapted = dict(adapt_campaigns(general, features, {c: of(rows, c) for c in range(len(COUNTS))}, CONFIG))
    for campaign in range(len(COUNTS)):
        reference = official(general, features, of(rows, campaign), CONFIG)
        users, batch = everyone(features, campaign)
        with torch.no_grad():
            expected = reference(batch)
        torch.testing.assert_close(score(adapted[campaign], features, campaign, users), expected, rtol=0, atol=1e-12)
        with torch.no_grad():
            torch.testing.assert_close(adapted[campaign](batch), expected, rtol=0, atol=1e-12)


def test_the_general_model_is_left_untouched_and_shared() -> None:
    features, rows = data()
    general = network()
    before = copy.deepcopy(general.state_dict())
    adapted = adapt(general, features, of(rows, 0), CONFIG)
    assert all(torch.equal(before[k], v) for k, v in general.state_dict().items())
    assert adapted.network is general  # shared, not copied
    users, batch = everyone(features, 0)
    with torch.no_grad():
        assert (score(adapted, features, 0, users) - general(batch)).abs().max() > 1e-3
    # The overlay holds only rows the seed rows read: the campaign's own fields and its users' ids.
    changed = sum(len(ids) for ids, _ in adapted.overlay)
    assert 0 < changed < sum(t.num_embeddings for t in general.embeddings.tables())
    campaign_rows = adapted.overlay[-2][0]  # the first campaign field's table
    assert campaign_rows.tolist() == [int(features.campaigns.fields[0, 0])]


def test_adaptation_is_seeded_per_campaign() -> None:
    features, rows = data()
    general = network()
    users = torch.arange(len(features.users))

    def scores(seed: int) -> torch.Tensor:
        return score(adapt(general, features, of(rows, 3), AdaptConfig(batch_size=16, seed=seed)), features, 3, users)

    torch.testing.assert_close(scores(1), scores(1), rtol=0, atol=0)
    assert (scores(1) - scores(2)).abs().max() > 1e-6


def test_from_scratch_starts_each_campaign_from_its_own_fresh_network() -> None:
    features, rows = data()
    config = AdaptConfig(batch_size=16, from_scratch=True)
    users = torch.arange(len(features.users))
    seeds = {0: of(rows, 0), 1: of(rows, 1), 2: rows.select(slice(0, 0))}
    one = dict(adapt_campaigns(network(MLP, seed=0), features, seeds, config))
    other = dict(adapt_campaigns(network(MLP, seed=5), features, seeds, config))  # the general weights don't matter
    for c in seeds:
        torch.testing.assert_close(score(one[c], features, c, users), score(other[c], features, c, users))
    assert one[0].network is not one[1].network
    fresh_0, fresh_2 = one[0].network.dense_parameters(), one[2].network.dense_parameters()
    assert not torch.equal(fresh_0["layer0_w"], fresh_2["layer0_w"])  # seeded per campaign


def test_score_of_a_plain_network_equals_its_forward() -> None:
    features, _ = data()
    general = network(MMoE)
    users, batch = everyone(features, 2)
    with torch.no_grad():
        expected = general(batch)
    torch.testing.assert_close(score(general, features, 2, users, batch_size=7), expected)
    torch.testing.assert_close(score(AdaptedModel.unchanged(general), features, 2, users[:10]), expected[:10])


def test_adapt_and_score_campaigns_scores_every_stage2_row() -> None:
    features = tiny_features()
    stage1 = tiny_rows(features, [30, 0, 12, 40], seed=1)
    stage2 = tiny_rows(features, [10, 8, 0, 25], seed=2)
    frame = adapt_and_score_campaigns(network(), features, stage1, stage2, CONFIG, progress=False)
    assert list(frame.columns) == ["campaign", "user", "label", "score"]
    assert len(frame) == len(stage2) and frame.groupby("campaign").size().to_dict() == {0: 10, 1: 8, 3: 25}
    assert frame["user"].tolist() == stage2.user.tolist() and frame["label"].tolist() == stage2.label.tolist()
    assert frame["score"].between(0, 1, inclusive="neither").all()
    # Campaign 1 has no seed rows: it is scored by the general model as it is.
    unadapted = score(network(), features, 1, stage2.user[stage2.campaign == 1])
    torch.testing.assert_close(torch.tensor(frame.loc[frame.campaign == 1, "score"].to_numpy()), unadapted)


def test_adapt_takes_one_campaign() -> None:
    features, rows = data()
    with pytest.raises(ValueError, match="one campaign, got 4 campaigns"):
        adapt(network(), features, rows, CONFIG)


def test_holdout_is_stratified_disjoint_and_complete() -> None:
    label = torch.tensor([1.0] * 10 + [0.0] * 90)
    train, held = _holdout(label, 0.2, torch.Generator().manual_seed(0))
    assert sorted(torch.cat([train, held]).tolist()) == list(range(100))
    assert label[held].sum() == 2 and len(held) == 20


def test_early_stopping_keeps_an_epoch_no_worse_on_the_held_out_rows_than_the_first() -> None:
    features, rows = data([0, 0, 0, 400])
    rows = of(rows, 3)
    config = AdaptConfig(batch_size=16, from_scratch=True, holdout=0.25, epochs=30, patience=2, lr=0.05)
    _, held = _holdout(rows.label, 0.25, torch.Generator().manual_seed(campaign_seed(config.seed, 3)))

    def held_out_loss(epochs: int) -> float:
        model = adapt(network(MLP), features, rows, dataclasses.replace(config, epochs=epochs))
        p = score(model, features, 3, rows.user[held]).double()
        return float(F.binary_cross_entropy(p, rows.label[held].double()))

    assert held_out_loss(30) <= held_out_loss(1) + 1e-9
