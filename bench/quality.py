"""The paper's table on synthetic data, over several seeds: mean ± std of every method's metrics.

    python bench/quality.py [--users 20000] [--campaigns 64] [--seeds 1,2,3] [--epochs 1]

Each seed runs the `demo` step (its own data, split, initialisations and adaptation) under
runs/bench-quality/; the table reads their metrics.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from metaheac.steps.demo import Demo

COLUMNS = [("cold", "auc"), ("cold", "gauc"), ("cold", "p@5%"), ("hot", "auc"), ("hot", "gauc"), ("hot", "p@5%")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--campaigns", type=int, default=64)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--methods", default="all")
    parser.add_argument("--output", default="runs/bench-quality")
    args = parser.parse_args()
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        result = Demo(output=f"{args.output}/seed-{seed}", users=args.users, campaigns=args.campaigns,
                      methods=args.methods, epochs=args.epochs, seed=seed).run()
        runs.append(json.loads(Path(result["metrics"]).read_text()))
    methods = list(runs[0])
    header = " | ".join(f"{group} {metric:>5}" for group, metric in COLUMNS)
    print(f"{len(runs)} seeds ({args.seeds}), {args.users:,} users, {args.campaigns} campaigns, "
          f"{args.epochs} epoch(s): mean ± std")
    print(f"{'method':<28} | {header}")
    for method in methods:
        cells = []
        for group, metric in COLUMNS:
            values = np.array([run[method][group][metric] for run in runs], dtype=float)
            cells.append(f"{np.nanmean(values):.4f}±{np.nanstd(values):.4f}")
        print(f"{method:<28} | " + " | ".join(cells))
    wins = {
        (group, metric): sum(
            run["MetaHeac"][group][metric] >= max(run[m][group][metric] for m in methods if m != "MetaHeac")
            for run in runs
        )
        for group, metric in COLUMNS
        if "MetaHeac" in methods and len(methods) > 1
    }
    if wins:
        print("MetaHeac best of all methods, seeds won: " +
              ", ".join(f"{g} {m} {w}/{len(runs)}" for (g, m), w in wins.items()))


if __name__ == "__main__":
    main()
