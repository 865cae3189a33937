"""A change measured against the shipped code, from two `bench/quality.py --results` folders: one method's
scored rows in the variant's folder minus the same method's in the base folder (the same data and seeds),
with 95% intervals from the paired bootstrap over campaigns; and, with --table, the quality table of the
base folder's rows with that method's rows taken from the variant (so the recommended method's gap to the
best other row with the change in).

    python bench/gap.py --base runs/quality --variant runs/quality-auc --method "sklearn LR" \\
        --settings transfer --seeds 1,2,3 --campaigns 96 --rows 1500 [--table "LR,sklearn LR,..."]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from bench.quality import MOVIELENS, add_data_arguments, report, saved_file
from metaheac.evaluation.intervals import bootstrap
from metaheac.evaluation.metrics import TABLE_GROUPS, compare, metric_keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.set_defaults(settings=MOVIELENS)
    parser.add_argument("--base", required=True, help="the shipped code's --results folder")
    parser.add_argument("--variant", required=True, help="the change's --results folder")
    parser.add_argument("--method", required=True, help="the method the change is to")
    parser.add_argument("--table", default="", help="the rows of the quality table (the base's, --method's the "
                                                    "variant's)")
    parser.add_argument("--replicates", type=int, default=1000)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    columns = [(g, k) for g in TABLE_GROUPS for k in metric_keys() if k != "r@5%"]
    for setting in args.settings.split(","):
        def read(folder: str, method: str, seed: int, setting: str = setting) -> pd.DataFrame:
            return pd.read_parquet(saved_file(folder, setting, seed, args, method))

        runs = [{"base": read(args.base, args.method, s), "variant": read(args.variant, args.method, s)}
                for s in seeds]
        gap = bootstrap(runs, "variant", replicates=args.replicates)["gap"]
        per_seed = np.array([[c["variant"][g][k] - c["base"][g][k] for g, k in columns] for c in map(compare, runs)])
        print(f"\nsetting {setting}, seeds {args.seeds}: {args.method}, variant minus base (95% paired bootstrap)")
        for c, (estimate, low, high) in ((c, gap[c]) for c in columns):
            print(f"  {c[0]:<4} {c[1]:<5} {estimate:+.4f} [{low:+.4f}, {high:+.4f}]")
        for seed, row in zip(seeds, per_seed, strict=True):
            print(f"  seed {seed}: " + " ".join(f"{x:+.4f}" for x in row))
        if args.table:
            rows = [m.strip() for m in args.table.split(",") if m.strip()]
            report(setting, [{m: read(args.variant if m == args.method else args.base, m, s) for m in rows}
                             for s in seeds], args.replicates, seeds)


if __name__ == "__main__":
    main()
