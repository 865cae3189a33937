"""95% intervals of the paper's metrics by a bootstrap over campaigns, and a paired bootstrap of the gap
between two methods scored on the same campaigns.

A replicate draws the campaigns of each group (cold, hot) with replacement, keeping them paired across
methods. GAUC and P/R@k are means of per-campaign values; the pooled AUC of a replicate is exact too:
with W[c, d] the correctly ordered (positive of c, negative of d) pairs (a tie counts half), a replicate
with campaign multiplicities m has AUC = m W m / ((m . P)(m . N)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metaheac.evaluation.metrics import TABLE_GROUPS, metric_keys, per_campaign_auc, precision_recall_at

LEVEL = 0.95
REPLICATES = 1000


@dataclass(frozen=True)
class CampaignScores:
    """One method's per-campaign pieces, campaigns sorted: everything a replicate needs."""

    campaigns: np.ndarray
    hot: np.ndarray  # bool per campaign
    values: dict[str, np.ndarray]  # per-campaign gauc / p@ / r@ (NaN where undefined)
    pairs: np.ndarray  # W [C, C]: correctly ordered (positive of c, negative of d) pairs
    positives: np.ndarray
    negatives: np.ndarray


def pair_counts(campaign: np.ndarray, label: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """W[c, d] = pairs (positive of c, negative of d) with the positive scored higher, ties half."""
    order = np.argsort(score, kind="stable")
    c, y, s = campaign[order], label[order], score[order]
    neg = np.zeros((len(c) + 1, n))
    np.add.at(neg, (np.arange(1, len(c) + 1), c), 1 - y)
    below = np.cumsum(neg, axis=0)  # below[i, d]: negatives of d among the i lowest scores
    first = np.searchsorted(s, s, side="left")  # start of each row's tie block
    last = np.searchsorted(s, s, side="right")
    pos = np.flatnonzero(y == 1)
    counts = (below[first[pos]] + below[last[pos]]) / 2  # strictly below, plus half the tied
    w = np.zeros((n, n))
    np.add.at(w, c[pos], counts)
    return w


def campaign_scores(frame: pd.DataFrame, top_fraction: float = 0.05) -> CampaignScores:
    """The per-campaign pieces of a scored frame (metrics.py's columns)."""
    keys = metric_keys(top_fraction)
    auc = per_campaign_auc(frame)
    pr = precision_recall_at(frame, top_fraction).reindex(auc.index)
    campaigns = auc.index.to_numpy()
    code = np.searchsorted(campaigns, frame["campaign"].to_numpy())
    label = frame["label"].to_numpy(dtype=np.float64)
    hot = np.zeros(len(campaigns), dtype=bool)
    hot[code[(frame["split"] == "test_hot").to_numpy()]] = True
    positives = np.bincount(code, label, len(campaigns))
    return CampaignScores(
        campaigns=campaigns,
        hot=hot,
        values={keys[1]: auc.to_numpy(), keys[2]: pr["precision"].to_numpy(), keys[3]: pr["recall"].to_numpy()},
        pairs=pair_counts(code, label, frame["score"].to_numpy(dtype=np.float64), len(campaigns)),
        positives=positives,
        negatives=np.bincount(code, minlength=len(campaigns)) - positives,
    )


def _draws(n: int, replicates: int, seed: int) -> np.ndarray:
    """Multiplicities [replicates + 1, n]; row 0 is the data itself (every campaign once)."""
    rng = np.random.default_rng(seed)
    counts = np.ones((replicates + 1, n))
    if n:
        counts[1:] = np.apply_along_axis(np.bincount, 1, rng.integers(0, n, (replicates, n)), minlength=n)
    return counts


def _replicates(s: CampaignScores, member: np.ndarray, m: np.ndarray, keys: list[str]) -> dict[str, np.ndarray]:
    """Each metric of the group `member` under every row of multiplicities `m` [R, |member|]."""
    out = {}
    w = s.pairs[np.ix_(member, member)]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[keys[0]] = np.einsum("rc,cd,rd->r", m, w, m) / ((m @ s.positives[member]) * (m @ s.negatives[member]))
        for key in keys[1:]:
            v = s.values[key][member]
            ok = ~np.isnan(v)
            out[key] = (m[:, ok] @ v[ok]) / m[:, ok].sum(1)
    return out


def _members(s: CampaignScores) -> dict[str, np.ndarray]:
    return {"cold": np.flatnonzero(~s.hot), "hot": np.flatnonzero(s.hot)}


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """(estimate, low, high): row 0 is the estimate, the rest give the percentile interval."""
    tail = (1 - LEVEL) / 2 * 100
    drawn = values[1:][~np.isnan(values[1:])]
    low, high = np.percentile(drawn, [tail, 100 - tail]) if len(drawn) else (np.nan, np.nan)
    return float(values[0]), float(low), float(high)


def table_intervals(results: dict[str, pd.DataFrame], focus: str) -> dict | None:
    """`bootstrap` of one run for the table and the report; None when the methods scored different
    campaigns (nothing to pair)."""
    campaigns = {tuple(np.unique(frame["campaign"])) for frame in results.values()}
    return bootstrap([results], focus) if len(campaigns) == 1 else None


def bootstrap(
    runs: list[dict[str, pd.DataFrame]],
    focus: str,
    top_fraction: float = 0.05,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> dict[str, dict[tuple[str, str], tuple[float, float, float]]]:
    """Intervals over one or more runs (e.g. data seeds), each {method: scored frame} on the same campaigns.

    A metric is the mean over runs of its value in each run; each run's campaigns are drawn on their own,
    paired across methods. Returns {method: {(group, metric): (estimate, low, high)}} for every method,
    plus "gap" {(group, metric): ...} of `focus` minus the best other method of that column (by estimate).
    """
    keys = metric_keys(top_fraction)
    scores = [{m: campaign_scores(f, top_fraction) for m, f in run.items()} for run in runs]
    methods = list(runs[0])
    columns = [(g, k) for g in TABLE_GROUPS for k in keys]
    per_method: dict[str, dict[tuple[str, str], np.ndarray]] = {m: {} for m in methods}
    for group in TABLE_GROUPS:
        values: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in methods}
        for i, run in enumerate(scores):
            first = run[methods[0]]
            member = _members(first)[group]
            for m in methods:
                if not np.array_equal(run[m].campaigns, first.campaigns):
                    raise ValueError(f"run {i}: {m} and {methods[0]} were scored on different campaigns")
            draws = _draws(len(member), replicates, seed + 7919 * i + (group == "hot"))
            for m in methods:
                values[m].append(_replicates(run[m], member, draws, keys))
        for m in methods:
            for key in keys:
                per_method[m][(group, key)] = np.mean([v[key] for v in values[m]], axis=0)
    result: dict[str, dict[tuple[str, str], tuple[float, float, float]]] = {
        m: {c: _interval(per_method[m][c]) for c in columns} for m in methods
    }
    others = [m for m in methods if m != focus]
    if focus in per_method and others:
        gap = {}
        for c in columns:
            best = max(others, key=lambda m: np.nan_to_num(per_method[m][c][0], nan=-np.inf))
            gap[c] = _interval(per_method[focus][c] - per_method[best][c])
        result["gap"] = gap
    return result
