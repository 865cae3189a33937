"""Shared by the component, TorchX, pipeline and schedule tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
