"""Weighted bag sums over a table's rows, differentiable any number of times.

The batched meta-training pools a step's embeddings with these instead of F.embedding followed by a
masked mean: one fused pass per direction, and no [entries, dim] gather (at the Tencent sizes a step
would allocate several 37 MB ones, and on CPU each fresh allocation of that size pays page faults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class BagPlan:
    """Bag b sums weight[e] * table[index[e]] over its entries e = offsets[b] .. offsets[b + 1] - 1.

    The transpose sums, into every table row, the weighted bags that read it: it is the forward's
    gradient, and the forward is the transpose's, so the pair differentiates as often as asked (the
    inner step needs twice).
    """

    # Indexes are int32: embedding_bag runs ~1.5x faster on them than on int64 (CPU, one thread).
    index: torch.Tensor  # int32 [E] table row of each entry, entries grouped by bag
    offsets: torch.Tensor  # int32 [bags]
    weight: torch.Tensor  # [E], the table's dtype
    row_bags: torch.Tensor  # int32 [E] bag of each entry, entries grouped by table row
    row_offsets: torch.Tensor  # int32 [table rows]
    row_weight: torch.Tensor  # [E]

    @classmethod
    def build(
        cls, index: torch.Tensor, bag: torch.Tensor, weight: torch.Tensor, sizes: tuple[int, int], by_row: torch.Tensor
    ) -> BagPlan:
        """Entries sorted by `bag`; sizes = (bags, table rows); `by_row` sorts the entries by `index`."""
        bags, rows = sizes
        offsets, row_offsets = _starts(bag, bags), _starts(index, rows)
        return cls(index.int(), offsets.int(), weight, bag[by_row].int(), row_offsets.int(), weight[by_row])

    def transposed(self) -> BagPlan:
        return BagPlan(self.row_bags, self.row_offsets, self.row_weight, self.index, self.offsets, self.weight)


def _starts(group: torch.Tensor, groups: int) -> torch.Tensor:
    """Where each of the groups 0..groups-1 starts in entries sorted by `group` (empty ones too)."""
    counts = torch.bincount(group, minlength=groups)
    return counts.cumsum(0) - counts


def bag_sum(table: torch.Tensor, plan: BagPlan) -> torch.Tensor:
    """[bags, dim]: each bag's weighted sum of table rows (see BagPlan)."""
    return _BagSum.apply(table, plan)


class _BagSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, plan: BagPlan) -> torch.Tensor:
        ctx.plan = plan  # index tensors only: nothing autograd needs to version-check
        return F.embedding_bag(plan.index, table, plan.offsets, mode="sum", per_sample_weights=plan.weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _BagSum.apply(grad.contiguous(), ctx.plan.transposed()), None
