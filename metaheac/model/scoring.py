"""Scoring batches of users with one adapted network, fast: the split first layer (`CampaignScorer`).

For MetaHeac, the first expert layer G(u) @ W0 (80% of a row's FLOPs) is split by field:
G(u) @ W0 = sum_f E_f(u) @ W0_f, and a field's E_f(u) is a weighted sum of its table's rows, so for a field
whose table fits the memory budget (`ScoreConfig.project_mb`), (T_f @ W0_f) is computed once per campaign and
the row's share is a lookup in it; the other fields go through the matmul. Same arithmetic, reassociated. The
lookups are bound by memory traffic: "auto" stores the pre-multiplied tables in float16 (half the bytes: the
bag runs 1.9x faster; it sums in float32 and rounds its result to float16, a relative error of ~5e-4 on the
first layer). Where the CPU has native bf16 (AVX512-BF16 / AMX), the matmul runs in bf16 ("auto"); elsewhere
bf16 is emulated and hundreds of times slower, so "auto" keeps float32 there. "float32" is exact. The rest of
the network runs through `HybridExpertsCritics.score_head`, one expert at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Literal, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F

from metaheac.model.embedding import embed_campaigns, mean_weights, pool_user_tables
from metaheac.model.heac import HybridExpertsCritics
from metaheac.model.network import Network

Precision = Literal["auto", "float32", "float16", "bfloat16"]


@dataclass(frozen=True)
class ScoreConfig:
    batch_size: int = 4096  # users per forward pass (CPU caches; see `adaptation.score`)
    # float32: exact; float16: pre-multiplied tables in float16; bfloat16: that and the large-field matmul in
    # bf16; auto: float16 tables, and the bf16 matmul where the CPU has it natively (module doc)
    precision: Precision = "auto"
    # Memory a campaign may spend on pre-multiplied tables: user fields are projected smallest table first
    # while they fit, the rest go through the matmul. Each table row costs (first layer + d) values: every
    # field at the Tencent sizes takes 0.37 GB in float16 (0.73 in float32; kw1 alone 0.61) and scored
    # 1.03-1.4x faster than the small fields only (float32, A/B runs on a shared machine): a projected lookup
    # costs less than its share of the matmul.
    project_mb: float = 1024.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.project_mb < 0:
            raise ValueError("batch_size must be >= 1 and project_mb >= 0")


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: Precision, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(dtype of the pre-multiplied tables, dtype of the large-field matmul)."""
    if precision == "float32":
        return torch.float32, torch.float32
    native = precision == "auto" and (device.type == "cuda" or native_bf16())
    return torch.float16, torch.bfloat16 if precision == "bfloat16" or native else torch.float32


# float16 tables keep values below this (a 16th of float16's largest): a campaign whose pre-multiplied rows
# exceed it keeps float32 tables, so that no sum of a row's lookups can overflow
_FLOAT16_SAFE = 65504.0 / 16
_PROJECT_ROWS = 65536  # table rows multiplied at a time: a bounded temporary (~150 MB for kw1's 512 columns)


def _project(tables: list[torch.Tensor], blocks: tuple[torch.Tensor, ...], fields: list[int], n_user: int,
             dtype: torch.dtype) -> torch.Tensor | None:
    """[T_f @ W0_f | T_f / F_u] for the `fields`, end to end, in `dtype`; None when float16 would overflow.
    One lookup then gives a field's share of the first layer and of the user mean."""
    hidden, d = blocks[0].shape[1], tables[0].shape[1]
    rows = sum(tables[f].shape[0] for f in fields)
    out = torch.empty((max(rows, 1), hidden + d), dtype=dtype, device=tables[0].device)
    at = 0
    for f in fields:
        for chunk in tables[f].split(_PROJECT_ROWS):
            product = chunk @ blocks[f]
            if dtype == torch.float16 and len(product) and max(-product.min(), product.max()) > _FLOAT16_SAFE:
                return None
            out[at : at + len(chunk), :hidden] = product
            out[at : at + len(chunk), hidden:] = chunk / n_user
            at += len(chunk)
    if not rows:
        out.zero_()
    return out


def _columns(columns: list[int], device: torch.device) -> slice | torch.Tensor:
    """A selector of these id columns: a slice (a view, no copy) where they are contiguous."""
    if columns and columns == list(range(columns[0], columns[-1] + 1)):
        return slice(columns[0], columns[-1] + 1)
    return torch.tensor(columns, dtype=torch.long, device=device)


def _offsets(tables: list[torch.Tensor], widths: list[int], device: torch.device) -> torch.Tensor:
    """For tables laid end to end, each id column's table offset (a table's `width` columns share it)."""
    starts = np.cumsum([0] + [t.shape[0] for t in tables])[:-1]
    return torch.tensor([int(o) for o, w in zip(starts, widths, strict=True) for _ in range(w)], dtype=torch.int32,
                        device=device)


class UserScorer(Protocol):
    """One campaign's scorer of batches of a user base's users (`adaptation.AdaptedModel.scorer`)."""

    @property
    def group(self) -> Hashable | None:
        """Scorers of one group (not None) score a batch together, by the first one's `batched`."""

    def batched(self, scorers: list[UserScorer]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """A scorer of probabilities [B, len(scorers)] for `scorers` of this one's group, each as it scores
        alone."""

    def __call__(self, single: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        """Probabilities [B] for users' ids [B, S] and [B, L]."""


class CampaignScorer:
    """A network with one campaign's dense parameters and tables (an adapted model's), ready to score
    batches of users (module doc: the split first layer)."""

    def __init__(self, network: Network, dense: dict[str, torch.Tensor], tables: list[torch.Tensor],
                 campaign_ids: torch.Tensor, config: ScoreConfig | None = None) -> None:
        config = config or ScoreConfig()
        device = next(network.parameters()).device
        self.network, self.dense, self.tables, self.campaign_ids = network, dense, tables, campaign_ids
        self.table_dtype, self.dtype = resolve_precision(config.precision, device)
        embeddings = network.embeddings
        n_user, n_single = embeddings.n_user_fields, len(embeddings.user_single)
        self.lengths = embeddings.list_lengths
        self.user_tables = tables[:n_user]
        self.campaign_emb = embed_campaigns(tables[n_user:], campaign_ids.to(device)[None])  # [1, F_c, d]
        self._local = threading.local()  # per scoring thread: a conversion buffer
        self.split = isinstance(network, HybridExpertsCritics)
        if not self.split:
            return
        # field f's id columns in [single | lists]; a field is "small" when its table is pre-multiplied
        widths = [1] * n_single + self.lengths
        starts = np.cumsum([0, *widths])
        tables = tables[:n_user]
        d = tables[0].shape[1]
        w0, b0 = (dense[name] for name in HybridExpertsCritics.FIRST_LAYER)
        # a campaign whose float16 rows would overflow keeps float32 ones: twice its budget, rarely
        row_bytes = (w0.shape[1] + d) * torch.finfo(self.table_dtype).bits // 8
        small, budget = [], config.project_mb * 2**20
        for f in sorted(range(n_user), key=lambda f: tables[f].shape[0]):
            budget -= tables[f].shape[0] * row_bytes
            if budget < 0:
                break
            small.append(f)
        small.sort()
        self.large = [f for f in range(n_user) if f not in small]
        self.small_columns = _columns([c for f in small for c in range(starts[f], starts[f + 1])], device)
        self.large_columns = _columns([c for f in self.large for c in range(starts[f], starts[f + 1])], device)
        blocks = w0.split(d)  # W0_f: field f's rows of the first layer
        projected = _project(tables, blocks, small, n_user, self.table_dtype)
        if projected is None:  # too large for float16
            self.table_dtype = torch.float32
            projected = _project(tables, blocks, small, n_user, self.table_dtype)
        assert projected is not None  # float32 never declines
        self.small_table = projected
        self.small_offsets = _offsets([tables[f] for f in small], [widths[f] for f in small], device)
        # the large fields' tables end to end, pooled in one call: a bag per (user, field), [B * fields, d]
        self.large_table = torch.cat([tables[f] for f in self.large]) if self.large else tables[0][:0]
        self.large_offsets = _offsets([tables[f] for f in self.large], [widths[f] for f in self.large], device)
        large_widths = [widths[f] for f in self.large]
        self.large_bags = torch.tensor(np.cumsum([0, *large_widths])[:-1], dtype=torch.int32, device=device)
        self.large_width = sum(large_widths)
        self.large_w0 = torch.cat([blocks[f] for f in self.large]).to(self.dtype) if self.large else None
        self.hidden, self.n_user = w0.shape[1], n_user
        # the first layer's bias, in the rows of a field every user looks up once with weight 1 (a single
        # field) when one is pre-multiplied: one add fewer per batch
        folded = next((f for f in small if f < n_single), None)
        self.b0 = b0 if folded is None else None  # added per batch only when not folded
        if folded is not None:
            at = sum(tables[f].shape[0] for f in small[: small.index(folded)])
            self.small_table[at : at + tables[folded].shape[0], : self.hidden] += b0.to(self.table_dtype)
        self.gates = cast(HybridExpertsCritics, network).campaign_gates(dense, self.campaign_emb)

    @property
    def group(self) -> Hashable | None:
        return None  # each campaign's network scores alone

    def batched(self, scorers: list[UserScorer]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda single, lists: torch.stack([s(single, lists) for s in scorers], 1)

    @torch.inference_mode()
    def __call__(self, single: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        """Probabilities [B] for users' ids [B, S] and [B, L]."""
        if not self.split:
            user = pool_user_tables(self.user_tables, single, lists, self.lengths)
            return self.network.predict(self.dense, user, self.campaign_emb)
        heac = cast(HybridExpertsCritics, self.network)  # the split path runs only for it (__init__)
        return heac.score_head(self.dense, *self.pool(single, lists), self.gates)

    def pool(self, single: torch.Tensor, lists: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The split path's user side: the experts' first layer before its ReLU [B, n * h] and the mean user
        embedding [B, d]."""
        ids = torch.cat([single, lists], 1).int()  # embedding_bag takes int32 ids: no int64 copy
        ones = torch.ones(single.shape, dtype=torch.float32)
        weights = torch.cat([ones, mean_weights(lists, self.lengths, torch.float32)], 1)
        if len(self.small_offsets):
            pooled = F.embedding_bag(ids[:, self.small_columns] + self.small_offsets, self.small_table, mode="sum",
                                     per_sample_weights=weights[:, self.small_columns].to(
                                         self.table_dtype, memory_format=torch.contiguous_format))
            if pooled.dtype != torch.float32:  # into this thread's buffer: a new one each batch page-faults
                buffer = getattr(self._local, "pooled", None)
                if buffer is None or buffer.shape[0] < len(pooled):
                    buffer = self._local.pooled = torch.empty(pooled.shape, device=pooled.device)
                pooled = buffer[: len(pooled)].copy_(pooled)
        else:
            pooled = torch.zeros((len(ids), self.small_table.shape[1]))
        expert_input = pooled[:, : self.hidden]  # views of `pooled`, added to in place
        if self.b0 is not None:
            expert_input.add_(self.b0)
        user_mean = pooled[:, self.hidden :]
        if self.large:
            n = len(ids)
            starts = torch.arange(0, n * self.large_width, self.large_width, dtype=torch.int32, device=ids.device)
            bags = (starts[:, None] + self.large_bags).flatten()
            flat = F.embedding_bag((ids[:, self.large_columns] + self.large_offsets).flatten(), self.large_table,
                                   bags, mode="sum", per_sample_weights=weights[:, self.large_columns].flatten(),
                                   ).view(n, -1)  # [B, large fields * d]
            w0 = self.large_w0
            assert w0 is not None  # set whenever there are large fields
            if self.dtype == torch.float32:
                expert_input.addmm_(flat, w0)
            else:
                expert_input.add_((flat.to(self.dtype) @ w0).float())
            user_mean.add_(flat.view(n, len(self.large), -1).sum(1), alpha=1 / self.n_user)
        return expert_input, user_mean

