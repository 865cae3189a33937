"""Two `quality.py --results` folders compared: a method's scores under setting A against setting B (e.g. another
--recommended-config or --matmul-precision), on the same data (settings, seeds and sizes found in both).

    python bench/compare_results.py A_FOLDER B_FOLDER [--methods MetaHeac+LR,...] [--replicates 1000]

Per data setting and method: the mean ± std over seeds of each metric in A and in B, and B - A with its 95%
interval (paired bootstrap over campaigns, seed-averaged: `metaheac.evaluation.intervals.bootstrap`).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from metaheac.evaluation.intervals import bootstrap
from metaheac.evaluation.metrics import TABLE_GROUPS, compare, metric_keys
from metaheac.method_names import RECOMMENDED


def runs_in_both(a: Path, b: Path, method: str) -> dict[str, list[tuple[str, pd.DataFrame, pd.DataFrame]]]:
    """{data setting and sizes: [(seed folder, A's scored rows, B's)]} where both folders have `method`'s."""
    file = f"{method.replace(' ', '_')}.parquet"
    found: dict[str, list[tuple[str, pd.DataFrame, pd.DataFrame]]] = defaultdict(list)
    for run in sorted(p.name for p in a.iterdir() if (p / file).exists() and (b / p.name / file).exists()):
        setting, _, rest = run.partition("-")  # "<setting>-<seed>[-<sizes>]"
        _, _, sizes = rest.partition("-")
        found[f"{setting} {sizes}".strip()].append(
            (run, pd.read_parquet(a / run / file), pd.read_parquet(b / run / file)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--methods", default=RECOMMENDED)
    parser.add_argument("--replicates", type=int, default=1000)
    args = parser.parse_args()
    columns = [(g, k) for g in TABLE_GROUPS for k in metric_keys() if not k.startswith("r@")]
    print(f"A = {args.a}, B = {args.b}")
    for method in args.methods.split(","):
        for data, runs in runs_in_both(args.a, args.b, method).items():
            pairs = [{"B": b, "A": a} for _, a, b in runs]
            result = bootstrap(pairs, "B", replicates=args.replicates)
            summaries = [compare(pair) for pair in pairs]
            print(f"\n{method} on {data}: {len(runs)} seeds ({', '.join(r for r, _, _ in runs)})")
            print(f"{'':<8}" + "".join(f"{g + ' ' + k:>28}" for g, k in columns))
            for side in ("A", "B"):
                cells = [np.array([s[side][g][k] for s in summaries]) for g, k in columns]
                print(f"{side:<8}" + "".join(f"{v.mean():>21.4f}±{v.std():.4f}" for v in cells))
            print(f"{'B - A':<8}" + "".join(
                f"{f'{e:+.4f} [{lo:+.4f}, {hi:+.4f}]':>28}" for e, lo, hi in (result["gap"][c] for c in columns)))


if __name__ == "__main__":
    main()
