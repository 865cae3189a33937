"""Offline metrics of the paper's protocol: AUC, GAUC, P@k% and R@k% for cold and hot campaigns.

Input everywhere is a frame of scored rows, one row per (campaign, user) of a test campaign's stage 2:
`campaign` (int), `split` ("test_cold" | "test_hot"), `label` (0/1), `score` (float, higher = more
likely positive).

Conventions:
- AUC is the Mann-Whitney statistic with average ranks for tied scores (a tie counts half a correctly
  ordered pair); it is NaN when the rows hold only one class.
- GAUC is the unweighted mean of per-campaign AUCs over the campaigns whose rows hold both classes.
- P@f and R@f (f = 5% in the paper): per campaign with n rows, k = max(1, ceil(f * n)) rows of highest
  score are selected; P = positives among them / k, R = positives among them / positives of the campaign.
  Scores tied across the cut-off count by expectation under a random order of the tie (all-equal scores
  give P = base rate). Both are averaged over the campaigns with at least one positive.
- Groups: "cold" is split test_cold (S <= T in the paper), "hot" is test_hot (S > T), "all" is both.

Everything is vectorized numpy over sorted arrays (one sort per call), so 10M rows take seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metaheac.method_names import RECOMMENDED

COLUMNS = ("campaign", "split", "label", "score")
SPLITS = ("test_cold", "test_hot")
TABLE_GROUPS = {"cold": "S<=T (cold)", "hot": "S>T (hot)"}
COUNT_KEYS = ("campaigns", "rows")
DEFAULT_FRACTIONS = tuple(round(0.01 * i, 2) for i in range(1, 51))
FOCUS_METHOD = RECOMMENDED  # the table's "Improve" line compares it with the best other


# ---------------------------------------------------------------------------------------------------------
# Sorting core: one sort by score, then an O(n) regrouping per partition (campaigns, splits, all rows)


def _group_order(codes: np.ndarray, score_order: np.ndarray) -> np.ndarray:
    """Row order sorted by (code, score), given the rows' order by score alone."""
    grouped = codes[score_order]
    if len(grouped) and grouped.max() < 2**16:
        grouped = grouped.astype(np.uint16)  # numpy radix-sorts 16-bit ints stably, in linear time
    return score_order[np.argsort(grouped, kind="stable")]


@dataclass(frozen=True)
class _Ranked:
    """Rows sorted by (group, ascending score), with tie blocks and group blocks as index ranges.

    `tie_starts`/`tie_ends` bound each block of equal score inside one group; `tie_id` maps a sorted row
    to its block. `group_start`/`group_size` bound each group (a group may be empty).
    """

    codes: np.ndarray
    labels: np.ndarray
    tie_id: np.ndarray
    tie_starts: np.ndarray
    tie_ends: np.ndarray
    group_start: np.ndarray
    group_size: np.ndarray


def _rank(codes: np.ndarray, labels: np.ndarray, scores: np.ndarray, score_order: np.ndarray, n_groups: int) -> _Ranked:
    order = _group_order(codes, score_order)
    c, s = codes[order], scores[order]
    new_tie = np.ones(len(c), dtype=bool)
    new_tie[1:] = (c[1:] != c[:-1]) | (s[1:] != s[:-1])
    tie_starts = np.flatnonzero(new_tie)
    group_size = np.bincount(codes, minlength=n_groups)
    return _Ranked(
        codes=c,
        labels=labels[order],
        tie_id=np.cumsum(new_tie) - 1,
        tie_starts=tie_starts,
        tie_ends=np.append(tie_starts[1:], len(c)),
        group_start=np.concatenate(([0], np.cumsum(group_size)[:-1])),
        group_size=group_size,
    )


def _positives(r: _Ranked) -> np.ndarray:
    return np.bincount(r.codes, weights=r.labels, minlength=len(r.group_size))


def _grouped_auc(r: _Ranked) -> np.ndarray:
    """AUC per group; NaN for a group with one class (or none)."""
    # 1-based average rank inside the group: tie blocks never cross groups.
    mid = (r.tie_starts + r.tie_ends - 1) / 2.0
    ranks = mid[r.tie_id] - r.group_start[r.codes] + 1
    rank_sum = np.bincount(r.codes, weights=ranks * r.labels, minlength=len(r.group_size))
    n_pos = _positives(r)
    pairs = n_pos * (r.group_size - n_pos)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / pairs
    return np.where(pairs > 0, auc, np.nan)


def _top_k(fractions: Sequence[float], sizes: np.ndarray) -> np.ndarray:
    """k = max(1, ceil(f * n)) per (group, fraction); rounding first keeps 0.07 * 100 at 7, not 8."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) == 0 or np.any((f <= 0) | (f > 1)):
        raise ValueError(f"fractions must be in (0, 1], got {fractions!r}")
    return np.maximum(1, np.ceil(np.round(np.outer(sizes, f), 9))).astype(np.int64)


def _expected_hits(r: _Ranked, k: np.ndarray) -> np.ndarray:
    """Positives among each (non-empty) group's k highest scores, a tie at the cut by expectation."""
    cum = np.concatenate(([0.0], np.cumsum(r.labels)))
    end = (r.group_start + r.group_size)[:, None]
    cut = r.tie_id[end - k]  # tie block of the lowest selected row (rows ascend by score)
    a, b = r.tie_starts[cut], r.tie_ends[cut]
    return cum[end] - cum[b] + (b - (end - k)) * (cum[b] - cum[a]) / (b - a)


# ---------------------------------------------------------------------------------------------------------
# Arrays


def _arrays(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {len(y)} vs {len(s)}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (a model produced NaN or inf)")
    return y, s


def _pooled_auc(y: np.ndarray, s: np.ndarray, score_order: np.ndarray) -> float:
    return float(_grouped_auc(_rank(np.zeros(len(y), np.int64), y, s, score_order, 1))[0])


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, average ranks for ties); NaN when a class is missing."""
    y, s = _arrays(labels, scores)
    return _pooled_auc(y, s, np.argsort(s))


def roc_points(
    labels: np.ndarray, scores: np.ndarray, max_points: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of the ROC curve, one point per distinct score plus the origin.

    A row is predicted positive when score >= threshold; the origin's threshold lies just above the top
    score, so every threshold is finite (JSON/KFP-safe). `max_points` thins the curve evenly for plots
    and logging, always keeping both ends. Rates are NaN when a class is missing.
    """
    y, s = _arrays(labels, scores)
    order = np.argsort(-s)
    s, y = s[order], y[order]
    last_of_tie = np.flatnonzero(np.append(s[1:] != s[:-1], len(s) > 0))
    tp = np.concatenate(([0.0], np.cumsum(y)[last_of_tie]))
    fp = np.concatenate(([0.0], (last_of_tie + 1) - tp[1:]))
    top = np.nextafter(s[0], np.inf) if len(s) else 1.0
    thresholds = np.concatenate(([top], s[last_of_tie]))
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr, tpr = fp / fp[-1], tp / tp[-1]
    if max_points is not None and len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max(2, max_points)).round().astype(np.int64))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return fpr, tpr, thresholds


def roc_curve(labels: np.ndarray, scores: np.ndarray, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve for plotting; see `roc_points` for thresholds and thinning."""
    fpr, tpr, _ = roc_points(labels, scores, max_points)
    return fpr, tpr


# ---------------------------------------------------------------------------------------------------------
# Scored frames


@dataclass(frozen=True)
class _Rows:
    """A scored frame as arrays: dense campaign codes (indexing `campaigns`), split code per row."""

    codes: np.ndarray
    campaigns: pd.Index
    hot: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


def check_frame(frame: pd.DataFrame) -> None:
    """Raise ValueError unless `frame` has the scored-rows columns and known split values."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"scored rows lack columns {missing}; expected {list(COLUMNS)}")
    unknown = set(pd.unique(frame["split"])) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split values {sorted(map(str, unknown))}; expected {SPLITS}")


def _rows(frame: pd.DataFrame) -> _Rows:
    check_frame(frame)
    codes, ids = pd.factorize(frame["campaign"], sort=True)
    y, s = _arrays(frame["label"].to_numpy(), frame["score"].to_numpy())
    hot = (frame["split"] == "test_hot").to_numpy(dtype=np.int64)
    return _Rows(codes.astype(np.int64), pd.Index(ids, name="campaign"), hot, y, s)


def _by_campaign(rows: _Rows, score_order: np.ndarray | None = None) -> _Ranked:
    order = np.argsort(rows.scores) if score_order is None else score_order
    return _rank(rows.codes, rows.labels, rows.scores, order, len(rows.campaigns))


def per_campaign_auc(frame: pd.DataFrame) -> pd.Series:
    """AUC of each campaign's rows, indexed by campaign; NaN for a campaign with one class."""
    rows = _rows(frame)
    return pd.Series(_grouped_auc(_by_campaign(rows)), index=rows.campaigns, name="auc", dtype=np.float64)


def _hits_frame(rows: _Rows, r: _Ranked, fractions: Sequence[float]) -> pd.DataFrame:
    k = _top_k(fractions, r.group_size)
    n_f = k.shape[1]
    return pd.DataFrame(
        {
            "campaign": np.repeat(rows.campaigns.to_numpy(), n_f),
            "fraction": np.tile(np.asarray(fractions, dtype=np.float64), len(rows.campaigns)),
            "rows": np.repeat(r.group_size, n_f),
            "positives": np.repeat(_positives(r), n_f),
            "k": k.ravel(),
            "hits": _expected_hits(r, k).ravel() if len(r.labels) else np.zeros(0),
        }
    )


def top_fraction_hits(frame: pd.DataFrame, fractions: Sequence[float]) -> pd.DataFrame:
    """Per campaign and fraction f: rows, positives, k = max(1, ceil(f * rows)) and positives in the top k.

    Long format, one row per (campaign, fraction). `hits` is fractional when scores tie across the cut:
    the tied rows contribute their expected positives under a random order.
    """
    rows = _rows(frame)
    return _hits_frame(rows, _by_campaign(rows), fractions)


def _precision_recall(hits: pd.DataFrame) -> pd.DataFrame:
    with_pos = hits["positives"] > 0
    return hits.assign(
        precision=(hits["hits"] / hits["k"]).where(with_pos),
        recall=(hits["hits"] / hits["positives"]).where(with_pos),
    )


def precision_recall_at(frame: pd.DataFrame, fraction: float = 0.05) -> pd.DataFrame:
    """Per-campaign P@fraction and R@fraction, indexed by campaign.

    Both are NaN for a campaign without positives, so that a plain `.mean()` averages over the campaigns
    with at least one positive, as the protocol asks.
    """
    pr = _precision_recall(top_fraction_hits(frame, [fraction]))
    return pr.set_index("campaign")[["precision", "recall"]]


def precision_recall_curve(frame: pd.DataFrame, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> pd.DataFrame:
    """Mean P@f and R@f over campaigns with a positive, indexed by fraction (default 1%..50%)."""
    pr = _precision_recall(top_fraction_hits(frame, fractions))
    curve = pr.groupby("fraction")[["precision", "recall"]].mean()
    return curve.reindex(pd.Index(np.asarray(fractions, dtype=np.float64), name="fraction"))


def top_fraction_mask(frame: pd.DataFrame, fraction: float = 0.05) -> np.ndarray:
    """Boolean per row of `frame`: among its campaign's top k rows by score.

    Unlike the P/R expectation, ties at the cut go to the earlier row, so exactly k rows are chosen.
    """
    rows = _rows(frame)
    order = _group_order(rows.codes, np.argsort(-rows.scores, kind="stable"))
    size = np.bincount(rows.codes, minlength=len(rows.campaigns))
    start = np.concatenate(([0], np.cumsum(size)[:-1]))
    codes = rows.codes[order]
    mask = np.zeros(len(order), dtype=bool)
    mask[order] = np.arange(len(order)) - start[codes] < _top_k([fraction], size)[codes, 0]
    return mask


# ---------------------------------------------------------------------------------------------------------
# Summaries and the paper's table


def fraction_label(fraction: float) -> str:
    """0.05 -> '5%'."""
    return f"{fraction * 100:g}%"


def metric_keys(top_fraction: float = 0.05) -> list[str]:
    """Metric keys of a group summary, in table order."""
    pct = fraction_label(top_fraction)
    return ["auc", "gauc", f"p@{pct}", f"r@{pct}"]


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else math.nan


def _campaign_is_hot(rows: _Rows, size: np.ndarray) -> np.ndarray:
    """Split of each campaign (True = hot); a campaign straddling both splits is a data error."""
    hot_rows = np.bincount(rows.codes, weights=rows.hot, minlength=len(rows.campaigns))
    mixed = (hot_rows > 0) & (hot_rows < size)
    if mixed.any():
        raise ValueError(f"campaigns {list(rows.campaigns[mixed][:5])} have rows in both splits")
    return hot_rows > 0


def summarize(frame: pd.DataFrame, top_fraction: float = 0.05) -> dict[str, dict[str, float | int]]:
    """Metrics per group: {"cold"|"hot"|"all": {"auc", "gauc", "p@5%", "r@5%", "campaigns", "rows"}}.

    AUC pools the group's rows; GAUC and P/R average over campaigns (see the module docstring). A group
    without rows reports NaN metrics and zero counts. Each campaign must belong to one split.
    """
    rows = _rows(frame)
    score_order = np.argsort(rows.scores)  # the one sort shared by every grouping below
    by_campaign = _by_campaign(rows, score_order)
    campaign_auc = _grouped_auc(by_campaign)
    pr = _precision_recall(_hits_frame(rows, by_campaign, [top_fraction]))
    precision, recall = pr["precision"].to_numpy(), pr["recall"].to_numpy()
    is_hot = _campaign_is_hot(rows, by_campaign.group_size)
    split_auc = _grouped_auc(_rank(rows.hot, rows.labels, rows.scores, score_order, 2))
    pooled = {"cold": split_auc[0], "hot": split_auc[1], "all": _pooled_auc(rows.labels, rows.scores, score_order)}
    members = {"cold": ~is_hot, "hot": is_hot, "all": np.ones_like(is_hot)}
    keys = metric_keys(top_fraction)
    return {
        group: {
            keys[0]: float(pooled[group]),
            keys[1]: _nanmean(campaign_auc[member]),
            keys[2]: _nanmean(precision[member]),
            keys[3]: _nanmean(recall[member]),
            "campaigns": int(member.sum()),
            "rows": int(by_campaign.group_size[member].sum()),
        }
        for group, member in members.items()
    }


def compare(
    results: dict[str, pd.DataFrame], top_fraction: float = 0.05
) -> dict[str, dict[str, dict[str, float | int]]]:
    """`summarize` for each method, keeping the methods' order: {method: {group: {metric: value}}}."""
    return {method: summarize(frame, top_fraction) for method, frame in results.items()}


def table_columns(summary: dict[str, dict]) -> list[tuple[str, str]]:
    """(group, metric) columns of the paper's table: cold metrics, then hot."""
    first = next(iter(summary.values()))
    return [(g, key) for g in TABLE_GROUPS for key in first[g] if key not in COUNT_KEYS]


def _value(summary: dict[str, dict], method: str, column: tuple[str, str]) -> float:
    return float(summary[method][column[0]][column[1]])


def best_per_column(summary: dict[str, dict]) -> dict[tuple[str, str], float]:
    """Highest value per table column over methods, ignoring NaN (NaN if no method has a value)."""
    best = {}
    for column in table_columns(summary):
        values = np.array([_value(summary, m, column) for m in summary])
        best[column] = float(np.nanmax(values)) if np.any(~np.isnan(values)) else math.nan
    return best


def improvement(summary: dict[str, dict], method: str = FOCUS_METHOD) -> dict[tuple[str, str], float] | None:
    """Relative gain in % of `method` over the best other method, per table column.

    None when `method` is absent or is the only method (the paper's "Improve" line needs a baseline).
    """
    others = {m: s for m, s in summary.items() if m != method}
    if method not in summary or not others:
        return None
    best_other = best_per_column(others)
    gains = {}
    for column, base in best_other.items():
        gains[column] = (_value(summary, method, column) - base) / base * 100 if base else math.nan
    return gains


def _cell(value: float, best: float, mark: str) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.4f}{mark if value == best else ''}"


Interval = tuple[float, float, float]  # (estimate, low, high)
# under "Improve" (a relative gain in %): the interval is of the absolute difference, recommended - best other
_GAP_LABEL = "  diff 95% CI"


def _interval_cell(interval: Interval | None, signed: bool = False) -> str:
    if interval is None or math.isnan(interval[1]):
        return "-"
    sign = "+" if signed else ""
    return f"[{interval[1]:{sign}.3f},{interval[2]:{sign}.3f}]"


def format_table(
    summary: dict[str, dict], mark: str = "*", intervals: dict[str, dict[tuple[str, str], Interval]] | None = None
) -> str:
    """The paper's table as text: a row per method, AUC GAUC P@ R@ for cold then hot, 4 decimals.

    The best value of each column carries `mark` (when there are two methods or more); an "Improve" line
    gives the recommended method's (`FOCUS_METHOD`) relative gain over the best other method of each
    column when it is present. With `intervals` (`intervals.bootstrap`), each method's line is followed by
    its 95% intervals, and "Improve" by the interval of the absolute difference (recommended - best other),
    labelled so. NaN shows as "-".
    """
    columns = table_columns(summary)
    best = best_per_column(summary) if len(summary) > 1 else {}  # a lone method is no one's best
    width = max(len(m) for m in [*summary, "Improve", "Method", _GAP_LABEL]) + 2
    cell = 16 if intervals else 9
    per_group = len(columns) // len(TABLE_GROUPS)
    lines = [
        " " * width + "".join(f"{title:<{cell * per_group}}" for title in TABLE_GROUPS.values()),
        f"{'Method':<{width}}" + "".join(f"{key.upper():<{cell}}" for _, key in columns),
    ]
    for method in summary:
        cells = [_cell(_value(summary, method, c), best.get(c, math.nan), mark) for c in columns]
        lines.append(f"{method:<{width}}" + "".join(f"{c:<{cell}}" for c in cells))
        if intervals and method in intervals:
            lines.append(" " * width + "".join(f"{_interval_cell(intervals[method].get(c)):<{cell}}" for c in columns))
    gains = improvement(summary)
    if gains is not None:
        cells = ["-" if math.isnan(g) else f"{g:+.1f}%" for g in gains.values()]
        lines.append(f"{'Improve':<{width}}" + "".join(f"{c:<{cell}}" for c in cells))
        if intervals and "gap" in intervals:
            gap = [_interval_cell(intervals["gap"].get(c), True) for c in columns]
            lines.append(f"{_GAP_LABEL:<{width}}" + "".join(f"{c:<{cell}}" for c in gap))
    return "\n".join(line.rstrip() for line in lines)
