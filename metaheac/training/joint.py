"""Plain joint pre-training: one network on every training campaign's stage-1 rows, shuffled together.

It trains the general model of "MLP+pre-training", "Shared-Bottom+pre-training", "MMoE+pre-training"
and "MetaHeac w/o Meta". A batch touches a few thousand of the tables' rows (Tencent's kw1 alone has
263k), so the tables take sparse gradients and step with row-wise lazy Adam (`lazy_adam.py`), the rest
with Adam: the same optimisers as meta-training. Unlike meta-training, a first-order step can take
nn.Embedding's own sparse gradients (they are not twice differentiable, which is why `meta.py` builds
its sparse gradients by hand); they are coalesced (one entry per row) for LazyAdam.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from metaheac.data.tensors import Features, Rows
from metaheac.model.embedding import FieldEmbeddings
from metaheac.model.network import Network
from metaheac.training.config import resolve_device
from metaheac.training.lazy_adam import LazyAdam
from metaheac.training.meta import TrainResult

_PROGRESS_EVERY = 50  # steps between loss read-backs for the progress bar (each one a device sync)


@dataclass(frozen=True)
class JointTrainConfig:
    lr: float = 1e-3  # Adam, as the meta-training's outer step
    batch_size: int = 512
    epochs: int = 1  # one epoch = every training row once
    max_steps: int | None = None  # a cap, for tests and benchmarks
    seed: int = 2020  # seeds the shuffling; seed the model's init yourself (torch.manual_seed)
    device: str = "auto"  # "auto": CUDA when present, else CPU

    def __post_init__(self) -> None:
        if min(self.batch_size, self.epochs) < 1 or self.lr <= 0:
            raise ValueError("batch_size and epochs must be >= 1 and lr > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def total_steps(self, rows: int) -> int:
        steps = self.epochs * -(-rows // self.batch_size)
        return steps if self.max_steps is None else min(steps, self.max_steps)


@contextmanager
def sparse_gradients(embeddings: FieldEmbeddings) -> Iterator[list[torch.Tensor]]:
    """The tables' weights, which take sparse gradients inside the block."""
    tables = embeddings.tables()
    before = [t.sparse for t in tables]
    for t in tables:
        t.sparse = True
    try:
        yield [t.weight for t in tables]
    finally:
        for t, sparse in zip(tables, before, strict=True):
            t.sparse = sparse


def joint_train(
    model: Network, features: Features, rows: Rows, config: JointTrainConfig | None = None, progress: bool = True
) -> TrainResult:
    """Train `model` (a network with `embeddings` and `dense_parameters()`) in place with BCE on `rows`."""
    config = config or JointTrainConfig()
    if not len(rows):
        raise ValueError("joint training got no rows: pass the training campaigns' stage-1 rows")
    device = resolve_device(config.device)
    model.to(device)
    features, rows = features.to(device), rows.to(device)
    generator = torch.Generator(device).manual_seed(config.seed)
    dense_optimizer = torch.optim.Adam(model.dense_parameters().values(), lr=config.lr)
    total, step, used, pending = config.total_steps(len(rows)), 0, 0, []
    started = time.perf_counter()
    with (
        sparse_gradients(model.embeddings) as tables,
        tqdm(total=total, disable=not progress, desc="joint-train", unit="step") as bar,
    ):
        table_optimizer = LazyAdam(tables, lr=config.lr)
        while step < total:
            for index in torch.randperm(len(rows), generator=generator, device=device).split(config.batch_size):
                picked = rows.select(index)
                probability = model(features.batch(picked.campaign, picked.user))
                loss = F.binary_cross_entropy(probability, picked.label.to(probability.dtype))
                dense_optimizer.zero_grad(set_to_none=True)
                table_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for w in tables:
                    if w.grad is not None:
                        w.grad = w.grad.coalesce()
                dense_optimizer.step()
                table_optimizer.step()
                pending.append(loss.detach())
                step, used = step + 1, used + len(index)
                bar.update()
                if progress and step % _PROGRESS_EVERY == 0:
                    bar.set_postfix(loss=f"{pending[-1].item():.4f}")
                if step == total:
                    break
    losses = torch.stack(pending).tolist()  # one device sync, at the end
    seconds = time.perf_counter() - started
    return TrainResult(losses, step, seconds, used / seconds)
