"""Meta-training hyper-parameters (official defaults) and the device they ask for."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch

from metaheac.data.errors import InputError, quote

Sampling = Literal["normal", "sqrt", "unit"]
# torch.set_float32_matmul_precision's levels: "highest" keeps float32 products; "medium" lets them run on
# bfloat16 operands with float32 sums where the CPU has AMX or AVX512-BF16 (oneDNN; TF32 on CUDA).
MatmulPrecision = Literal["highest", "high", "medium"]
MATMUL_PRECISIONS: tuple[str, ...] = get_args(MatmulPrecision)


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
    # The meta-step's float32 products. "medium": ~1.4x faster steps on a CPU with AMX, and quality the
    # same as float32's ("highest", the paper's arithmetic) within 0.001 over 3 seeds of generated and real
    # data (bench/README.md, "Twelfth round"); on other CPUs the two are the same.
    matmul_precision: MatmulPrecision = "medium"

    def __post_init__(self) -> None:
        if self.sampling not in ("normal", "sqrt", "unit"):
            raise ValueError(f"sampling must be normal, sqrt or unit, got {self.sampling!r}")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)}, "
                             f"got {self.matmul_precision!r}")
        if min(self.task_count, self.batch_size, self.epochs, self.checkpoint_every or 1) < 1:
            raise ValueError("task_count, batch_size, epochs and checkpoint_every must be >= 1")
        if self.checkpoint_seconds <= 0:
            raise ValueError("checkpoint_seconds must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def total_steps(self, stage1_rows: int) -> int:
        steps = self.epochs * -(-stage1_rows // self.batch_size)
        return steps if self.max_steps is None else min(steps, self.max_steps)


@contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """torch's float32 matmul precision set to `precision` inside, and put back after (it is process-wide)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


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
