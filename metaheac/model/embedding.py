"""Field embeddings shared by MetaHeac and every baseline, and the one pooling and gather code that
meta-training, adaptation and scoring share.

A single-valued field is one lookup; a list field is the masked mean over its valid ids
(id 0 is padding, an empty list embeds to zeros).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Batch


def list_weights(ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Each id's weight in its list's mean (last axis): 1 / (valid ids) where `ids` != 0, else 0."""
    mask = (ids != 0).to(dtype)
    return mask / mask.sum(-1, keepdim=True).clamp(min=1.0)


def mean_weights(list_ids: torch.Tensor, list_lengths: list[int], dtype: torch.dtype) -> torch.Tensor:
    """Every list id's weight in its field's masked mean, [..., L] for list ids [..., L] side by side."""
    return torch.cat([list_weights(ids, dtype) for ids in list_ids.split(list_lengths, dim=-1)], dim=-1)


Bag = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]


def fused_bag(table: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """sum_j weights[..., j] * table[ids[..., j]]: [..., L] -> [..., dim], one fused pass, no [..., L, dim]
    (embedding_bag: differentiable once)."""
    flat = ids.reshape(-1, ids.shape[-1])
    pooled = F.embedding_bag(flat, table, mode="sum", per_sample_weights=weights.reshape(flat.shape), sparse=sparse)
    return pooled.view(*ids.shape[:-1], table.shape[-1])


def gathered_bag(table: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """`fused_bag` through a [..., L, dim] gather: differentiable any number of times (second-order MAML
    through the module's forward, as the reference loop does)."""
    return (F.embedding(ids, table, sparse=sparse) * weights.unsqueeze(-1)).sum(-2)


def pool_users(
    tables: list[torch.Tensor],
    single_ids: torch.Tensor,
    list_ids: torch.Tensor,
    weights: torch.Tensor,
    list_lengths: list[int],
    bag: Bag = fused_bag,
    sparse: bool = False,
) -> torch.Tensor:
    """Pooled user field embeddings [..., S + len(list_lengths), dim] over given tables, one per user
    field, from ids [..., S] and [..., L] (L = sum of list lengths). A list is the sum of its ids' rows
    with `weights` [..., L] (`mean_weights` of the original ids: the masked mean). `sparse`: the tables
    get sparse gradients."""
    n_single = single_ids.shape[-1]
    single = [F.embedding(single_ids[..., i], table, sparse=sparse) for i, table in enumerate(tables[:n_single])]
    lists = [
        bag(table, ids, w, sparse)
        for table, ids, w in zip(
            tables[n_single:], list_ids.split(list_lengths, dim=-1), weights.split(list_lengths, dim=-1), strict=True
        )
    ]
    return torch.stack(single + lists, dim=-2)


def pool_user_tables(
    tables: list[torch.Tensor], single_ids: torch.Tensor, list_ids: torch.Tensor, list_lengths: list[int]
) -> torch.Tensor:
    """`pool_users` with the lists' masked means (`mean_weights`), as scoring pools a user."""
    weights = mean_weights(list_ids, list_lengths, tables[0].dtype)
    return pool_users(tables, single_ids, list_ids, weights, list_lengths)


def pool_one_table(
    table: torch.Tensor, single_ids: torch.Tensor, list_ids: torch.Tensor, weights: torch.Tensor,
    list_lengths: list[int],
) -> torch.Tensor:
    """`pool_users` [B, S + len(list_lengths), dim] when every field reads one table (a local table, whose
    rows the ids already are): one bag over all fields, so that its backward makes one dense gradient of
    the table, not one per field plus their sum (most of an adaptation step's time at the Tencent sizes)."""
    rows, n_single = single_ids.shape[0], single_ids.shape[1]
    ids = torch.cat([single_ids, list_ids], 1)
    values = torch.cat([weights.new_ones(single_ids.shape), weights], 1)
    widths = [1] * n_single + list(list_lengths)
    first = torch.tensor(np.cumsum([0, *widths[:-1]]), device=ids.device)
    offsets = (torch.arange(rows, device=ids.device)[:, None] * ids.shape[1] + first).flatten()
    pooled = F.embedding_bag(ids.flatten(), table, offsets, mode="sum", per_sample_weights=values.flatten())
    return pooled.view(rows, len(widths), table.shape[-1])


def embed_campaigns(tables: list[torch.Tensor], ids: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """Campaign field embeddings [..., F_c, dim] over given tables, one per campaign field, ids [..., F_c]."""
    return torch.stack([F.embedding(ids[..., i], table, sparse=sparse) for i, table in enumerate(tables)], dim=-2)


class TableLayout:
    """Every table laid end to end, for local tables (the rows some ids read, each once): table t's row i
    is key `starts[t] + i`, so sorting keys sorts rows by table, then id."""

    def __init__(self, embeddings: FieldEmbeddings, device: torch.device) -> None:
        self.tables = embeddings.tables()
        sizes = torch.tensor([table.num_embeddings for table in self.tables], device=device)
        self.ends = sizes.cumsum(0)
        self.starts = self.ends - sizes
        n_single, n_user = len(embeddings.user_single), embeddings.n_user_fields
        # The user field (= its table) of every user id column; campaign field i is table n_user + i.
        self.user_field = torch.tensor(
            [*range(n_single), *(n_single + i for i, n in enumerate(embeddings.list_lengths) for _ in range(n))],
            device=device,
        )
        campaign_table = torch.arange(n_user, len(self.tables), device=device)
        self.user_start = self.starts[self.user_field]
        self.campaign_start = self.starts[campaign_table]

    def user_keys(self, user_ids: torch.Tensor) -> torch.Tensor:
        """Keys of user id columns [..., K_u] (single fields, then list fields)."""
        return user_ids + self.user_start

    def campaign_keys(self, campaign_ids: torch.Tensor) -> torch.Tensor:
        """Keys of campaign id columns [..., K_c]."""
        return campaign_ids + self.campaign_start

    def table_ids(self, keys: torch.Tensor) -> list[torch.Tensor]:
        """Per table, the ids of sorted distinct `keys`."""
        table = torch.searchsorted(self.ends, keys, right=True)
        per_table = torch.bincount(table, minlength=len(self.tables)).tolist()
        return list((keys - self.starts[table]).split(per_table))

    def read(self, table_ids: list[torch.Tensor]) -> torch.Tensor:
        """The rows of `table_ids` (per table), end to end: a local table, detached from the tables. (Each
        table's rows are gathered in place: a cat of the gathered parts would copy them all again.)"""
        sizes, weight = [len(i) for i in table_ids], self.tables[0].weight
        out = weight.new_empty((sum(sizes), weight.shape[1]))
        for table, ids, part in zip(self.tables, table_ids, out.split(sizes), strict=True):
            torch.index_select(table.weight.detach(), 0, ids, out=part)
        return out


class FieldEmbeddings(nn.Module):
    """One table per field; `user` gives [B, n_user_fields, dim], `campaign` [B, n_ad_fields, dim].

    Tables start as N(0, init_std^2); 1.0 is torch's nn.Embedding default.
    """

    def __init__(self, schema: DatasetSchema, dim: int, init_std: float = 1.0) -> None:
        super().__init__()
        self.list_lengths = schema.list_lengths
        self.user_single = nn.ModuleList(nn.Embedding(f.vocab_size, dim) for f in schema.user_single)
        self.user_lists = nn.ModuleList(nn.Embedding(f.vocab_size, dim) for f in schema.user_lists)
        self.campaign_fields = nn.ModuleList(
            nn.Embedding(f.vocab_size, dim) for f in schema.campaign_fields
        )
        with torch.no_grad():  # scaling the default N(0, 1) draw keeps the RNG stream unchanged
            for table in self.tables():
                table.weight.mul_(init_std)

    @property
    def n_user_fields(self) -> int:
        return len(self.user_single) + len(self.user_lists)

    def tables(self) -> list[nn.Embedding]:
        """Every table, in id-column order: user single fields, user list fields, campaign fields."""
        return [*self.user_single, *self.user_lists, *self.campaign_fields]

    @property
    def sparse(self) -> bool:
        """Whether lookups give the tables sparse gradients (joint training switches it on)."""
        return any(table.sparse for table in self.tables())

    def user(self, batch: Batch) -> torch.Tensor:
        tables = [table.weight for table in [*self.user_single, *self.user_lists]]  # read now: functional_call
        weights = mean_weights(batch.user_lists, self.list_lengths, tables[0].dtype)
        lists, lengths = batch.user_lists, self.list_lengths
        return pool_users(tables, batch.user_single, lists, weights, lengths, gathered_bag, self.sparse)

    def campaign(self, batch: Batch) -> torch.Tensor:
        tables = [table.weight for table in self.tables()[self.n_user_fields :]]
        return embed_campaigns(tables, batch.campaign, self.sparse)
