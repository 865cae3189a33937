"""Shared by the component, TorchX, pipeline and schedule tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[1]
BUILD_LOCK = ROOT / "runs" / ".image-build.lock"  # docker/build.sh runs one at a time (pytest-xdist workers)
# Tiny data: 2,000 users, 16 campaigns (half cold, half hot at 18 seed positives), a few training steps.
TINY_PARAMS = {
    "generate_users": 2000,
    "generate_campaigns": 16,
    "preprocess_cold_threshold": 18,
    "train_max_steps": 3,
    "train_batch_size": 64,
    "adapt_epochs": 1,
}


def venv_env() -> dict[str, str]:
    """The environment with this venv's bin first on PATH: TorchX's local_cwd starts `metaheac`, `torchrun`."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def params(names: set[str], **overrides: object) -> list[str]:
    """--param NAME=VALUE arguments for the tiny run, limited to the pipeline's parameters `names`."""
    chosen = {k: v for k, v in {**TINY_PARAMS, **overrides}.items() if k in names}
    return [f"--param={k}={v}" for k, v in chosen.items()]


def compiled(tmp_path: Path, *options: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, platform spec) of `python -m pipelines compile <options>`."""
    path = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(path), *options]) == 0
    spec, *platform = yaml.safe_load_all(path.read_text())
    return spec, platform[0] if platform else {}


def producers(task: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Input artifact -> (producer task, its output) of a compiled task."""
    artifacts = task.get("inputs", {}).get("artifacts", {})
    return {
        name: (a["taskOutputArtifact"]["producerTask"], a["taskOutputArtifact"]["outputArtifactKey"])
        for name, a in artifacts.items()
    }
