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
    "python -m pipelines schedule create --local": "waits for its cron times",
    "python -m pipelines run-local --pipeline expand": "needs a folder of your seed sets "
                                                       "(tests/test_expand_pipeline.py runs one)",
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
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the repository's git checkout to list its files")
    clone = tmp_path / "clone"
    _fresh_copy(clone)
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)  # what the first commands create
    script = ["set -euo pipefail"]
    for command in readme_commands((clone / "README.md").read_text()):
        if not skipped(command):
            script += [f"echo {shlex.quote(command)} > .last-command", command]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(clone), "LANG": "C.UTF-8"}
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=900)
    last = (clone / ".last-command").read_text().strip() if (clone / ".last-command").exists() else "-"
    assert done.returncode == 0, f"README command failed: {last}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert (clone / "runs" / "audience.parquet").exists() and (clone / "runs" / "metaheac-pipeline.yaml").exists()
    assert not (clone / "metaheac-pipeline.yaml").exists()  # compile writes under runs/
