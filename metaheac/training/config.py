"""Meta-training hyper-parameters (official defaults) and the device they ask for."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from metaheac.data.errors import InputError, quote

Sampling = Literal["normal", "sqrt", "unit"]


@dataclass(frozen=True)
class MetaTrainConfig:
    task_count: int = 5  # campaigns per meta-step
    sampling: Sampling = "normal"  # campaign probability ∝ its stage-1 rows, their sqrt, or uniform
    batch_size: int = 512  # support rows, and as many query rows, per task
    inner_lr: float = 2e-4  # alpha: one SGD step on the support batch, differentiated through
    outer_lr: float = 1e-3  # beta: Adam on the mean query loss
    epochs: int = 1  # one epoch = ceil(stage-1 training rows / batch_size) meta-steps
    max_steps: int | None = None  # a cap, for tests and benchmarks
    seed: int = 2020  # seeds task sampling; seed the model's init yourself (torch.manual_seed)
    # Between checkpoints (when a checkpoint URI is given): this many meta-steps, or with None this many
    # seconds, so that a kill loses minutes whatever the step time.
    checkpoint_every: int | None = None
    checkpoint_seconds: float = 300.0
    device: str = "auto"  # "auto": CUDA when present, else CPU

    def __post_init__(self) -> None:
        if self.sampling not in ("normal", "sqrt", "unit"):
            raise ValueError(f"sampling must be normal, sqrt or unit, got {self.sampling!r}")
        if min(self.task_count, self.batch_size, self.epochs, self.checkpoint_every or 1) < 1:
            raise ValueError("task_count, batch_size, epochs and checkpoint_every must be >= 1")
        if self.checkpoint_seconds <= 0:
            raise ValueError("checkpoint_seconds must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def total_steps(self, stage1_rows: int) -> int:
        steps = self.epochs * -(-stage1_rows // self.batch_size)
        return steps if self.max_steps is None else min(steps, self.max_steps)


def resolve_device(spec: str) -> torch.device:
    """The device a spec names; "auto" is CUDA when present, else CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise InputError(f"--device {quote(spec)}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        found = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA"
        raise InputError(f"--device {quote(spec)}: this machine has {found}; use --device cpu or auto")
    return device
