"""Meta-training tasks: campaigns drawn by weight, each with disjoint support and query batches.

Rows are sorted by campaign, so a campaign is a contiguous range [offset, offset + count) and a
batch is a random subset of that range, drawn on the rows' device with a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaheac.data.tensors import Rows
from metaheac.training.config import Sampling


@dataclass
class Tasks:
    """One meta-step's tasks; support and query are [tasks, batch] indexes into the Rows."""

    campaign: torch.Tensor  # int64 [T]
    support: torch.Tensor  # int64 [T, B]
    query: torch.Tensor  # int64 [T, B]
    weight: torch.Tensor  # float32 [T, B]: 1 for a real row, 0 for padding (same for support and query)

    def to(self, device: torch.device | str) -> Tasks:
        return Tasks(self.campaign.to(device), self.support.to(device), self.query.to(device), self.weight.to(device))

    @property
    def row_count(self) -> int:
        """Real support + query rows (a host sync)."""
        return 2 * int(self.weight.sum().item())


def distinct(n: int, k: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """k distinct integers of [0, n), uniformly, in random order; O(k log k) when k is small against n.

    Draws with replacement and keeps each value's first draw: sampling without replacement, one by
    one, is exactly that. A campaign can hold millions of rows, so no full permutation of them.
    """
    if 4 * k >= n:
        return torch.randperm(n, generator=generator, device=device)[:k]
    while True:  # 2k draws from n > 4k miss k distinct values only with a vanishing probability
        draws = torch.randint(n, (2 * k,), generator=generator, device=device)
        value, position = draws.sort(stable=True)  # equal values keep their draw order
        first = torch.ones_like(value, dtype=torch.bool)
        first[1:] = value[1:] != value[:-1]
        positions = position[first].sort().values
        if len(positions) >= k:
            return draws[positions[:k]]


def campaign_weights(counts: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Unnormalised draw weights; a campaign with < 2 rows cannot give disjoint batches and gets 0."""
    counts = counts.double()
    weights = {"normal": counts, "sqrt": counts.sqrt(), "unit": torch.ones_like(counts)}[sampling]
    return torch.where(counts >= 2, weights, 0.0)


class TaskSampler:
    """Draws `task_count` campaigns with replacement (independent draws), then per campaign a support
    and a disjoint query batch of `batch_size` rows without replacement.

    A campaign with n < 2 * batch_size rows gives each batch floor(n / 2) rows, padded to batch_size
    with weight-0 rows, so every task keeps the same shape and the loss averages only real rows.
    """

    def __init__(
        self, rows: Rows, task_count: int, batch_size: int, sampling: Sampling, generator: torch.Generator
    ) -> None:
        if len(rows) and bool((rows.campaign[1:] < rows.campaign[:-1]).any()):
            raise ValueError("meta-training rows must be sorted by campaign")
        self.counts = torch.bincount(rows.campaign)
        self.offsets = self.counts.cumsum(0) - self.counts
        self.weights = campaign_weights(self.counts, sampling)
        if not bool((self.weights > 0).any()):
            raise ValueError("no training campaign has the 2 rows a support and a query batch need")
        self.task_count, self.batch_size, self.generator = task_count, batch_size, generator

    def sample(self) -> Tasks:
        g, b = self.generator, self.batch_size
        campaign = torch.multinomial(self.weights, self.task_count, replacement=True, generator=g)
        half = torch.clamp(self.counts[campaign] // 2, max=b)
        picks = []
        for n, h in zip(self.counts[campaign].tolist(), half.tolist(), strict=True):
            drawn = distinct(n, 2 * h, g, campaign.device)
            picks.append(F.pad(drawn.view(2, h), (0, b - h)))  # [support; query], padded
        rows = torch.stack(picks, dim=1) + self.offsets[campaign][None, :, None]
        weight = (torch.arange(b, device=campaign.device) < half[:, None]).float()
        return Tasks(campaign, rows[0], rows[1], weight)
