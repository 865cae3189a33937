"""The fault suite: `metaheac preprocess`, `train` and a gs:// publish are SIGKILLed at random points (real
subprocesses, the real emulator); the previous output stays intact and loadable, and a rerun completes,
training resumed equal to an uninterrupted run.

Each kill lands at a seeded random fraction of the time an uninterrupted run of the same command took,
so the points move over the run's start, its work and its publication. The training kill takes minutes
on two cores, so it is marked `faults`: skipped unless METAHEAC_FAULTS=1 (scripts/test sets it)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metaheac import storage
from metaheac.data.config import PreprocessConfig
from metaheac.data.loading import load_features, load_rows
from metaheac.data.preprocess import preprocess_raw
from metaheac.storage import published

SEED = int(os.environ.get("METAHEAC_FAULT_SEED", "8"))
CLI = [sys.executable, "-m", "metaheac.cli"]


def run(argv: list[str], kill_after: float | None = None) -> tuple[int, float]:
    """Run the CLI; with `kill_after`, SIGKILL it then (unless it ended first). (exit code, seconds)."""
    started = time.monotonic()
    process = subprocess.Popen([*CLI, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        process.wait(timeout=kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.stderr is not None
    error = process.stderr.read().decode(errors="replace")
    code = process.returncode
    assert code in (0, -signal.SIGKILL), error[-2000:]
    return code, time.monotonic() - started


def dataset_snapshot(uri: str) -> tuple[str, int, list[int]]:
    """What a reader of the dataset gets (its fields, users and training rows; not the provenance, which
    holds timings): it loads, so it is whole."""
    features = load_features(uri)
    rows = load_rows(uri, "train", 1)
    fields = [features.schema.user_single, features.schema.user_lists, features.schema.campaign_fields]
    return repr(fields), len(features.users), rows.campaign.tolist() + rows.user.tolist()


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("faults") / "raw"
    assert run(["generate", "--output", str(folder), "--users", "1500", "--campaigns", "12", "--seed", "5"])[0] == 0
    return folder


def preprocess(raw: Path, output: str, seed: int) -> list[str]:
    return ["preprocess", "--input", str(raw), "--output", output, "--cold-threshold", "-1", "--seed", str(seed)]


@pytest.mark.parametrize("where", ["local", "gs"])
def test_killed_preprocess_keeps_the_previous_dataset(raw: Path, tmp_path: Path, where: str,
                                                       request: pytest.FixtureRequest) -> None:
    if where == "gs":
        output = f"gs://{request.getfixturevalue('gcs_bucket')}/ds"
    else:
        output = str(tmp_path / "ds")
    reference = {}  # the dataset each split seed gives, built apart
    for seed in (1, 2, 3):
        preprocess_raw(str(raw), str(tmp_path / f"ref{seed}"), PreprocessConfig(cold_threshold=-1, seed=seed),
                       progress=False)
        reference[seed] = dataset_snapshot(str(tmp_path / f"ref{seed}"))
        shutil.rmtree(tmp_path / f"ref{seed}")
    code, seconds = run(preprocess(raw, output, seed=1))
    assert code == 0 and dataset_snapshot(output) == reference[1]
    draw = random.Random(f"{SEED}-{where}")
    killed = 0
    for _ in range(4):  # another split seed: a rerun that changes the dataset
        code, took = run(preprocess(raw, output, seed=2), kill_after=draw.uniform(0.2, 0.9) * seconds)
        killed += code != 0
        # Whole: the previous one, or (a kill after the switch, or no kill) the new one.
        assert dataset_snapshot(output) in (reference[1], reference[2])
        seconds = took if code == 0 else seconds
        if killed == 2:
            break
    assert killed, "no kill landed: the runs ended before every kill"
    assert run(preprocess(raw, output, seed=3))[0] == 0  # the rerun takes over the dead run's lock
    assert dataset_snapshot(output) == reference[3]
    leftovers = [f for f in storage.list_files(output) if "/_v/" in f and not f.startswith(published(output) + "/")]
    assert leftovers == []  # no version of a killed publication is left
    if where == "local":
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging, no lock, no old version


@pytest.mark.faults  # four training processes: minutes on a busy 2-core machine (scripts/test runs it)
def test_killed_training_resumes_to_the_uninterrupted_weights(raw: Path, tmp_path: Path) -> None:
    dataset = str(tmp_path / "ds")
    assert run(preprocess(raw, dataset, seed=1))[0] == 0

    def train(output: Path, kill_after: float | None = None) -> tuple[int, float]:
        return run(["train", "--dataset", dataset, "--output", str(output), "--method", "MetaHeac", "--max-steps",
                    "12", "--task-count", "2", "--batch-size", "32", "--embedding-dim", "8", "--device", "cpu",
                    "--checkpoint-every", "1"], kill_after)

    code, seconds = train(tmp_path / "straight")
    assert code == 0
    draw = random.Random(SEED)
    output = tmp_path / "killed"
    kills = 0
    for _ in range(2):  # the second kill may land before, in or after the first one's resumed steps
        code, _ = train(output, kill_after=draw.uniform(0.5, 0.95) * seconds)  # the first half is start-up
        kills += code != 0
    assert kills, "no kill landed"
    assert train(output)[0] == 0
    straight = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    resumed = torch.load(output / "model.pt", weights_only=True)
    assert straight.keys() == resumed.keys()
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name
