"""Field embeddings shared by MetaHeac and every baseline.

A single-valued field is one lookup; a list field is the masked mean over its valid ids
(id 0 is padding, an empty list embeds to zeros).
"""

from __future__ import annotations

import torch
from torch import nn

from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Batch


def list_weights(ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Each id's weight in its list's mean (last axis): 1 / (valid ids) where `ids` != 0, else 0."""
    mask = (ids != 0).to(dtype)
    return mask / mask.sum(-1, keepdim=True).clamp(min=1.0)


def masked_mean(embedded: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean over the list axis (-2) of `embedded` where `ids` != 0; zeros for an empty list."""
    return (embedded * list_weights(ids, embedded.dtype).unsqueeze(-1)).sum(-2)


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
