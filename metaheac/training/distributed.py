"""Collectives for data-parallel meta-training (torchrun): each rank computes the meta-gradient of its
slice of a step's tasks, and these average it over the ranks before the optimiser steps.

`process_group` joins torchrun's group; outside one (or with one rank) `world()` is (0, 1) and meta-training
calls no collective.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Under torchrun (WORLD_SIZE > 1, no group yet) joins the default process group for the block (nccl
    on CUDA, gloo on CPU) and yields this rank's device, cuda:LOCAL_RANK on CUDA; else yields `device`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def broadcast_state(module: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (state_dict tensors share their storage)."""
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def average_dense(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors averaged over the ranks, in one all-reduce of their concatenation."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors, strict=True)]


def _gather_padded(tensor: torch.Tensor, counts: list[int], dim: int) -> torch.Tensor:
    """Every rank's `tensor` (counts[r] entries along `dim`) concatenated along `dim`. all_gather needs
    one shape on every rank, so each pads to the largest count first."""
    pad = list(tensor.shape)
    pad[dim] = max(counts) - tensor.shape[dim]
    padded = torch.cat([tensor, tensor.new_zeros(pad)], dim=dim)
    gathered = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return torch.cat([g.narrow(dim, 0, n) for g, n in zip(gathered, counts, strict=True)], dim=dim)


def average_sparse(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sparse COO tensors averaged over the ranks, coalesced. There is no sparse all-reduce: gather
    every rank's indices and values, then coalesce (which sums the rows several ranks name)."""
    w = dist.get_world_size()
    device = grads[0].device
    mine = torch.tensor([g._nnz() for g in grads], device=device)
    everyone = [torch.empty_like(mine) for _ in range(w)]
    dist.all_gather(everyone, mine)
    counts = torch.stack(everyone, dim=1).tolist()  # [tensor][rank]
    averaged = []
    for g, n in zip(grads, counts, strict=True):
        indices = _gather_padded(g._indices(), n, dim=1)
        values = _gather_padded(g._values(), n, dim=0) / w
        # gathered from coalesced gradients: valid indices, so the (costly) invariant checks stay off, explicitly
        averaged.append(torch.sparse_coo_tensor(indices, values, g.shape, check_invariants=False).coalesce())
    return averaged
