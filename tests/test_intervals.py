"""Bootstrap intervals on tiny data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metaheac.evaluation import intervals, metrics


def frame(n_campaigns: int = 40, rows: int = 30, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    campaign = np.repeat(np.arange(n_campaigns), rows)
    label = (rng.random(len(campaign)) < 0.3).astype(float)
    return pd.DataFrame({
        "campaign": campaign,
        "split": np.where(campaign % 2 == 0, "test_cold", "test_hot"),
        "label": label,
        "score": label * shift + rng.normal(size=len(campaign)).round(1),  # rounding makes ties
    })


def test_pair_counts_give_the_pooled_auc_of_any_subset() -> None:
    f = frame()
    s = intervals.campaign_scores(f)
    for subset in ([0, 1, 2], [5], list(range(40))):
        m = np.zeros(40)
        m[subset] = 1
        rows = f[f["campaign"].isin(subset)]
        expected = metrics.roc_auc(rows["label"].to_numpy(), rows["score"].to_numpy())
        assert m @ s.pairs @ m / ((m @ s.positives) * (m @ s.negatives)) == pytest.approx(expected)
    # a campaign drawn twice counts its pairs with itself and others twice over
    m = np.array([2.0, 1.0] + [0] * 38)
    doubled = pd.concat([f[f["campaign"] == 0], f[f["campaign"] == 0].assign(campaign=99), f[f["campaign"] == 1]])
    expected = metrics.roc_auc(doubled["label"].to_numpy(), doubled["score"].to_numpy())
    assert m @ s.pairs @ m / ((m @ s.positives) * (m @ s.negatives)) == pytest.approx(expected)


def test_estimates_are_the_table_values() -> None:
    f = frame(shift=1.0)
    result = intervals.bootstrap([{"A": f}], focus="A", replicates=50)
    summary = metrics.summarize(f)
    for (group, key), (estimate, low, high) in result["A"].items():
        assert estimate == pytest.approx(summary[group][key])
        assert low <= estimate <= high


def test_same_scores_give_a_zero_gap_and_a_clear_gap_lies_above_zero() -> None:
    f = frame(shift=1.0)
    same = intervals.bootstrap([{"A": f, "B": f.copy()}], focus="A", replicates=100)
    assert all(v == (0.0, 0.0, 0.0) for v in same["gap"].values())
    # B reverses every ranking of A: each campaign's AUC becomes 1 - AUC
    reversed_ = f.assign(score=-f["score"])
    gap = intervals.bootstrap([{"A": f, "B": reversed_}], focus="A", replicates=200)["gap"]
    estimate, low, high = gap[("cold", "gauc")]
    assert low < estimate < high and low > 0


def test_interval_covers_the_spread_of_a_mean() -> None:
    # per-campaign GAUC values vary; the 95% interval of their mean is about mean +- 1.96 sd / sqrt(n)
    f = frame(n_campaigns=400, rows=40, seed=3, shift=0.5)
    result = intervals.bootstrap([{"A": f}], focus="A", replicates=2000, seed=1)
    auc = metrics.per_campaign_auc(f).to_numpy()[0::2]  # cold campaigns: even ids
    half = 1.96 * auc.std() / np.sqrt(len(auc))
    estimate, low, high = result["A"][("cold", "gauc")]
    assert estimate == pytest.approx(auc.mean())
    assert high - low == pytest.approx(2 * half, rel=0.15)


def test_runs_average_and_must_score_the_same_campaigns() -> None:
    a, b = frame(seed=1, shift=1.0), frame(seed=2, shift=1.0)
    both = intervals.bootstrap([{"A": a}, {"A": b}], focus="A", replicates=20)
    one = [intervals.bootstrap([{"A": x}], focus="A", replicates=20)["A"][("hot", "gauc")][0] for x in (a, b)]
    assert both["A"][("hot", "gauc")][0] == pytest.approx(np.mean(one))
    with pytest.raises(ValueError, match="different campaigns"):
        intervals.bootstrap([{"A": a, "B": a[a["campaign"] != 3]}], focus="A", replicates=5)
