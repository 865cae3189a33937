"""The paper's baselines on the same field embeddings as MetaHeac: LR, MLP, Shared-Bottom and MMoE.

Each implements the network contract (`network.Network`) like `HybridExpertsCritics`, so adaptation
trains on its own tables and scores one shared campaign once, for all alike.
Campaigns play the tasks of the multi-task models: the shared bottom and the experts read only the user,
the gate and the tower read the campaign too.

Widths come from `ModelConfig`: `expert_hidden` for the MLP, the bottom, each expert, and (its last
width) the tower's hidden layer; `experts` for MMoE.
"""

from __future__ import annotations

import torch
from torch import nn

from metaheac.data.schema import DatasetSchema
from metaheac.model.config import ModelConfig
from metaheac.model.network import Network, Params


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x [..., B, in] @ w [..., in, out] + b [..., out], with or without a leading task axis."""
    return x @ w + b.unsqueeze(-2)


def user_campaign_linear(user: torch.Tensor, campaign: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A linear layer on [user features, campaign features]; the weight is split by rows so that a
    campaign shared by all rows ([..., 1, in]) is multiplied once, not per row."""
    width = user.shape[-1]
    return linear(user, w[..., :width, :], b) + campaign @ w[..., width:, :]


class LogisticRegression(Network):
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


class MLP(Network):
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


class _Tower(Network):
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
