"""Training time of the recommended method by phase at growing sizes, and its projection to the Tencent data.

    python bench/train_scale.py [--rows 100000,1000000] [--workdir runs/train-scale] [--method NAME] [--clock cpu]

For each size: generate a synthetic set of about that many labelled rows (stage 1 + 2 of every campaign),
with users in the Tencent data's proportion (11.4M users for 8.8M labelled rows) and 346 campaigns (half
of them test campaigns, as `preprocess` holds out: 173 training campaigns, as in the Tencent data);
preprocess it; train in a fresh process (`metaheac train`, CPU, torch's thread count) and read each
phase's wall time and peak RSS from the model's config.json (`extra.phases`). Generated sets and models
are kept under --workdir and reused. Then, per phase, the growth exponent k of seconds ~ rows^k (a
least-squares line in log-log over the sizes, against the training stage-1 rows `train` reads) and the
projection to the Tencent size. The generator gives every campaign at least ~200 stage-1 rows, so the
smaller sets hold more rows than asked (users stay in proportion to the ask): the table prints the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from metaheac.data.synthetic import SyntheticConfig, generate
from metaheac.method_names import RECOMMENDED

TENCENT_ROWS, TENCENT_USERS = 8_800_000, 11_400_000
CAMPAIGNS = 346
GOAL_SECONDS, GOAL_GB = 30 * 60, 16.0


def dataset_for(rows: int, workdir: Path) -> Path:
    """A preprocessed synthetic set of about `rows` labelled rows (made once)."""
    work = workdir / f"rows-{rows}"
    raw, dataset = work / "raw", work / "dataset"
    if not (dataset / "schema.json").exists():
        users = max(1000, round(rows * TENCENT_USERS / TENCENT_ROWS))
        config = SyntheticConfig(users=users, campaigns=CAMPAIGNS,
                                 mean_rows_per_campaign=max(1, round(rows / CAMPAIGNS / 1.4)))
        started = time.perf_counter()
        if not (raw / "test1_truth.csv").exists():
            generate(str(raw), config)
        subprocess.run([sys.executable, "-m", "metaheac.cli", "preprocess", "--input", str(raw), "--output",
                        str(dataset), "--overwrite"], check=True, stdout=subprocess.DEVNULL)
        print(f"  rows {rows:,}: generated and preprocessed in {time.perf_counter() - started:.0f} s", flush=True)
    return dataset


def train(dataset: Path, method: str, meta_steps: int | None) -> dict:
    """The config.json of `method` trained on `dataset` in a fresh process (reused when present), with at
    most `meta_steps` meta-steps."""
    name = f"model-{method.replace(' ', '_')}"
    done = sorted(dataset.parent.glob(f"{name}-*/config.json"))  # any earlier cap: its meta-training is scaled
    model = dataset.parent / f"{name}-{meta_steps or 'all'}"
    config = done[0] if done else model / "config.json"
    if not config.exists():
        cap = ["--max-steps", str(meta_steps)] if meta_steps else []
        subprocess.run([sys.executable, "-m", "metaheac.cli", "train", "--dataset", str(dataset), "--output",
                        str(model), "--method", method, "--device", "cpu", "--overwrite", *cap],
                       check=True, stdout=subprocess.DEVNULL)
    return json.loads(config.read_text())


def scale_meta_training(extra: dict, train_rows: int) -> bool:
    """Meta-training cut short by --max-steps: its steps' seconds scaled to the whole epoch (every step does
    the same work: batch_size rows of task_count tasks), its one-off work (the dataset's fingerprint, set-up)
    added as it is; checkpoint writes are in the steps' time, so they are scaled too (the projection errs
    high). Models trained before phases noted their steps scale the whole phase. Whether it was scaled."""
    meta = extra["meta_config"]
    steps = meta["epochs"] * -(-train_rows // meta["batch_size"])
    done = min(steps, meta["max_steps"] or steps)
    for p in extra["phases"]:
        if p["name"] == "meta-training" and done < steps:
            for clock, step_clock in (("seconds", "step_seconds"), ("cpu_seconds", "step_cpu_seconds")):
                in_steps = p.get(step_clock) or p[clock]
                p[clock] = round(p[clock] - in_steps + in_steps * steps / done, 1)
            return True
    return False


def counts(dataset: Path) -> tuple[int, int, int]:
    """(labelled rows, training stage-1 rows, users) of a preprocessed set."""
    found = json.loads((dataset / "schema.json").read_text())["provenance"]["counts"]
    rows = {k: v for k, v in found["rows"].items() if not k.endswith("positives")}
    train = sum(v for k, v in rows.items() if k.startswith("train") and k.endswith("1"))
    return sum(rows.values()), train, found["users"]


def growth(rows: list[int], seconds: list[float]) -> float:
    """k in seconds ~ rows^k, least squares in log-log (nan with one size)."""
    if len(rows) < 2 or min(seconds) <= 0:
        return float("nan")
    return float(np.polyfit(np.log(rows), np.log(seconds), 1)[0])


def linear_at(x: list[int], y: list[float], at: float) -> float:
    """The least-squares line through (x, y) at `at`; with one point, y in proportion to x."""
    if len(x) < 2:
        return y[-1] * at / x[-1]
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope * at + intercept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated labelled-row targets")
    parser.add_argument("--workdir", default="runs/train-scale")
    parser.add_argument("--method", default=RECOMMENDED)
    parser.add_argument("--meta-steps", type=int, default=200,
                        help="meta-steps run at most; a longer epoch's meta-training is scaled from their time")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="fit and project wall seconds, or CPU seconds (all threads: steadier on a shared machine)")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    print(f"{args.method}; load average at start {os.getloadavg()[0]:.2f}", flush=True)
    sizes, phases = [], []
    for target in (int(r) for r in args.rows.split(",")):
        dataset = dataset_for(target, workdir)
        started_load = os.getloadavg()[0]
        extra = train(dataset, args.method, args.meta_steps)["extra"]
        sizes.append(counts(dataset))
        scaled = scale_meta_training(extra, sizes[-1][1])
        phases.append({p["name"]: p for p in extra["phases"]})
        print(f"  rows {target:,}: trained in {extra['seconds']:.0f} s (load average {started_load:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after){'; meta-training scaled from its first steps' if scaled else ''}",
              flush=True)

    names = list(dict.fromkeys(n for p in phases for n in p))
    # x: the training stage-1 rows (what `train` reads); the Tencent data's, at the largest set's share
    train_rows = [s[1] for s in sizes]
    tencent_train = TENCENT_ROWS * sizes[-1][1] / sizes[-1][0]
    head = "".join(f"{s[0]:>13,}" for s in sizes)
    print(f"\nlabelled rows{' ' * 26}{head}")
    print(f"{'training stage-1 rows':<39}" + "".join(f"{s[1]:>13,}" for s in sizes))
    print(f"{'users':<39}" + "".join(f"{s[2]:>13,}" for s in sizes))
    clock = "cpu_seconds" if args.clock == "cpu" else "seconds"
    title = f"phase: {'CPU-' if args.clock == 'cpu' else ''}seconds (peak RSS GB)"
    print(f"\n{title:<39}" + " " * 13 * (len(sizes) - 1) + f"{'k':>13}"
          f"{'Tencent s':>11}{'GB':>7}")
    total_s, peak_gb = 0.0, 0.0
    for name in names:
        seconds = [p[name][clock] if name in p else float("nan") for p in phases]
        gbs = [p[name]["peak_rss_gb"] if name in p else float("nan") for p in phases]
        k = growth(train_rows, seconds)
        # meta-training is one step per batch_size rows, each the same work: linear by construction
        at = seconds[-1] * (tencent_train / train_rows[-1]) ** (1.0 if name == "meta-training" else k)
        gb = linear_at([s[2] for s in sizes], gbs, TENCENT_USERS)  # memory: a line in the users (their ids)
        total_s, peak_gb = total_s + at, max(peak_gb, gb)
        cells = "".join(f"{s:>7.1f} ({g:>4.2f})" for s, g in zip(seconds, gbs, strict=True))
        print(f"{name:<39}{cells}{k:>7.2f}{at:>11,.0f}{gb:>7.1f}")
    print(f"\nk: seconds ~ (training stage-1 rows)^k over the sizes; Tencent s: the largest size's seconds times "
          f"({tencent_train:,.0f} / its training rows)^k (meta-training: ^1); GB: a line in the users through the "
          "sizes' peaks")
    # CPU seconds: 2 cores each busy all the time (a lower bound on the wall), 16 cores likewise
    two_cores = total_s / 60 / (2 if args.clock == "cpu" else 1)
    print(f"projected at {TENCENT_ROWS:,} labelled rows, {TENCENT_USERS:,} users: {two_cores:,.0f} min on this "
          f"machine's 2 cores{' (CPU-s / 2)' if args.clock == 'cpu' else ''} ({two_cores / 8:,.0f} min on 16 cores "
          f"with linear scaling), peak {peak_gb:.1f} GB; goal <= {GOAL_SECONDS // 60} min, <= {GOAL_GB:.0f} GB")
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
