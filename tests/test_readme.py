"""The README's commands, pasted in order into a fresh copy of the repository, all work: README drift fails CI.

Every fenced bash block runs, command by command, in a scratch copy of the repository's files, with this
venv as its `.venv` (what the README's first commands create). Commands that need a cluster, and the slow
ones that CI runs on their own, are skipped by name in SKIPPED.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.pipeline_helpers import ROOT

SKIPPED = {
    "./scripts/demo": "slow, and CI runs it",
    "./scripts/test": "CI runs it (and this test is part of it)",
    "docker/build.sh": "needs docker or podman (tests/test_container.py runs it)",
    "python -m pipelines compile --image": "needs the image built (tests/test_container.py compiles with it)",
    "python -m pipelines submit": "needs a KFP API server",
    "python -m pipelines schedule create --host": "needs a KFP API server",
    "python -m pipelines schedule list": "needs a KFP API server",
    "python -m pipelines schedule pause": "needs a KFP API server",
    "python -m pipelines schedule create --local": "waits for its cron times",
}
_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)


def readme_commands(text: str) -> list[str]:
    """The commands of the text's bash blocks, continuation lines joined."""
    return [command for block in _BLOCK.findall(text) for command in block.replace("\\\n", " ").splitlines()
            if command.strip() and not command.lstrip().startswith("#")]


def skipped(command: str) -> str | None:
    return next((why for name, why in SKIPPED.items() if command.startswith(name)), None)


def test_every_skip_names_a_readme_command() -> None:
    commands = readme_commands((ROOT / "README.md").read_text())
    assert all(any(c.startswith(name) for c in commands) for name in SKIPPED), "a stale SKIPPED entry"
    assert len([c for c in commands if not skipped(c)]) >= 10


def _fresh_copy(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def test_readme_commands_work_in_a_fresh_copy(tmp_path: Path) -> None:
    """Every command runs, and what it prints and writes is what the README says: one line a step, the
    online section's audiences (uid, score, rank; neither seeds nor known non-converters)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the repository's git checkout to list its files")
    clone = tmp_path / "clone"
    _fresh_copy(clone)
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)  # what the first commands create
    script = ["set -euo pipefail", "mkdir -p .out"]
    commands = [c for c in readme_commands((clone / "README.md").read_text()) if not skipped(c)]
    for number, command in enumerate(commands):  # each command's output to its own files (a newline: comments)
        script += [f"echo {shlex.quote(command)} > .last-command",
                   f"{{ {command}\n}} > .out/{number} 2> .out/{number}.err"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(clone), "LANG": "C.UTF-8"}
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=1200)
    outputs = [(c, (clone / ".out" / str(n)).read_text() if (clone / ".out" / str(n)).exists() else "")
               for n, c in enumerate(commands)]
    if done.returncode != 0:
        last = (clone / ".last-command").read_text().strip()
        number = commands.index(last) if last in commands else -1
        err = (clone / ".out" / f"{number}.err").read_text() if number >= 0 else done.stderr
        pytest.fail(f"README command failed: {last}\n{outputs[number][1][-3000:]}\n{err[-3000:]}")
    runs = clone / "runs"
    assert (runs / "metaheac-pipeline.yaml").exists() and not (clone / "metaheac-pipeline.yaml").exists()
    for command, out in outputs:  # a step prints one line
        if command.startswith("metaheac "):
            step = command.split()[1]
            said = [line for line in out.splitlines() if line.startswith("metaheac ")]
            assert said == [out.splitlines()[-1]] and said[0].startswith(f"metaheac {step}: done: "), (command, out)
            assert len(out.splitlines()) == 1 or step == "evaluate", (command, out)  # evaluate: the table first
    audience = pd.read_parquet(runs / "audience.parquet")
    seeds = set(np.loadtxt(runs / "seeds.txt", dtype=np.int64))
    assert list(audience.columns) == ["uid", "score", "rank"] and len(audience) == 1000
    assert not set(audience["uid"]) & seeds
    expanded, refreshed = [out for command, out in outputs
                           if command.startswith("python -m pipelines run-local --pipeline")]
    # the README quotes the two runs' campaign lines as they print (captured, not written by hand)
    quoted = re.findall(r"^ {4}( +\S+ +(?:ok|reused|failed|ineligible) .*|campaigns: .*)$",
                        (clone / "README.md").read_text(), re.MULTILINE)
    assert len(quoted) == 6 and all(line.strip() in expanded + refreshed for line in quoted), quoted
    assert "campaigns: 2 ok, 0 failed\n" in expanded and "campaigns: 1 ok, 0 failed, 1 reused\n" in refreshed
    # the refresh's run: new-brand expanded again from its grown seed file, spring-shoes' audience reused as is
    first, run = sorted((runs / "expand").glob("metaheac-expand-*/merge-audiences/output"))
    pd.testing.assert_frame_equal(pd.read_parquet(first / "audiences" / "spring-shoes.parquet"),
                                  pd.read_parquet(run / "audiences" / "spring-shoes.parquet"))
    opt_outs = set(np.loadtxt(runs / "opt-outs.txt", dtype=np.int64))
    for name, excluded, size, tiers in (
            ("spring-shoes", ["spring-shoes-no.txt", "spring-shoes-customers.txt"], 500, {"5%": 100, "10%": 100,
                                                                                         "25%": 300}),
            ("new-brand", [], 400, {"5%": 100, "400": 300})):
        found = pd.read_parquet(run / "audiences" / f"{name}.parquet")
        assert list(found.columns) == ["uid", "score", "rank", "tier"] and len(found) == size
        assert found["rank"].tolist() == list(range(1, size + 1)) and found["score"].is_monotonic_decreasing
        assert found["tier"].astype(str).value_counts().to_dict() == tiers
        kept_out = set(np.loadtxt(runs / "seeds" / f"{name}.txt", dtype=np.int64)) | opt_outs
        for file in excluded:
            kept_out |= set(np.loadtxt(runs / "seeds" / file, dtype=np.int64))
        assert not set(found["uid"]) & kept_out
        # a request per content: new-brand's seed file changed between the runs, spring-shoes' request did not
        assert len(list((runs / "audiences" / name).glob("*/audience.parquet"))) == (name == "new-brand") + 1
        assert f"  {name}" in expanded and f"audience {size} users" in expanded
