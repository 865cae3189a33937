"""Every step through `torchx run -s local_cwd components/torchx_components.py:<step>`, as a user runs it."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metaheac.cli import main as metaheac
from metaheac.steps.catalog import STEPS
from tests.pipeline_helpers import ROOT, TINY_PARAMS, venv_env

COMPONENTS = "components/torchx_components.py"


def torchx(log_dir: Path, step: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`torchx run` from the repository root with the venv on PATH, logs kept under log_dir."""
    command = [str(Path(sys.executable).parent / "torchx"), "run", "-s", "local_cwd",
               "--scheduler_args", f"log_dir={log_dir}", f"{COMPONENTS}:{step}", *args]
    return subprocess.run(command, cwd=ROOT, env=venv_env(), capture_output=True, text=True, timeout=300)


def test_help_is_the_step_interface(tmp_path: Path) -> None:
    done = torchx(tmp_path, "preprocess", "--help")
    assert done.returncode == 0, done.stderr
    def flat(text: str) -> str:  # argparse wraps lines, also after a word's hyphen
        return " ".join(text.split()).replace("- ", "-")

    help_text = flat(done.stdout)
    assert flat(STEPS["preprocess"].__doc__) in help_text
    for argument in STEPS["preprocess"].arguments():
        assert f"--{argument.name}" in help_text
        assert flat(argument.help) in help_text
        assert ("(required)" if argument.required else f"(default: {argument.default})") in help_text


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """generate, then preprocess, each through torchx: the dataset the later steps read."""
    root = tmp_path_factory.mktemp("torchx")
    done = torchx(root / "logs", "generate", "--output", str(root / "raw"),
                  "--users", str(TINY_PARAMS["generate_users"]), "--campaigns", str(TINY_PARAMS["generate_campaigns"]))
    assert done.returncode == 0, done.stdout + done.stderr
    done = torchx(root / "logs", "preprocess", "--input", str(root / "raw"), "--output", str(root / "dataset"),
                  "--cold_threshold", str(TINY_PARAMS["preprocess_cold_threshold"]))
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "dataset"


def test_generate_and_preprocess_run_through_torchx(dataset: Path) -> None:
    assert (dataset / "_SUCCESS").exists()
    assert list((dataset.parent / "logs").rglob("preprocess/0/stdout.log"))  # --scheduler_args log_dir kept


def test_a_failed_step_fails_the_torchx_run(tmp_path: Path) -> None:
    done = torchx(tmp_path, "preprocess", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "out"))
    assert done.returncode != 0
    log = next(tmp_path.rglob("preprocess/0/stderr.log")).read_text()
    assert "metaheac preprocess: error:" in log


def test_train_adapt_evaluate_run_through_torchx(dataset: Path) -> None:
    root = dataset.parent
    common = ["--dataset", str(dataset)]
    done = torchx(root / "logs", "train", "-j", "1x2", *common, "--output", str(root / "model"), "--method",
                  "MetaHeac", "--device", "cpu", "--max_steps", "2", "--batch_size", "64")
    assert done.returncode == 0, done.stdout + done.stderr
    done = torchx(root / "logs", "adapt", *common, "--model", str(root / "model"), "--output", str(root / "scores"),
                  "--epochs", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    done = torchx(root / "logs", "evaluate", *common, "--scores", str(root / "scores"), "--output",
                  str(root / "evaluation"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "evaluation" / "report.html").exists()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO((folder / "model.pt").read_bytes()), weights_only=True)


def test_two_ranks_equal_one_process_with_their_tasks(dataset: Path) -> None:
    """2 CPU ranks (gloo) with T tasks each step the same as 1 process with the 2T tasks, within float error.

    The hook's contract: every rank draws the same 2T tasks from the same generator and keeps its slice,
    averages the dense and the sparse (embedding row) gradients before the optimiser step, and only rank 0
    writes the model.
    """
    root = dataset.parent
    train = ["--dataset", str(dataset), "--method", "MetaHeac", "--device", "cpu", "--max_steps", "3",
             "--batch_size", "32", "--seed", "5"]
    done = torchx(root / "logs", "train", "-j", "1x2", *train, "--task_count", "2", "--output", str(root / "ddp"))
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout + done.stderr  # one summary line for the job, and none of torch's or TorchX's warnings
    assert said.count("metaheac train: done: ") == 1, said
    assert "Sparse invariant" not in said and "CUDA_VISIBLE_DEVICES" not in said and "OMP_NUM_THREADS" not in said
    cli = [a.replace("_", "-") if a.startswith("--") else a for a in train]
    # its checkpoint outside the output: a finished run's own OUTPUT/checkpoint is not kept
    assert metaheac(["train", *cli, "--task-count", "4", "--output", str(root / "single"),
                     "--checkpoint", str(root / "single-checkpoint")]) == 0
    ddp, single = _weights(root / "ddp"), _weights(root / "single")
    assert ddp.keys() == single.keys()
    for name in ddp:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-4, atol=1e-5, msg=name)
    # 2 ranks cannot resume the 1-process checkpoint: the ranks' error is the role's last line
    done = torchx(root / "logs", "train", "-j", "1x2", *train, "--task_count", "2", "--output", str(root / "again"),
                  "--checkpoint", str(root / "single-checkpoint"))
    assert done.returncode != 0
    role = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("train/0 ")]
    assert role[-1].startswith("train/0 torchrun: exit code ") and "written by 1 process(es)" in role[-1], role
    assert not any("ChildFailedError" in line for line in role), role
