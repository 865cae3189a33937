"""Field embeddings shared by MetaHeac and every baseline.

A single-valued field is one lookup; a list field is the masked mean over its valid ids
(id 0 is padding, an empty list embeds to zeros).
"""

from __future__ import annotations

import torch
from torch import nn

from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Batch


def masked_mean(embedded: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean over the list axis (-2) of `embedded` where `ids` != 0; zeros for an empty list."""
    mask = (ids != 0).unsqueeze(-1).to(embedded.dtype)
    count = mask.sum(-2).clamp(min=1.0)
    return (embedded * mask).sum(-2) / count


class FieldEmbeddings(nn.Module):
    """One table per field; `user` gives [B, n_user_fields, dim], `campaign` [B, n_ad_fields, dim]."""

    def __init__(self, schema: DatasetSchema, dim: int) -> None:
        super().__init__()
        self.list_lengths = schema.list_lengths
        self.user_single = nn.ModuleList(nn.Embedding(f.vocab_size, dim) for f in schema.user_single)
        self.user_lists = nn.ModuleList(nn.Embedding(f.vocab_size, dim) for f in schema.user_lists)
        self.campaign_fields = nn.ModuleList(
            nn.Embedding(f.vocab_size, dim) for f in schema.campaign_fields
        )

    @property
    def n_user_fields(self) -> int:
        return len(self.user_single) + len(self.user_lists)

    def user(self, batch: Batch) -> torch.Tensor:
        single = [table(batch.user_single[:, i]) for i, table in enumerate(self.user_single)]
        pooled = [
            masked_mean(table(ids), ids)
            for table, ids in zip(
                self.user_lists, batch.user_lists.split(self.list_lengths, dim=1), strict=True
            )
        ]
        return torch.stack(single + pooled, dim=1)

    def campaign(self, batch: Batch) -> torch.Tensor:
        return torch.stack(
            [table(batch.campaign[:, i]) for i, table in enumerate(self.campaign_fields)], dim=1
        )
