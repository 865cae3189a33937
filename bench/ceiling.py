"""The generator's own ceilings on stage 2, per setting over data seeds: how well the true probability
ranks (`oracle`), and the best prior (the true logit's part a campaign's category and advertiser share,
with every user's true topic mix: what a model can reach without the campaign's seeds). Every generated
campaign counts (not only the quality bench's held-out half), cold and hot split at the generator's
suggested threshold; the metrics are the evaluation's (`metaheac.evaluation.metrics`).

    python bench/ceiling.py [--settings transfer,specific] [--seeds 1,2,3] [--users 10000]
                            [--campaigns 440] [--rows 500]

The defaults are `bench/quality.py`'s sizes, so its rows can be read against these.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from bench.quality import add_data_arguments, data_config
from metaheac.data.synthetic import planted_scores
from metaheac.evaluation.metrics import TABLE_GROUPS, compare

METRICS = ("gauc", "p@5%")


def ceilings(setting: str, seed: int, args: argparse.Namespace) -> dict[str, dict[str, dict[str, float | int]]]:
    rows = planted_scores(data_config(setting, seed, args))
    held = rows["stage2"]
    frame = pd.DataFrame({"campaign": rows["campaign"][held], "user": rows["user"][held],
                          "label": rows["label"][held].astype(np.int64),
                          "split": np.where(rows["cold"][held], "test_cold", "test_hot")})
    return compare({name: frame.assign(score=rows[name][held]) for name in ("oracle", "prior")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    columns = [(group, metric) for group in TABLE_GROUPS for metric in METRICS]
    print(f"{'setting':<10}{'ceiling':<8}" + "".join(f"{g + ' ' + m:>18}" for g, m in columns))
    for setting in args.settings.split(","):
        runs = [ceilings(setting, seed, args) for seed in seeds]
        for name in ("oracle", "prior"):
            cells = []
            for group, metric in columns:
                values = [float(run[name][group][metric]) for run in runs]
                cells.append(f"{np.mean(values):.4f}±{np.std(values):.4f}")
            print(f"{setting:<10}{name:<8}" + "".join(f"{c:>18}" for c in cells))
    print(f"(mean ± std over seeds {args.seeds})")


if __name__ == "__main__":
    main()
