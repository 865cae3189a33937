"""The shared audience factors: what they learn across campaigns, and what a campaign never trained on gets."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from metaheac.evaluation.metrics import roc_auc
from metaheac.linear import lr as linear
from metaheac.recommended import factors
from tests.tiny import tiny_rows, with_category

# tiny data: a few hundred rows per campaign need more and larger steps than the defaults take
CONFIG = factors.FactorConfig(dim=4, min_users=5, learning_rate=0.03, batch_size=128, max_epochs=60, seed=0)


def test_advertiser_vectors_carry_what_an_advertisers_campaigns_share() -> None:
    """tiny_rows' label is the user's age parity against the advertiser's parity; categories mix both
    parities, so only the advertiser vectors can hold the sign. Campaigns 5 and 7 are never trained on."""
    features = with_category([1, 1, 2, 2, 1, 1, 2, 2])  # advertisers 3, 2, 3, 4, 2, 2, 6, 3
    rows = tiny_rows(features, [400, 400, 400, 400, 0, 400, 0, 400])
    fitted = factors.fit_factors(features, rows.select(rows.campaign < 4), CONFIG)
    for campaign in (5, 7):  # advertiser 2 (even: age parity even likes it) and 3 (odd)
        mine = rows.select(rows.campaign == campaign)
        logit = fitted.users(linear.design(features, mine.user)) @ fitted.prior(features, campaign)
        assert roc_auc(mine.label.numpy(), logit) > 0.75
    assert not fitted.advertiser[6].any()  # never trained on: no deviation from the category


def test_untrained_categories_get_the_mean_vector_and_rare_columns_no_row() -> None:
    features = with_category([1, 1, 1, 1, 2, 3, 3, 3])
    rows = tiny_rows(features, [300, 300, 300, 300])
    fitted = factors.fit_factors(features, rows, dataclasses.replace(CONFIG, min_users=40))
    assert np.allclose(fitted.category[2], fitted.category[1]) and np.allclose(fitted.category[3], fitted.category[1])
    users = torch.unique(rows.user)
    seen = np.asarray((linear.design(features, users) != 0).sum(0)).ravel()
    assert not fitted.embedding[seen < 40].any() and fitted.embedding[seen >= 40].any()
    h = fitted.users(linear.design(features, rows.user))
    assert np.allclose(fitted.mean, h.mean(0))
    assert np.allclose(fitted.cov, np.cov(h.T, ddof=0))


def test_the_fit_is_reproducible_from_its_seed() -> None:
    features = with_category([1, 1, 2, 2, 1, 1, 2, 2])
    rows = tiny_rows(features, [200, 200, 200, 200])
    first, second = (factors.fit_factors(features, rows, CONFIG) for _ in range(2))
    assert np.array_equal(first.embedding, second.embedding) and np.array_equal(first.advertiser, second.advertiser)


def test_several_fits_are_averaged_side_by_side() -> None:
    """models=2 is the fits of seeds s and s + 1 side by side, their vectors halved: the prior is their mean."""
    features = with_category([1, 1, 2, 2, 1, 1, 2, 2])
    rows = tiny_rows(features, [200, 200, 200, 200])
    both = factors.fit_factors(features, rows, dataclasses.replace(CONFIG, models=2))
    one = [factors.fit_factors(features, rows, dataclasses.replace(CONFIG, models=1, seed=s)) for s in (0, 1)]
    assert np.array_equal(both.embedding, np.concatenate([f.embedding for f in one], 1))
    x = linear.design(features, torch.arange(50))
    means = np.mean([f.users(x) @ f.prior(features, 5) for f in one], 0)
    assert np.allclose(both.users(x) @ both.prior(features, 5), means)
