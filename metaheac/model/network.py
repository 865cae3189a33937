"""The network contract every method's network implements: MetaHeac's and each baseline.

Training and adaptation see a network only through it: `schema`, `config`, the field `embeddings`
(`embeddings.tables()`), the named `dense_parameters()` and a functional `predict(params, user,
campaign)` over pooled user embeddings [..., B, F_u, d] and campaign embeddings [..., B or 1, F_c, d],
where the parameters may carry a leading task dimension. Adaptation trains its own small tables and
dense copies and calls `predict` with them; meta-training calls it with per-task fast weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Batch
from metaheac.model.config import ModelConfig
from metaheac.model.embedding import FieldEmbeddings

Params = Mapping[str, torch.Tensor]


class Network(nn.Module):
    """Field embeddings plus named dense parameters; `forward` runs `predict` on the module's own."""

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None, dim: int | None = None) -> None:
        super().__init__()
        self.schema = schema
        self.config = config = config or ModelConfig()
        dim = config.embedding_dim if dim is None else dim
        self.embeddings = FieldEmbeddings(schema, dim, config.init_std)
        self.user_width = self.embeddings.n_user_fields * dim  # G(u)
        self.campaign_width = len(schema.campaign_fields) * dim
        self.dense_names: list[str] = []

    def add(self, name: str, shape: tuple[int, ...], fan_in: int) -> None:
        """A dense parameter, drawn like nn.Linear's default init."""
        bound = 1.0 / math.sqrt(fan_in)
        self.register_parameter(name, nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))
        self.dense_names.append(name)

    def add_linear(self, name: str, fan_in: int, fan_out: int) -> None:
        self.add(f"{name}_w", (fan_in, fan_out), fan_in)
        self.add(f"{name}_b", (fan_out,), fan_in)

    def dense_parameters(self) -> dict[str, torch.Tensor]:
        """Every parameter but the embedding tables (read through getattr, so functional_call swaps them)."""
        return {name: getattr(self, name) for name in self.dense_names}

    def forward(self, batch: Batch) -> torch.Tensor:
        """Probabilities [B]."""
        return self.predict(self.dense_parameters(), self.embeddings.user(batch), self.embeddings.campaign(batch))

    def predict(self, p: Params, user: torch.Tensor, campaign: torch.Tensor) -> torch.Tensor:
        """Probabilities [..., B] from dense parameters `p` and pooled embeddings (module doc)."""
        raise NotImplementedError
