"""Metrics against values computed by hand and against brute-force pair counts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from metaheac.evaluation import metrics


def scored(rows: list[tuple[int, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["campaign", "split", "label", "score"])


def brute_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """O(n^2): share of (positive, negative) pairs ordered correctly, a tie counting half."""
    diff = scores[labels == 1][:, None] - scores[labels == 0][None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


# ---------------------------------------------------------------------------------------------------------
# roc_auc and roc_curve


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
        ([0, 1, 0, 1], [0.1, 0.9, 0.5, 0.5], 0.875),  # one tied pair counts half: 3.5 / 4
        ([0, 1, 1, 0, 1], [0.3] * 5, 0.5),
        ([0, 0, 1, 1], [1, 2, 3, 4], 1.0),
        ([0, 0, 1, 1], [4, 3, 2, 1], 0.0),
    ],
)
def test_roc_auc_by_hand(labels: list[int], scores: list[float], expected: float) -> None:
    assert metrics.roc_auc(np.array(labels), np.array(scores)) == pytest.approx(expected)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], []])
def test_roc_auc_is_nan_without_both_classes(labels: list[int]) -> None:
    assert math.isnan(metrics.roc_auc(np.array(labels), np.arange(len(labels), dtype=float)))


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_matches_pair_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 400)
    scores = rng.integers(0, 15, 400) / 7.0  # few distinct values: many ties
    assert metrics.roc_auc(labels, scores) == pytest.approx(brute_auc(labels, scores), abs=1e-12)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [([0, 2], [0.1, 0.2], "0 or 1"), ([0, 1], [0.1, np.nan], "finite"), ([0, 1], [0.1], "length")],
)
def test_roc_auc_rejects_bad_input(labels: list[int], scores: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.roc_auc(np.array(labels), np.array(scores))


def test_roc_points_by_hand() -> None:
    fpr, tpr, thresholds = metrics.roc_points(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.5, 0.5]))
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    assert thresholds[0] > 0.9 and np.isfinite(thresholds[0])  # the origin: nothing predicted positive
    np.testing.assert_allclose(thresholds[1:], [0.9, 0.5, 0.1])


def test_roc_curve_area_is_auc_and_thinning_keeps_ends() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 3000)
    scores = rng.normal(size=3000) + labels
    fpr, tpr = metrics.roc_curve(labels, scores)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(metrics.roc_auc(labels, scores))
    thin_fpr, thin_tpr = metrics.roc_curve(labels, scores, max_points=50)
    assert len(thin_fpr) <= 50
    assert (thin_fpr[0], thin_tpr[0], thin_fpr[-1], thin_tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(thin_fpr) >= 0)


# ---------------------------------------------------------------------------------------------------------
# Per-campaign AUC and GAUC


def test_per_campaign_auc_and_gauc_skip_one_class_campaigns() -> None:
    frame = scored(
        [(7, "test_cold", 1, 0.9), (7, "test_cold", 0, 0.8), (7, "test_cold", 1, 0.3), (7, "test_cold", 0, 0.1)]
        + [(3, "test_cold", 0, 0.5), (3, "test_cold", 0, 0.7)]  # negatives only: no AUC
        + [(5, "test_cold", 1, 0.2), (5, "test_cold", 0, 0.6)]
    )
    auc = metrics.per_campaign_auc(frame)
    assert list(auc.index) == [3, 5, 7]
    assert math.isnan(auc[3]) and auc[5] == 0.0 and auc[7] == pytest.approx(0.75)
    assert metrics.summarize(frame)["cold"]["gauc"] == pytest.approx((0.0 + 0.75) / 2)


def test_per_campaign_auc_matches_pair_count() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {"campaign": rng.integers(0, 6, 600), "label": rng.integers(0, 2, 600), "split": "test_hot"}
    ).assign(score=rng.integers(0, 8, 600).astype(float))
    auc = metrics.per_campaign_auc(frame)
    for campaign, rows in frame.groupby("campaign"):
        assert auc[campaign] == pytest.approx(brute_auc(rows["label"].to_numpy(), rows["score"].to_numpy()))


# ---------------------------------------------------------------------------------------------------------
# P@k and R@k


def twenty_rows() -> pd.DataFrame:
    """One campaign of 20 distinct scores 20..1; positives at ranks 1, 3 and 4."""
    labels = [1 if rank in (1, 3, 4) else 0 for rank in range(1, 21)]
    return scored([(1, "test_cold", y, float(21 - rank)) for rank, y in enumerate(labels, start=1)])


@pytest.mark.parametrize(
    ("fraction", "k", "precision", "recall"),
    [
        (0.01, 1, 1.0, 1 / 3),  # ceil(0.2) = 1
        (0.05, 1, 1.0, 1 / 3),  # exactly 1
        (0.07, 2, 0.5, 1 / 3),  # ceil(1.4) = 2
        (0.12, 3, 2 / 3, 2 / 3),  # ceil(2.4) = 3
        (0.2, 4, 3 / 4, 1.0),
        (1.0, 20, 3 / 20, 1.0),
    ],
)
def test_precision_recall_on_twenty_rows(fraction: float, k: int, precision: float, recall: float) -> None:
    frame = twenty_rows()
    hits = metrics.top_fraction_hits(frame, [fraction])
    assert hits["k"].tolist() == [k]
    pr = metrics.precision_recall_at(frame, fraction)
    assert pr.loc[1, "precision"] == pytest.approx(precision)
    assert pr.loc[1, "recall"] == pytest.approx(recall)


def test_k_is_not_inflated_by_float_rounding() -> None:
    frame = scored([(1, "test_hot", i % 2, float(i)) for i in range(100)])
    hits = metrics.top_fraction_hits(frame, [0.07, 0.55])  # 0.07 * 100 = 7.000000000000001
    assert hits["k"].tolist() == [7, 55]


def test_ties_at_the_cut_count_by_expectation() -> None:
    # Top row positive, then 4 tied rows holding 2 positives, then 15 negatives; k = 2 takes one tied row.
    rows = [(1, "test_cold", 1, 9.0)] + [(1, "test_cold", y, 5.0) for y in (0, 1, 1, 0)]
    frame = scored(rows + [(1, "test_cold", 0, -float(s)) for s in range(15)])
    hits = metrics.top_fraction_hits(frame, [0.1])
    assert hits["hits"].item() == pytest.approx(1.5)


def test_all_equal_scores_give_base_rate_precision() -> None:
    frame = scored([(1, "test_hot", int(i < 5), 0.5) for i in range(20)])
    pr = metrics.precision_recall_at(frame, 0.5)
    assert pr.loc[1, "precision"] == pytest.approx(0.25)
    assert pr.loc[1, "recall"] == pytest.approx(0.5)


def test_campaigns_without_positives_are_left_out_of_means() -> None:
    frame = pd.concat([twenty_rows(), scored([(2, "test_cold", 0, float(s)) for s in range(20)])])
    pr = metrics.precision_recall_at(frame, 0.05)
    assert pr.loc[2].isna().all()
    assert metrics.summarize(frame)["cold"]["p@5%"] == pytest.approx(1.0)
    curve = metrics.precision_recall_curve(frame, [0.05, 0.2])
    np.testing.assert_allclose(curve["precision"], [1.0, 0.75])
    np.testing.assert_allclose(curve["recall"], [1 / 3, 1.0])


def test_top_fraction_mask_takes_k_rows_per_campaign_ties_to_earlier_rows() -> None:
    frame = scored([(1, "test_cold", 0, 0.5)] * 10 + [(2, "test_hot", 0, s) for s in (0.1, 0.9, 0.3)])
    mask = metrics.top_fraction_mask(frame, 0.2)
    assert mask.tolist() == [True, True] + [False] * 8 + [False, True, False]


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_bad_fractions_are_rejected(fraction: float) -> None:
    with pytest.raises(ValueError, match="fractions"):
        metrics.top_fraction_hits(twenty_rows(), [fraction])


# ---------------------------------------------------------------------------------------------------------
# summarize, compare, format_table


def two_campaigns() -> pd.DataFrame:
    return scored(
        [(1, "test_cold", y, s) for y, s in zip([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1], strict=True)]
        + [(2, "test_hot", y, s) for y, s in zip([0, 1, 0, 0, 1], [0.6, 0.7, 0.2, 0.4, 0.5], strict=True)]
    )


def test_summarize_two_campaigns_by_hand() -> None:
    summary = metrics.summarize(two_campaigns(), top_fraction=0.5)
    # cold: pos {.9, .3} vs neg {.8, .1}: 3 of 4 pairs; k = 2 takes .9 (pos) and .8 (neg).
    assert summary["cold"] == pytest.approx(
        {"auc": 0.75, "gauc": 0.75, "p@50%": 0.5, "r@50%": 0.5, "campaigns": 1, "rows": 4}
    )
    # hot: pos {.7, .5} vs neg {.6, .2, .4}: 5 of 6 pairs; k = ceil(2.5) = 3 takes .7, .6, .5.
    assert summary["hot"] == pytest.approx(
        {"auc": 5 / 6, "gauc": 5 / 6, "p@50%": 2 / 3, "r@50%": 1.0, "campaigns": 1, "rows": 5}
    )
    # all rows pooled: .9 beats 5 negatives, .7 beats 4, .5 beats 3, .3 beats 2: 14 of 20 pairs.
    assert summary["all"] == pytest.approx(
        {"auc": 0.7, "gauc": (0.75 + 5 / 6) / 2, "p@50%": (0.5 + 2 / 3) / 2, "r@50%": 0.75, "campaigns": 2, "rows": 9}
    )
    at_5 = metrics.summarize(two_campaigns())  # k = 1 in both campaigns: the top row is positive
    assert (at_5["cold"]["p@5%"], at_5["cold"]["r@5%"], at_5["hot"]["r@5%"]) == (1.0, 0.5, 0.5)


def test_summarize_reports_an_empty_group_as_nan() -> None:
    summary = metrics.summarize(twenty_rows())
    assert summary["hot"]["campaigns"] == 0 and summary["hot"]["rows"] == 0
    assert all(math.isnan(summary["hot"][key]) for key in metrics.metric_keys())
    assert summary["all"]["auc"] == summary["cold"]["auc"]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"campaign": [1], "label": [1], "score": [0.5]}), "lack columns"),
        (scored([(1, "train", 1, 0.5)]), "unknown split"),
        (scored([(1, "test_cold", 1, 0.5), (1, "test_hot", 0, 0.2)]), "both splits"),
    ],
)
def test_summarize_rejects_malformed_frames(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.summarize(frame)


def group(auc: float, p: float) -> dict[str, float | int]:
    return {"auc": auc, "gauc": auc, "p@5%": p, "r@5%": p / 2, "campaigns": 1, "rows": 10}


def test_compare_keeps_method_order() -> None:
    results = {"MetaHeac": two_campaigns(), "LR": two_campaigns()}
    assert list(metrics.compare(results)) == ["MetaHeac", "LR"]


def test_format_table_marks_best_and_improvement() -> None:
    summary = {
        "LR": {"cold": group(0.6, 0.2), "hot": group(0.7, 0.3), "all": group(0.65, 0.25)},
        "MMoE": {"cold": group(0.5, 0.25), "hot": group(math.nan, 0.2), "all": group(0.6, 0.2)},
        metrics.FOCUS_METHOD: {"cold": group(0.66, 0.2), "hot": group(0.63, 0.33), "all": group(0.65, 0.3)},
    }
    lines = metrics.format_table(summary).splitlines()
    assert "S<=T (cold)" in lines[0] and "S>T (hot)" in lines[0]
    assert lines[1].split() == ["Method"] + ["AUC", "GAUC", "P@5%", "R@5%"] * 2
    assert lines[2].split() == ["LR", "0.6000", "0.6000", "0.2000", "0.1000", "0.7000*", "0.7000*", "0.3000", "0.1500"]
    assert lines[3].split()[5] == "-"  # MMoE's NaN hot AUC
    assert lines[3].split()[3] == "0.2500*"
    assert lines[4].split()[1] == "0.6600*"
    assert lines[5].split() == [
        "Improve",
        "+10.0%",
        "+10.0%",
        "-20.0%",
        "-20.0%",
        "-10.0%",
        "-10.0%",
        "+10.0%",
        "+10.0%",
    ]


def test_format_table_with_intervals_prints_them_under_each_method_and_improve() -> None:
    summary = {
        "LR": {"cold": group(0.6, 0.2), "hot": group(0.7, 0.3), "all": group(0.65, 0.25)},
        metrics.FOCUS_METHOD: {"cold": group(0.66, 0.2), "hot": group(0.63, 0.33), "all": group(0.65, 0.3)},
    }
    columns = metrics.table_columns(summary)
    ci = {m: {c: (0.5, 0.25, 0.75) for c in columns} for m in summary}
    ci["gap"] = {c: (0.01, -0.02, 0.04) for c in columns}
    lines = metrics.format_table(summary, intervals=ci).splitlines()
    assert lines[3].split() == ["[0.250,0.750]"] * 8
    assert lines[-2].split()[0] == "Improve"
    assert lines[-1].split() == ["diff", "95%", "CI"] + ["[-0.020,+0.040]"] * 8  # not a % like the line above


def test_format_table_without_the_recommended_method_has_no_improve_line() -> None:
    summary = {"LR": {"cold": group(0.6, 0.2), "hot": group(0.7, 0.3), "all": group(0.65, 0.25)}}
    table = metrics.format_table(summary)
    assert "Improve" not in table and "*" not in table  # a lone method is not marked best
    assert metrics.improvement({metrics.FOCUS_METHOD: summary["LR"]}) is None
