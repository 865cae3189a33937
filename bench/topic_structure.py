"""Do users' ids come in topics, and as strongly in the generator as in real data? A document-completion
test: fit LDA on 80% of the users, infer each held-out user's topic mix from half of the user's list-field
ids, and score the other half: the mean log-probability of a hidden id, for 1 topic (the ids' popularity
alone) and for more. The gain over 1 topic is what co-occurrence tells about a user: the structure that
MetaHeac+LR's user topics (`metaheac/topics.py`) learn.

    python bench/topic_structure.py [--settings transfer,specific] [--seeds 1,2,3]
                                    [--official ../shared/data/metaheac-processed-sample]

`--official` reads the official processed sample's `train_stage2.pkl` (a pickle: only a file you trust).
Its rows are users who were positive for one of 86 ads, so its users are a biased sample; each distinct
user counts once. Both sources use the first 5,000 users and ids of >= 5 of them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.decomposition import LatentDirichletAllocation

from bench.quality import add_data_arguments, data_config
from metaheac.data.config import PreprocessConfig
from metaheac.data.loading import load_features
from metaheac.data.preprocess import preprocess_raw
from metaheac.data.synthetic import generate

USERS = 5_000
TOPICS = (1, 8, 32)
OFFICIAL_LISTS = ("interest1", "interest2", "interest3", "kw1", "kw2", "topic1", "topic2")


def matrix(rows: list[np.ndarray], width: int) -> sp.csr_matrix:
    """Users x ids, 1 where the user has the id."""
    indptr = np.cumsum([0] + [len(r) for r in rows])
    x = sp.csr_matrix((np.ones(indptr[-1]), np.concatenate(rows).astype(np.int64), indptr), shape=(len(rows), width))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def common(rows: list[np.ndarray]) -> sp.csr_matrix:
    """The users' ids of >= 5 users, and the users with at least one."""
    x = matrix(rows, int(max(r.max(initial=0) for r in rows)) + 1)
    x = x[:, np.flatnonzero(np.asarray(x.sum(0)).ravel() >= 5)]
    return x[np.flatnonzero(np.asarray(x.sum(1)).ravel() > 0)]


def generated_ids(setting: str, seed: int, args: argparse.Namespace) -> sp.csr_matrix:
    with tempfile.TemporaryDirectory() as folder:
        generate(f"{folder}/raw", data_config(setting, seed, args))
        preprocess_raw(f"{folder}/raw", f"{folder}/dataset", PreprocessConfig(cold_threshold=-1, seed=seed))
        features = load_features(f"{folder}/dataset")
    lists = features.users.lists[:USERS].long().numpy()
    field = np.repeat(np.arange(len(features.schema.list_lengths)), features.schema.list_lengths)
    ids = field * (int(lists.max()) + 1) + lists  # one id space per field
    return common([row[lists[i] > 0] for i, row in enumerate(ids)])


def official_ids(folder: str) -> sp.csr_matrix:
    frame = pd.read_pickle(Path(folder) / "train_stage2.pkl")  # opt-in (--official): a file the user trusts
    vocab: dict[tuple[int, int], int] = {}
    users = {tuple(vocab.setdefault((f, int(v)), len(vocab)) for f, c in enumerate(OFFICIAL_LISTS)
                   for v in np.asarray(getattr(r, c)).ravel() if v > 0) for r in frame.itertuples()}
    return common([np.array(u, dtype=np.int64) for u in sorted(users)][:USERS])  # a user's rows count once


def completion(x: sp.csr_matrix, topics: int, seed: int) -> float:
    """Mean log p(hidden id) over held-out users (module doc)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(x.shape[0])
    cut = int(0.8 * len(order))
    held = x[order[cut:]]
    seen, hidden = [], []
    for i in range(held.shape[0]):
        ids = rng.permutation(held.indices[held.indptr[i]:held.indptr[i + 1]])
        hidden.append(ids[: len(ids) // 2])
        seen.append(ids[len(ids) // 2:])
    lda = LatentDirichletAllocation(topics, doc_topic_prior=0.1, learning_method="batch", max_iter=20,
                                    random_state=seed).fit(x[order[:cut]])
    word = lda.components_ / lda.components_.sum(1, keepdims=True)
    mixes = lda.transform(matrix(seen, x.shape[1]))
    return float(np.mean([np.log(mixes[i] @ word[:, h]).mean() for i, h in enumerate(hidden) if len(h)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--official", default="", help="folder of the official processed sample (a pickle)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sources = [(f"{s} (generated)", [generated_ids(s, seed, args) for seed in seeds]) for s in args.settings.split(",")]
    if args.official:
        sources.append(("official sample", [official_ids(args.official)] * len(seeds)))  # seeds: the splits
    print(f"{'source':<24}{'users':>7}{'ids':>7}{'ids/user':>10}" + "".join(f"{f'{k} topics':>16}" for k in TOPICS)
          + f"{'gain':>16}")
    for name, matrices in sources:
        scores = np.array([[completion(x, k, seed) for k in TOPICS] for x, seed in zip(matrices, seeds, strict=True)])
        x = matrices[0]
        gain = scores[:, -1] - scores[:, 0]
        print(f"{name:<24}{x.shape[0]:>7}{x.shape[1]:>7}{x.sum() / x.shape[0]:>10.1f}"
              + "".join(f"{m:>9.3f}±{s:.3f}" for m, s in zip(scores.mean(0), scores.std(0), strict=True))
              + f"{gain.mean():>9.3f}±{gain.std():.3f}")
    print(f"(mean log p of a hidden id, nats; mean ± std over seeds {args.seeds}; gain: {TOPICS[-1]} topics - 1)")


if __name__ == "__main__":
    main()
