"""examples/movielens/make_tables.py: no label leaks into a user feature, the campaigns and their events."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

MOVIELENS = Path(__file__).resolve().parents[2] / "shared/data/movielens-100k"
SCRIPT = Path(__file__).resolve().parents[1] / "examples/movielens/make_tables.py"


def make_tables():
    spec = importlib.util.spec_from_file_location("make_tables", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_tables


@pytest.mark.skipif(not MOVIELENS.exists(), reason=f"no MovieLens-100k at {MOVIELENS} (research use only)")
def test_users_are_known_by_other_movies_and_campaigns_by_raters_against_non_raters(tmp_path) -> None:
    counts = make_tables()(MOVIELENS, tmp_path / "a", seed=3, count=40)
    users, campaigns, events = (pd.read_parquet(tmp_path / "a" / f"{n}.parquet") for n in ("users", "campaigns",
                                                                                           "events"))
    assert counts == {"users": 943, "campaigns": 40, "events": len(events)}
    movies = set(campaigns.campaign)
    for column in ("liked", "watched"):  # no campaign movie in any behaviour list
        assert not movies & {m for ids in users[column] for m in ids}
    ratings = pd.read_csv(MOVIELENS / "u.data", sep="\t", names=["uid", "movie", "rating", "time"])
    raters = ratings[ratings.movie.isin(movies)].groupby("movie").uid.agg(set)
    for movie, mine in events.groupby("campaign"):
        positives, negatives = set(mine.uid[mine.label == 1]), set(mine.uid[mine.label == 0])
        assert positives == raters[movie] and len(positives) >= 50
        assert not positives & negatives and len(negatives) == len(positives)  # one non-rater per rater
    watched = ratings[~ratings.movie.isin(movies)].groupby("uid").movie.agg(list)
    first = users.set_index("uid").watched
    assert all(sorted(first[u]) == sorted(watched.get(u, [])) for u in first.index[:50])
    make_tables()(MOVIELENS, tmp_path / "b", seed=3, count=40)  # seeded: the same tables
    assert pd.read_parquet(tmp_path / "b/events.parquet").equals(events)
    assert np.array_equal(pd.read_parquet(tmp_path / "b/campaigns.parquet").campaign, campaigns.campaign)
