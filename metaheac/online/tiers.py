"""Reach tiers of an audience, and what the seeds alone say of them.

A campaign asks for tiers as fractions of the user base ("1%,5%,10%", as Meta's 1-10% of a country) or as
sizes ("500,2000"), strictly increasing. One scoring pass keeps the largest tier's best users; tier k is
then the first size_k of them, so the tiers are nested by construction (Google's NARROW in BALANCED in
BROAD), and each user carries the smallest tier it belongs to.

The quality estimate holds part of the seed set out, expands without it, and counts how many of the held-out
seeds each tier recovers: its recall, with a Wilson 95% interval over the held-out seeds, and its lift
(recall over the share of the candidates the tier takes: 1 is a random pick). Precision is not estimated:
the seeds are a sample of the converters, and how many converters the user base holds is not known.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

_TIER = re.compile(r"(?:(\d+(?:\.\d+)?)%|(\d+))")


class TierError(ValueError):
    """Tiers that cannot be served; the message is one line."""


@dataclass(frozen=True)
class Tier:
    label: str  # as asked: "5%" or "2000"
    size: int  # users


def parse_tiers(text: str | list, users: int, where: str = "--tiers") -> list[Tier]:
    """Tiers from "1%,5%,10%" or "500,2000" (or a list of those items), over a base of `users`; TierError
    naming `where` when a tier is not in (0%, 100%] or 1..users, or the tiers do not increase."""
    items = text if isinstance(text, list) else str(text).split(",")
    tiers: list[Tier] = []
    for item in (str(i).strip() for i in items):
        match = _TIER.fullmatch(item)
        if not match:
            raise TierError(f"{where}: tier {item!r:.40} is neither a percentage of the users (e.g. 5%) nor a size "
                            "(e.g. 2000)")
        if match[1] is not None:
            percent = float(match[1])
            if not 0 < percent <= 100:
                raise TierError(f"{where}: tier {item} is not in (0%, 100%] of the users")
            size = max(1, round(percent / 100 * users))
        else:
            size = int(match[2])
            if not 1 <= size <= users:
                raise TierError(f"{where}: tier {item} is not in 1..{users}, the users of the dataset")
        if tiers and size <= tiers[-1].size:
            raise TierError(f"{where}: tiers must increase: {item} ({size:,} users) after {tiers[-1].label} "
                            f"({tiers[-1].size:,})")
        tiers.append(Tier(item, size))
    if not tiers:
        raise TierError(f"{where}: no tiers given")
    return tiers


def tier_labels(count: int, tiers: list[Tier]) -> np.ndarray:
    """The smallest tier of each of the first `count` ranks (best first)."""
    sizes = np.array([t.size for t in tiers])
    return np.array([t.label for t in tiers], dtype=object)[np.searchsorted(sizes, np.arange(1, count + 1))]


def wilson(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (nan, nan) for no trials."""
    if total == 0:
        return math.nan, math.nan
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # at 0 or all hits a bound is exactly 0 or 1, which the arithmetic misses by a rounding
    return 0.0 if hits == 0 else centre - half, 1.0 if hits == total else centre + half


def recall_estimate(held_out_ranks: np.ndarray, held_out: int, tiers: list[Tier], candidates: int) -> list[dict]:
    """Per tier: held-out seeds recovered (their ranks among the candidates of the model adapted without them;
    a seed beyond the largest tier has none), the recall with its Wilson 95% interval, and the lift."""
    rows = []
    for tier in tiers:
        hits = int((held_out_ranks <= tier.size).sum())
        low, high = wilson(hits, held_out)
        recall = hits / held_out if held_out else math.nan
        rows.append({"tier": tier.label, "size": tier.size, "held_out_recovered": hits, "recall": recall,
                     "recall_low": low, "recall_high": high, "lift": recall / (tier.size / candidates)})
    return rows


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A and B| / |A or B| of two sets of uids."""
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b)) / union if union else math.nan
