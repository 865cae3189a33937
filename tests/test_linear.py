"""The linear models on the raw features: the design rows, the cross-validated C, Category LR, and the
recommended method's transfer head."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from metaheac import linear, transfer
from metaheac.data.schema import Field
from metaheac.data.tensors import CampaignTable, Features
from metaheac.methods import load_model, method
from metaheac.model.baselines import LogisticRegression
from metaheac.model.store import save_model
from metaheac.training.config import MetaTrainConfig
from tests.tiny import tiny_features, tiny_rows

FEATURES = tiny_features()
CONFIG = linear.LinearConfig(cs=(0.01, 0.1, 1.0, 10.0))


def with_category(values: list[int]) -> Features:
    """FEATURES with an adCategoryId campaign field (ids 1..3) holding `values`, one per campaign."""
    schema = FEATURES.schema
    schema = type(schema)(schema.user_single, schema.user_lists, [*schema.campaign_fields, Field("adCategoryId", 4)])
    fields = torch.cat([FEATURES.campaigns.fields, torch.tensor(values).int()[:, None]], 1)
    campaigns = FEATURES.campaigns
    return Features(schema, FEATURES.users, CampaignTable(campaigns.aid, fields, campaigns.split,
                                                           campaigns.seed_positives))


def test_design_rows_are_what_the_one_dim_tables_sum() -> None:
    """x @ w equals the LogisticRegression network's logit when its tables hold w (campaign tables zero)."""
    net = LogisticRegression(FEATURES.schema).double()
    offsets = linear.column_offsets(FEATURES)
    w = np.random.default_rng(0).normal(size=offsets[-1])
    with torch.no_grad():
        for i, table in enumerate(net.embeddings.tables()[: len(offsets) - 1]):
            table.weight.copy_(torch.from_numpy(w[offsets[i] : offsets[i + 1], None]))
    users = torch.arange(50)
    batch = FEATURES.batch(torch.zeros(50, dtype=torch.long), users)
    with torch.no_grad():
        expected = torch.logit(net(batch)).numpy()
    assert linear.design(FEATURES, users) @ w == pytest.approx(expected, abs=1e-5)
    # an empty list adds nothing, a single field one column
    x = linear.design(FEATURES, users).toarray()
    assert (x[:, offsets[0] : offsets[1]].sum(1) == 1).all()


def test_fit_matches_sklearn_and_cross_validation_picks_the_c_of_least_held_out_loss() -> None:
    rows = tiny_rows(FEATURES, [600])
    x, y = linear.design(FEATURES, rows.user), rows.label.numpy()
    model = linear.fit_cv(x, y, dataclasses.replace(CONFIG, tol=1e-9))  # the same objective, solved tightly
    reference = SkLogisticRegression(C=model.c, max_iter=5000, tol=1e-10).fit(x, y)
    assert model.weight == pytest.approx(reference.coef_.ravel(), abs=1e-3)
    assert model.bias == pytest.approx(reference.intercept_[0], abs=1e-3)
    assert model.c > 0.01  # a real signal: the strongest penalty is not the best
    noise = np.random.default_rng(1).random(len(y)) < 0.3
    assert linear.fit_cv(x, noise, CONFIG).c == 0.01  # pure noise: the strongest penalty wins


def test_one_class_gives_the_base_rate() -> None:
    rows = tiny_rows(FEATURES, [40])
    x = linear.design(FEATURES, rows.user)
    model = linear.fit_cv(x, np.zeros(40), CONFIG)
    assert (model.weight == 0).all() and 1 / (1 + np.exp(-model.bias)) < 0.05


def test_category_lr_fits_per_category_and_falls_back_to_all() -> None:
    features = with_category([1, 1, 2, 2, 3, 1, 2, 3])
    rows = tiny_rows(features, [100, 100, 100, 100])  # campaigns 0..3: categories 1, 1, 2, 2
    category_lr = linear.fit_category_lr(features, rows, CONFIG)
    assert set(category_lr.by_category) == {1, 2}
    assert category_lr.model(features, 5) is category_lr.by_category[1]
    assert category_lr.model(features, 4) is category_lr.overall  # category 3: never trained on


def test_transfer_head_folds_the_category_model_into_one_linear_head() -> None:
    features = with_category([1, 1, 2, 2, 1, 1, 2, 2])
    rows = tiny_rows(features, [150, 150, 150, 150, 300])
    category_lr = linear.fit_category_lr(features, rows.select(rows.campaign < 4), CONFIG)
    network = method("MLP+pre-training").build(features.schema)
    seeds = rows.select(rows.campaign == 4)
    head = transfer.fit_transfer(network, category_lr, features, 4, seeds, CONFIG)
    users = torch.arange(100)
    x, general = linear.design(features, users), transfer.general_logit(network, features, 4, users)
    category = category_lr.model(features, 4)
    stacked = linear.fit_cv(transfer._stack(linear.design(features, seeds.user),
                                            transfer.general_logit(network, features, 4, seeds.user),
                                            category.logit(linear.design(features, seeds.user))),
                            seeds.label.numpy(), CONFIG)
    expected = stacked.logit(transfer._stack(x, general, category.logit(x)))
    assert head.logit(x, general) == pytest.approx(expected, abs=1e-8)


def test_recommended_method_trains_adapts_and_scores_through_the_method_contract(tmp_path) -> None:
    features = with_category([1, 1, 2, 2, 1, 3, 2, 2])
    rows = tiny_rows(features, [150, 150, 150, 150, 0, 300])
    recommended = method(transfer.RECOMMENDED)
    general = recommended.train(features, rows.select(rows.campaign < 4),
                                meta_config=MetaTrainConfig(max_steps=2, device="cpu"), seed=0, progress=False)
    save_model(general, str(tmp_path), method=transfer.RECOMMENDED)
    general, _ = load_model(str(tmp_path))  # the Category LR weights travel with the network
    seeds = rows.select(rows.campaign == 5)  # category 3: no training campaign, the overall model
    ((_, adapted),) = recommended.adapt_campaigns(general, features, {5: seeds})
    users = torch.arange(200)
    x = linear.design(features, users)
    expected = adapted.head.logit(x, transfer.general_logit(general, features, 5, users))
    assert torch.logit(adapted.score(features, 5, users, batch_size=64).double()).numpy() == pytest.approx(
        expected, abs=1e-3)
    category = general.categories.models(features)
    assert set(category.by_category) == {1, 2} and category.model(features, 5) is category.overall


def test_category_lr_scores_the_same_after_a_save_and_load(tmp_path) -> None:
    features = with_category([1, 1, 2, 2, 1, 3, 2, 2])
    rows = tiny_rows(features, [150, 150, 150, 150, 0, 300])
    category_lr = method("Category LR")
    general = category_lr.train(features, rows.select(rows.campaign < 4), seed=0, progress=False)
    save_model(general, str(tmp_path), method="Category LR")
    loaded, _ = load_model(str(tmp_path))  # a float32 network beside float64 Category LR weights
    seeds = {2: rows.select(rows.campaign == 2)}
    users = torch.arange(200)
    ((_, before),) = category_lr.adapt_campaigns(general, features, seeds)
    ((_, after),) = category_lr.adapt_campaigns(loaded, features, seeds)
    assert after.score(features, 2, users).numpy() == pytest.approx(before.score(features, 2, users).numpy(), abs=1e-5)
