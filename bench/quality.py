"""Audience quality on synthetic and real data: every method over several seeds, on the generator's settings
and on MovieLens, with 95% intervals from a paired bootstrap over campaigns of (recommended - best other row).

    python bench/quality.py [--settings transfer,specific,movielens] [--seeds 1,2,3] [--users 10000]
                            [--campaigns 440] [--rows 500] [--ratings ../shared/data/movielens-100k]
                            [--methods ...] [--replicates 1000] [--jobs 2] [--model-config JSON]
                            [--recommended-config JSON] [--matmul-precision medium|highest]

Runs the library in-process (no files but the data): per setting and seed, generate the raw files and
preprocess them (half the campaigns held out for testing, the cold/hot threshold at their median), or for
`movielens` make the example's tables (examples/movielens/make_tables.py) and preprocess them with its spec
(the seed is the campaign split's and the seed sets'; --users, --campaigns and --rows do not apply); train
each method on the training campaigns, adapt and score every test campaign through the methods' own
adaptation (`Method.adapt_and_score`, the product's path). Prints per setting:
mean ± std over seeds of each metric, the interval of each row's metric (seed-averaged, campaigns
resampled) and the gap of the recommended method to the best other row, and how many seeds it wins.
With --jobs N, N (setting, seed) runs go at once, one process and one torch thread each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metaheac.benchmark import evaluate_methods
from metaheac.data.config import PreprocessConfig
from metaheac.data.loading import load_features, load_rows
from metaheac.data.preprocess import preprocess_raw
from metaheac.data.spec import load_spec
from metaheac.data.synthetic import SETTINGS, SyntheticConfig, generate, setting_config
from metaheac.data.tables import preprocess_tables
from metaheac.evaluation.intervals import bootstrap
from metaheac.evaluation.metrics import TABLE_GROUPS, compare, metric_keys
from metaheac.method_names import RECOMMENDED
from metaheac.model.config import ModelConfig
from metaheac.recommended.config import RecommendedConfig
from metaheac.training.config import MATMUL_PRECISIONS, MetaTrainConfig

DEFAULT_METHODS = "LR,sklearn LR,pooled LR,MLP one-stage,Category LR,MLP+pre-training,MetaHeac," + RECOMMENDED


def run_seed(setting: str, seed: int, args: argparse.Namespace, methods: list[str]) -> dict[str, pd.DataFrame]:
    """{method: scored test rows} for one generated dataset; with --results, those saved by an earlier run
    of the same sizes are read back and only the missing methods run."""
    files = {m: saved_file(args.results, setting, seed, args, m) for m in methods} if args.results else {}
    frames = {m: pd.read_parquet(f) for m, f in files.items() if f.exists()}
    missing = [m for m in methods if m not in frames]
    if missing:
        frames |= evaluate_seed(setting, seed, args, missing)
        for m in missing if files else []:
            files[m].parent.mkdir(parents=True, exist_ok=True)
            frames[m].to_parquet(files[m])
    return {m: frames[m] for m in methods}


def saved_file(results: str, setting: str, seed: int, args: argparse.Namespace, method: str) -> Path:
    """Where --results keeps one method's scored test rows of one (setting, seed) at these sizes."""
    sizes = "" if setting == MOVIELENS else f"-{args.users}-{args.campaigns}-{args.rows}"
    return Path(results, f"{setting}-{seed}{sizes}", f"{method.replace(' ', '_')}.parquet")


MOVIELENS = "movielens"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "movielens"


def movielens_dataset(folder: str, seed: int, ratings: str) -> str:
    """The MovieLens example's dataset under `folder`, its campaign split and seed sets drawn with `seed`."""
    subprocess.run([sys.executable, str(EXAMPLE / "make_tables.py"), "--ratings", ratings, "--output",
                    f"{folder}/tables"], check=True, stdout=subprocess.DEVNULL)
    spec_uri = str(EXAMPLE / "spec.yaml")
    spec = load_spec(spec_uri, f"{folder}/tables")
    spec = dataclasses.replace(spec, split=dataclasses.replace(spec.split, seed=seed),
                               stages=dataclasses.replace(spec.stages, seed=seed))
    preprocess_tables(spec_uri, f"{folder}/dataset", progress=False, spec=spec)
    return "real data"


def evaluate_seed(setting: str, seed: int, args: argparse.Namespace, methods: list[str]) -> dict[str, pd.DataFrame]:
    with tempfile.TemporaryDirectory() as folder:
        if setting == MOVIELENS:
            about = movielens_dataset(folder, seed, args.ratings)
        else:
            info = generate(f"{folder}/raw", data_config(setting, seed, args))
            preprocess_raw(f"{folder}/raw", f"{folder}/dataset",
                           dataclasses.replace(PreprocessConfig(), cold_threshold=-1, seed=seed))
            about = f"oracle GAUC {info['oracle_gauc_stage2']:.4f}"
        features = load_features(f"{folder}/dataset")
        train = load_rows(f"{folder}/dataset", "train", 1)
        tests = {split: (load_rows(f"{folder}/dataset", split, 1), load_rows(f"{folder}/dataset", split, 2))
                 for split in ("test_cold", "test_hot")}
        started = time.perf_counter()
        frames = evaluate_methods(methods, features, train, tests, seed=seed, model_config=args.model_config,
                                  settings={RECOMMENDED: args.recommended_config},
                                  meta_config=MetaTrainConfig(matmul_precision=args.matmul_precision))
        print(f"  {setting} seed {seed}: {about}, {time.perf_counter() - started:.0f} s", flush=True)
    return frames


def _fmt(values: tuple[float, float, float]) -> str:
    return f"{values[0]:+.4f} [{values[1]:+.4f}, {values[2]:+.4f}]"


def report(setting: str, runs: list[dict[str, pd.DataFrame]], replicates: int, seeds: list[int]) -> None:
    methods = list(runs[0])
    summaries = [compare(run) for run in runs]
    columns = [(g, k) for g in TABLE_GROUPS for k in metric_keys() if k != "r@5%"]
    cold = sum(s[methods[0]]["cold"]["campaigns"] for s in summaries) / len(runs)
    hot = sum(s[methods[0]]["hot"]["campaigns"] for s in summaries) / len(runs)
    print(f"\nsetting {setting}: {len(runs)} seeds, {cold:.0f} cold + {hot:.0f} hot test campaigns per seed")
    print("mean ± std over seeds")
    print(f"{'method':<20}" + "".join(f"{g + ' ' + k:>17}" for g, k in columns))
    for m in methods:
        cells = [np.array([s[m][g][k] for s in summaries]) for g, k in columns]
        print(f"{m:<20}" + "".join(f"{v.mean():>10.4f}±{v.std():.4f}" for v in cells))
    result = bootstrap(runs, RECOMMENDED, replicates=replicates)
    print(f"95% intervals (paired bootstrap over campaigns, {replicates} replicates, seed-averaged)")
    for m in methods:
        print(f"{m:<20}" + "".join(f"  {k} {result[m][c][0]:.4f} [{result[m][c][1]:.4f}, {result[m][c][2]:.4f}]"
                                   for c in columns for k in [c[0][0] + c[1]]))
    if "gap" in result:
        print(f"{RECOMMENDED} - best other row:")
        for c in [*columns, ("cold", "r@5%"), ("hot", "r@5%")]:
            estimate, low, high = result["gap"][c]
            verdict = "above 0" if low > 0 else "NOT above 0"
            print(f"  {c[0]:<4} {c[1]:<5} {_fmt(result['gap'][c])}  {verdict}")
        gaps = np.array([[s[RECOMMENDED][g][k] - max(s[m][g][k] for m in methods if m != RECOMMENDED)
                          for g, k in columns] for s in summaries])
        won = (gaps > 0).sum(0)
        print("seeds won: " + ", ".join(f"{g} {k} {w}/{len(runs)}" for (g, k), w in zip(columns, won, strict=True)))
        for seed, row in zip(seeds, gaps, strict=True):
            print(f"  seed {seed}: {RECOMMENDED} - best other row: " + " ".join(f"{x:+.4f}" for x in row))
        if "MetaHeac" in methods:
            gap = [s[RECOMMENDED][g]["auc"] - s["MetaHeac"][g]["auc"] for s in summaries for g in ("cold", "hot")]
            print(f"pooled AUC minus faithful MetaHeac, per seed and group: {' '.join(f'{x:+.4f}' for x in gap)}")


def _one_thread() -> None:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="  %(message)s")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The generated data's options, shared with `bench/ceiling.py`."""
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--campaigns", type=int, default=440)
    parser.add_argument("--rows", type=int, default=500, help="mean stage-1 rows of a campaign")



def data_config(setting: str, seed: int, args: argparse.Namespace) -> SyntheticConfig:
    return setting_config(setting, users=args.users, campaigns=args.campaigns, mean_rows_per_campaign=args.rows,
                          seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.set_defaults(settings=",".join([*SETTINGS, MOVIELENS]))
    parser.add_argument("--ratings", default="../shared/data/movielens-100k",
                        help="the MovieLens-100k files (u.data, u.user, u.item) of the movielens setting")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1, help="(setting, seed) runs at once, one thread each")
    parser.add_argument("--model-config", default="{}", help='JSON of ModelConfig fields to change, e.g. '
                                                              '\'{"embedding_dim": 32}\' (--results: its own folder)')
    parser.add_argument("--recommended-config", default="{}", help=f'JSON of {RECOMMENDED}\'s RecommendedConfig '
                        'fields to change, e.g. \'{"residual_lr": false}\' (--results: its own folder)')
    parser.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, default=MetaTrainConfig().matmul_precision,
                        help="MetaTrainConfig.matmul_precision of the meta-training (--results: its own folder)")
    parser.add_argument("--results", default="", help="folder where each (setting, seed) run's scored rows are "
                                                      "saved, and read back by a later run of the same sizes")
    args = parser.parse_args()
    try:  # a wrong field fails here, before any work
        args.model_config = ModelConfig.from_dict({**ModelConfig().to_dict(), **json.loads(args.model_config)})
    except (TypeError, ValueError) as error:
        parser.error(f"--model-config: {error}")
    try:
        args.recommended_config = RecommendedConfig.from_dict(json.loads(args.recommended_config))
    except (TypeError, ValueError) as error:
        parser.error(f"--recommended-config: {error}")
    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings, seeds = args.settings.split(","), [int(s) for s in args.seeds.split(",")]
    generated = f"{args.users:,} users, {args.campaigns} campaigns, {args.rows} mean stage-1 rows; " * any(
        s != MOVIELENS for s in settings)
    print(f"{generated}seeds {args.seeds}")
    if args.jobs > 1:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # the workers inherit it
            os.environ[name] = "1"
        with ProcessPoolExecutor(args.jobs, get_context("spawn"), initializer=_one_thread) as pool:
            futures = {s: [pool.submit(run_seed, s, seed, args, methods) for seed in seeds] for s in settings}
            for setting in settings:
                report(setting, [f.result() for f in futures[setting]], args.replicates, seeds)
        return
    for setting in settings:
        runs = []
        for seed in seeds:
            runs.append(run_seed(setting, seed, args, methods))
            report(setting, runs, args.replicates, seeds[: len(runs)])  # after every seed: a long run reports


if __name__ == "__main__":
    main()
