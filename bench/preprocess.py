"""Preprocessing throughput: generate N synthetic users in the raw format, preprocess them in a fresh
process, and print userFeature lines/s, wall time and peak RSS beside the input size.

    python bench/preprocess.py [--users 1000000] [--workdir runs/bench-preprocess]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from metaheac.data.synthetic import SyntheticConfig, generate

_CHILD = (
    "import resource, sys\n"
    "from metaheac.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--campaigns", type=int, default=200)
    parser.add_argument("--workdir", default="runs/bench-preprocess")
    args = parser.parse_args()
    work = Path(args.workdir) / f"users-{args.users}"
    raw, dataset = work / "raw", work / "dataset"
    if not (raw / "test1_truth.csv").exists():
        started = time.perf_counter()
        generate(str(raw), SyntheticConfig(users=args.users, campaigns=args.campaigns))
        print(f"generated {raw} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    started = time.perf_counter()
    # the child reports its own peak: a forked child's ru_maxrss would count this (large) parent's pages
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, "preprocess", "--input", str(raw), "--output", str(dataset),
         "--cold-threshold", "100"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    wall = time.perf_counter() - started
    peak_mb = float(child.stderr.strip().splitlines()[-1]) / 1024
    provenance = json.loads((dataset / "schema.json").read_text())["provenance"]
    input_mb = sum(p.stat().st_size for p in raw.iterdir()) / 2**20
    user_mb = (raw / "userFeature.data").stat().st_size / 2**20
    lines = provenance["counts"]["users"]
    user_s = provenance["seconds"]["users"]
    rows = sum(v for k, v in provenance["counts"]["rows"].items() if not k.endswith("positives"))
    table = [
        ("users (userFeature lines)", f"{lines:,}"),
        ("labelled rows", f"{rows:,}"),
        ("input size (userFeature.data / all)", f"{user_mb:,.0f} MB / {input_mb:,.0f} MB"),
        ("userFeature parse + write", f"{user_s:.2f} s"),
        ("userFeature lines/s", f"{lines / user_s:,.0f}  (target >= 100,000)"),
        ("total wall time (process)", f"{wall:.2f} s"),
        ("peak RSS", f"{peak_mb:,.0f} MB"),
    ]
    width = max(len(k) for k, _ in table)
    print(f"{'metric':<{width}} | value\n{'-' * width}-|------")
    for key, value in table:
        print(f"{key:<{width}} | {value}")


if __name__ == "__main__":
    main()
