"""The linear models on the raw features: the design rows, the cross-validated C, Category LR, and the
recommended method's transfer head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from metaheac import linear
from metaheac.data.schema import Field
from metaheac.model.baselines import LogisticRegression
from tests.tiny import tiny_features, tiny_rows

FEATURES = tiny_features()
CONFIG = linear.LinearConfig(cs=(0.01, 0.1, 1.0, 10.0))


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
    model = linear.fit_cv(x, y, CONFIG)
    reference = SkLogisticRegression(C=model.c, max_iter=5000, tol=1e-10).fit(x, y)
    assert model.weight == pytest.approx(reference.coef_.ravel(), abs=1e-3)
    assert model.c > 0.01  # a real signal: the strongest penalty is not the best
    noise = np.random.default_rng(1).random(len(y)) < 0.3
    assert linear.fit_cv(x, noise, CONFIG).c == 0.01  # pure noise: the strongest penalty wins


def test_one_class_gives_the_base_rate() -> None:
    rows = tiny_rows(FEATURES, [40])
    x = linear.design(FEATURES, rows.user)
    model = linear.fit_cv(x, np.zeros(40), CONFIG)
    assert (model.weight == 0).all() and 1 / (1 + np.exp(-model.bias)) < 0.05


def test_category_lr_fits_per_category_and_falls_back_to_all() -> None:
    schema = FEATURES.schema
    schema_with_category = type(schema)(schema.user_single, schema.user_lists,
                                        [*schema.campaign_fields, Field("adCategoryId", 4)])
    fields = torch.cat([FEATURES.campaigns.fields, torch.tensor([[1], [1], [2], [2], [3], [1], [2], [3]]).int()], 1)
    features = type(FEATURES)(schema_with_category, FEATURES.users,
                              type(FEATURES.campaigns)(FEATURES.campaigns.aid, fields, FEATURES.campaigns.split,
                                                       FEATURES.campaigns.seed_positives))
    rows = tiny_rows(features, [100, 100, 100, 100])  # campaigns 0..3: categories 1, 1, 2, 2
    category_lr = linear.fit_category_lr(features, rows, CONFIG)
    assert set(category_lr.by_category) == {1, 2}
    assert category_lr.model(features, 5) is category_lr.by_category[1]
    assert category_lr.model(features, 4) is category_lr.overall  # category 3: never trained on
