"""MovieLens-100k as look-alike campaign tables: users, campaigns and events in Parquet, the three tables
`metaheac preprocess --source tables --spec examples/movielens/spec.yaml` reads (README.md here).

    python examples/movielens/make_tables.py --ratings ../shared/data/movielens-100k \
        --output runs/movielens/tables [--seed 0] [--campaigns 150] [--negatives 1]

A campaign is a movie drawn at random (seeded) among those with enough raters; its positives are the users
who rated it, its negatives as many sampled non-raters per positive. Users are known by their demographics
and by what they did on the other movies only (the feature movies), so no label leaks into a feature.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

GENRES = ("unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Film-Noir "
          "Horror Musical Mystery Romance Sci-Fi Thriller War Western").split()
MIN_RATERS = 50  # a campaign's positives: enough for a seed set and a held-out half
MAX_SHARE = 0.45  # at most this share of users rated it, so its negatives can be drawn from non-raters
LIKED = 4  # a rating at least this is a like


def read(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings = pd.read_csv(folder / "u.data", sep="\t", names=["uid", "movie", "rating", "time"])
    users = pd.read_csv(folder / "u.user", sep="|", names=["uid", "age", "gender", "occupation", "zip"],
                        dtype={"zip": str})
    items = pd.read_csv(folder / "u.item", sep="|", encoding="latin-1", header=None,
                        names=["movie", "title", "release", "video", "url", *GENRES])
    return ratings, users, items


def choose_campaigns(ratings: pd.DataFrame, n_users: int, count: int, rng: np.random.Generator) -> np.ndarray:
    raters = ratings.groupby("movie").size()
    eligible = raters[(raters >= MIN_RATERS) & (raters <= MAX_SHARE * n_users)].index.to_numpy()
    return np.sort(rng.choice(eligible, size=min(count, len(eligible)), replace=False))


def users_table(users: pd.DataFrame, ratings: pd.DataFrame, items: pd.DataFrame) -> pa.Table:
    """Demographics, and the behaviour lists over `ratings` (the feature movies' only), most recent first."""
    genre = items.set_index("movie")[list(GENRES)]
    recent = ratings.sort_values(["uid", "time", "movie"], ascending=[True, False, True])
    watched = recent.groupby("uid")["movie"].agg(list)
    liked = recent[recent.rating >= LIKED].groupby("uid")["movie"].agg(list)
    counts = genre.loc[ratings.movie].to_numpy()  # [ratings, genres] 0/1
    per_user = pd.DataFrame(counts, columns=list(GENRES)).groupby(ratings.uid.to_numpy()).sum()

    def by_frequency(row: pd.Series) -> list[str]:
        kept = row[row > 0]
        return [str(g) for g in kept.index[np.lexsort((np.arange(len(kept)), -kept.to_numpy()))]]

    genres = per_user.apply(by_frequency, axis=1)
    uid = users.uid
    return pa.table({
        "uid": pa.array(uid, pa.int64()),
        "gender": pa.array(users.gender.astype(str)),
        "age": pa.array(users.age, pa.int64()),
        "occupation": pa.array(users.occupation.astype(str)),
        "zip": pa.array(users.zip.str[:2]),
        "liked": pa.array([liked.get(u, []) for u in uid], pa.list_(pa.int64())),
        "watched": pa.array([watched.get(u, []) for u in uid], pa.list_(pa.int64())),
        "genres": pa.array([genres.get(u, []) for u in uid], pa.list_(pa.string())),
    })


def campaigns_table(items: pd.DataFrame, ratings: pd.DataFrame, campaigns: np.ndarray) -> pa.Table:
    movies = items.set_index("movie").loc[campaigns]
    flags = movies[list(GENRES)].to_numpy()
    first_genre = np.array(GENRES)[flags.argmax(1)]  # the first listed genre ("unknown" where none is)
    year = pd.to_datetime(movies.release, format="%d-%b-%Y", errors="coerce").dt.year
    decade = [f"{int(y) // 10 * 10}s" if pd.notna(y) else "unknown" for y in year]
    start = ratings[ratings.movie.isin(campaigns)].groupby("movie")["time"].min().loc[campaigns]
    return pa.table({
        "campaign": pa.array(campaigns, pa.int64()),
        "genre": pa.array(first_genre.astype(str)),
        "decade": pa.array(decade),
        "start": pa.array(start.to_numpy(), pa.int64()),
    })


def events_table(ratings: pd.DataFrame, uids: np.ndarray, campaigns: np.ndarray, negatives: int,
                 rng: np.random.Generator) -> pa.Table:
    """Each campaign's raters (label 1, at their rating's time) and `negatives` sampled non-raters per rater
    (as many as there are, label 0, at a time drawn uniformly in the campaign's span of ratings)."""
    parts = []
    for movie in campaigns:
        mine = ratings[ratings.movie == movie]
        others = np.setdiff1d(uids, mine.uid.to_numpy())
        drawn = rng.choice(others, size=min(negatives * len(mine), len(others)), replace=False)
        times = rng.integers(mine.time.min(), mine.time.max() + 1, size=len(drawn))
        parts.append(pd.DataFrame({"uid": np.concatenate([mine.uid.to_numpy(), np.sort(drawn)]),
                                   "campaign": movie,
                                   "label": np.repeat([1, 0], [len(mine), len(drawn)]),
                                   "time": np.concatenate([mine.time.to_numpy(), times[np.argsort(drawn)]])}))
    events = pd.concat(parts, ignore_index=True)
    return pa.table({name: pa.array(events[name], pa.int64()) for name in ("uid", "campaign", "label", "time")})


def make_tables(ratings_folder: Path, output: Path, seed: int = 0, count: int = 150, negatives: int = 1) -> dict:
    """Write users.parquet, campaigns.parquet and events.parquet under `output`; returns their row counts."""
    ratings, users, items = read(ratings_folder)
    rng = np.random.default_rng(seed)
    campaigns = choose_campaigns(ratings, len(users), count, rng)
    features = ratings[~ratings.movie.isin(campaigns)]
    tables = {
        "users": users_table(users, features, items),
        "campaigns": campaigns_table(items, ratings, campaigns),
        "events": events_table(ratings, users.uid.to_numpy(), campaigns, negatives, rng),
    }
    output.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, output / f"{name}.parquet")
    return {name: table.num_rows for name, table in tables.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=Path, required=True, help="folder of the GroupLens u.data, u.user, u.item")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="which movies are campaigns, which negatives are drawn")
    parser.add_argument("--campaigns", type=int, default=150)
    parser.add_argument("--negatives", type=int, default=1, help="sampled non-raters per rater")
    args = parser.parse_args()
    counts = make_tables(args.ratings, args.output, args.seed, args.campaigns, args.negatives)
    print(", ".join(f"{name}.parquet: {rows:,} rows" for name, rows in counts.items()) + f" in {args.output}")


if __name__ == "__main__":
    main()
