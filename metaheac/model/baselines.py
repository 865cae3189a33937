"""The paper's baselines on the same field embeddings as MetaHeac: LR, MLP, Shared-Bottom and MMoE.

Each is written like `HybridExpertsCritics`: named dense parameters and `predict(params, user, campaign)`
over pooled user embeddings [..., B, F_u, d] and campaign embeddings [..., B or 1, F_c, d], where the
parameters may carry a leading task dimension. The module function `predict` runs any network of the
zoo that way, so adaptation trains on its own tables and scores one shared campaign once, for all alike.
Campaigns play the tasks of the multi-task models: the shared bottom and the experts read only the user,
the gate and the tower read the campaign too.

Widths come from `ModelConfig`: `expert_hidden` for the MLP, the bottom, each expert, and (its last
width) the tower's hidden layer; `experts` for MMoE.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Batch
from metaheac.model.config import ModelConfig
from metaheac.model.embedding import FieldEmbeddings
from metaheac.model.heac import HybridExpertsCritics, Params


def predict(network: nn.Module, p: Params, user: torch.Tensor, campaign: torch.Tensor) -> torch.Tensor:
    """Probabilities [..., B] of any network of the zoo from parameters `p`, pooled user embeddings
    [..., B, F_u, d] and campaign embeddings [..., B or 1, F_c, d]."""
    if isinstance(network, HybridExpertsCritics):  # its head takes the experts' first layer and the user mean
        return network.head(p, network.expert_input(p, user), user.mean(-2), campaign)
    return network.predict(p, user, campaign)


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x [..., B, in] @ w [..., in, out] + b [..., out], with or without a leading task axis."""
    return x @ w + b.unsqueeze(-2)


def user_campaign_linear(user: torch.Tensor, campaign: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A linear layer on [user features, campaign features]; the weight is split by rows so that a
    campaign shared by all rows ([..., 1, in]) is multiplied once, not per row."""
    width = user.shape[-1]
    return linear(user, w[..., :width, :], b) + campaign @ w[..., width:, :]


class FunctionalNetwork(nn.Module):
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
        raise NotImplementedError


class LogisticRegression(FunctionalNetwork):
    """sigmoid(bias + a weight per user and campaign field value): 1-dim embeddings summed.

    A list field contributes the mean weight of its ids, as its embedding is the mean. Starts at zero
    (the problem is convex, and a fresh per-campaign model then needs no seed).
    """

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None = None) -> None:
        super().__init__(schema, config, dim=1)
        with torch.no_grad():
            for table in self.embeddings.tables():
                table.weight.zero_()
        self.register_parameter("bias", nn.Parameter(torch.zeros(1)))
        self.dense_names.append("bias")

    def predict(self, p: Params, user: torch.Tensor, campaign: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(user.sum((-1, -2)) + campaign.sum((-1, -2)) + p["bias"])


class MLP(FunctionalNetwork):
    """[G(u), campaign embeddings] -> MLP(expert_hidden, ReLU) -> Linear -> sigmoid."""

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None = None) -> None:
        super().__init__(schema, config)
        widths = (self.user_width + self.campaign_width, *self.config.expert_hidden)
        for k in range(len(widths) - 1):
            self.add_linear(f"layer{k}", widths[k], widths[k + 1])
        self.add_linear("out", widths[-1], 1)

    def predict(self, p: Params, user: torch.Tensor, campaign: torch.Tensor) -> torch.Tensor:
        h = torch.relu(user_campaign_linear(user.flatten(-2), campaign.flatten(-2), p["layer0_w"], p["layer0_b"]))
        for k in range(1, len(self.config.expert_hidden)):
            h = torch.relu(linear(h, p[f"layer{k}_w"], p[f"layer{k}_b"]))
        return torch.sigmoid(linear(h, p["out_w"], p["out_b"]).squeeze(-1))


class _Tower(FunctionalNetwork):
    """A user representation (subclass) -> tower on [it, campaign embeddings]: Linear-ReLU-Linear-sigmoid."""

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None) -> None:
        super().__init__(schema, config)
        width = self.config.expert_hidden[-1]
        self.add_linear("tower0", width + self.campaign_width, width)
        self.add_linear("tower1", width, 1)

    def tower(self, p: Params, r: torch.Tensor, campaign: torch.Tensor) -> torch.Tensor:
        h = torch.relu(user_campaign_linear(r, campaign.flatten(-2), p["tower0_w"], p["tower0_b"]))
        return torch.sigmoid(linear(h, p["tower1_w"], p["tower1_b"]).squeeze(-1))


class SharedBottom(_Tower):
    """Shared bottom MLP(expert_hidden) on G(u), then the campaign-conditioned tower."""

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None = None) -> None:
        super().__init__(schema, config)
        widths = (self.user_width, *self.config.expert_hidden)
        for k in range(len(widths) - 1):
            self.add_linear(f"bottom{k}", widths[k], widths[k + 1])

    def predict(self, p: Params, user: torch.Tensor, campaign: torch.Tensor) -> torch.Tensor:
        h = user.flatten(-2)
        for k in range(len(self.config.expert_hidden)):
            h = torch.relu(linear(h, p[f"bottom{k}_w"], p[f"bottom{k}_b"]))
        return self.tower(p, h, campaign)


class MMoE(_Tower):
    """n expert MLPs on G(u), mixed by a softmax gate (one linear layer, MMoE's) on [mean user
    embedding, campaign embeddings], then the campaign-conditioned tower."""

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None = None) -> None:
        super().__init__(schema, config)
        n, hidden, d = self.config.experts, self.config.expert_hidden, self.config.embedding_dim
        # Every expert's first layer side by side: one [B, G] x [G, n*h] matmul instead of n small ones.
        self.add("expert0_w", (self.user_width, n * hidden[0]), self.user_width)
        self.add("expert0_b", (n * hidden[0],), self.user_width)
        for k in range(1, len(hidden)):
            self.add(f"expert{k}_w", (n, hidden[k - 1], hidden[k]), hidden[k - 1])
            self.add(f"expert{k}_b", (n, hidden[k]), hidden[k - 1])
        self.add_linear("gate", d + self.campaign_width, n)

    def predict(self, p: Params, user: torch.Tensor, campaign: torch.Tensor) -> torch.Tensor:
        n, hidden = self.config.experts, self.config.expert_hidden
        gate = torch.softmax(user_campaign_linear(user.mean(-2), campaign.flatten(-2), p["gate_w"], p["gate_b"]), -1)
        h = torch.relu(linear(user.flatten(-2), p["expert0_w"], p["expert0_b"]))
        h = h.unflatten(-1, (n, hidden[0])).transpose(-2, -3)  # [..., n, B, h]
        for k in range(1, len(hidden)):
            h = torch.relu(linear(h, p[f"expert{k}_w"], p[f"expert{k}_b"]))
        r = (gate.transpose(-1, -2).unsqueeze(-1) * h).sum(-3)
        return self.tower(p, r, campaign)
