"""The advertiser's request both expansion steps take (`expand` for one campaign, `expand_shard` for a
seed-set folder): reach tiers, exclusion lists and a seed minimum, as the same arguments parsed by the same
code (`tiers.parse_tiers`, `seed_sets.read_uids`, `expand.SeedMinimum`, applied by `expand.plan_seeds`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from metaheac.data.errors import InputError
from metaheac.online.seed_sets import read_uids
from metaheac.online.tiers import Tier, TierError, parse_tiers
from metaheac.steps.base import arg

DEFAULT_MIN_SEEDS = 100  # Meta's and Google's minimum, the most lenient of the platforms'


def tiers_arg(more: str = "") -> Any:
    return arg("", help="reach tiers, increasing: shares of the users (1%,5%,10%) or sizes (500,2000); the largest "
                        f"is the audience (instead of --top-n), each user gets its smallest tier{more}")


def exclude_arg() -> Any:
    return arg("", help="comma-separated uid files (local or gs://; .txt, or .parquet with a uid column, or "
                        "FILE.parquet#COLUMN) kept out of the audience before ranking, e.g. opt-outs")


def min_seeds_arg() -> Any:
    return arg(DEFAULT_MIN_SEEDS, help="fewest known, distinct seed users a campaign is expanded from", minimum=1)


def allow_small_seeds_arg() -> Any:
    return arg(False, help="expand a campaign below --min-seeds anyway, flagged low-confidence in its summary")


def request_tiers(text: str, users: int, where: str = "--tiers") -> list[Tier]:
    """The tiers asked, over `users`; InputError in one line naming `where`."""
    try:
        return parse_tiers(text, users, where)
    except TierError as error:
        raise InputError(str(error)) from None


def exclusion_lists(text: str, kind: str) -> dict[str, np.ndarray]:
    """{"KIND:URI": uids} of each comma-separated list (its reason in the summary's `excluded`)."""
    return {f"{kind}:{uri}": read_uids(uri) for uri in filter(None, text.split(","))}

