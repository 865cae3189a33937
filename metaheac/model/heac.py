"""MetaHeac's network: Hybrid Experts and Critics (docs/architecture.md, "The network contract").

The dense part is written once, as functions of a parameter mapping over tensors that may carry a
leading task dimension: the ordinary forward passes the module's own parameters, the batched
meta-training passes per-task fast weights [tasks, ...], and the same code runs as batched matmuls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Batch
from metaheac.model.config import ModelConfig
from metaheac.model.network import Network, Params


def weighted_bce(probability: torch.Tensor, label: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the last axis with row weights (0 marks a padding row)."""
    losses = F.binary_cross_entropy(probability, label.to(probability.dtype), reduction="none")
    weight = weight.to(probability.dtype)
    return (losses * weight).sum(-1) / weight.sum(-1)


def _bias(b: torch.Tensor) -> torch.Tensor:
    """A bias [..., out] as [..., 1, out], to broadcast over the rows axis with or without a task axis."""
    return b.unsqueeze(-2)


@dataclass(frozen=True)
class CampaignGates:
    """The gates' campaign-only part, computed once to score many users (`score_head`)."""

    hidden_bias: torch.Tensor  # [1, 2 * gate_hidden]: the campaign's share of the gates' hidden layer + bias
    out_w: torch.Tensor  # [2 * gate_hidden, experts + critics]: both gates' output layers, block diagonal
    out_b: torch.Tensor  # [experts + critics]


class _TaskMatmul(torch.autograd.Function):
    """[T, M, K] x [T, K, N] as T matrix products; its backward is made of the same function, so it
    differentiates any number of times (the meta-training differentiates through a gradient)."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        out = a.new_empty(a.shape[0], a.shape[1], b.shape[2])
        for t in range(a.shape[0]):
            torch.mm(a[t], b[t], out=out[t])
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, b = ctx.saved_tensors
        grad_a = _product_like(a, grad, b.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_b = _product_like(b, a.transpose(1, 2), grad) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


def _product_like(x: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """left @ right per task, laid out in memory as `x` is: the gradient of a transposed view (x^T @ g in
    the inner step) comes out transposed too, so it reaches the tensor under the view without a copy."""
    if x.is_contiguous() or not x.transpose(1, 2).is_contiguous():
        return _TaskMatmul.apply(left, right)
    return _TaskMatmul.apply(right.transpose(1, 2), left.transpose(1, 2)).transpose(1, 2)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b, with per-task float32 products [T, M, K] x [T, K, N] on CPU run one task at a time: MKL's
    batched product splits a few tasks unevenly over the threads (5 over 2) and runs transposed
    operands, as in gradients, slowly; one product at a time keeps every thread busy (~5% of a step).
    On bfloat16 operands (a matmul precision below "highest": oneDNN) the batched product is the faster."""
    if a.dim() == 3 and b.dim() == 3 and a.device.type == "cpu" and torch.get_float32_matmul_precision() == "highest":
        return _TaskMatmul.apply(a, b)
    return a @ b


class HybridExpertsCritics(Network):
    """p(c, u) = sum_j w'_j sigmoid(t_j(sum_i w_i h_i(G(u)))), gates on [mean user emb, campaign emb]."""

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None = None) -> None:
        super().__init__(schema, config)
        config = self.config
        d, n, m, gh = config.embedding_dim, config.experts, config.critics, config.gate_hidden
        widths = (self.user_width, *config.expert_hidden)
        campaign_in = self.campaign_width
        shapes: dict[str, tuple[tuple[int, ...], int]] = {  # name -> (shape, fan_in)
            # every expert's first layer side by side: one [B, G] x [G, n*h] matmul instead of n small ones
            "expert_w0": ((widths[0], n * widths[1]), widths[0]),
            "expert_b0": ((n * widths[1],), widths[0]),
            **{
                name: (shape, widths[k])
                for k in range(1, len(widths) - 1)
                for name, shape in (
                    (f"expert_w{k}", (n, widths[k], widths[k + 1])),
                    (f"expert_b{k}", (n, widths[k + 1])),
                )
            },
            # Both gates' hidden layers side by side (they read the same input), split by input part
            # (mean user embedding | campaign embeddings) so a task's one campaign is multiplied once.
            "gate_user_w": ((d, 2 * gh), d + campaign_in),
            "gate_campaign_w": ((campaign_in, 2 * gh), d + campaign_in),
            "gate_b": ((2 * gh,), d + campaign_in),
            "expert_gate_w": ((gh, n), gh),
            "expert_gate_b": ((n,), gh),
            "critic_gate_w": ((gh, m), gh),
            "critic_gate_b": ((m,), gh),
            "critic_w": ((widths[-1], m), widths[-1]),
            "critic_b": ((m,), widths[-1]),
        }
        for name, (shape, fan_in) in shapes.items():  # nn.Linear's default init, per expert / gate / critic
            self.add(name, shape, fan_in)

    def predict(self, p: Params, user: torch.Tensor, campaign: torch.Tensor) -> torch.Tensor:
        return self.head(p, self.expert_input(p, user), user.mean(-2), campaign)

    def gate_weights(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The expert gate's weights [B, experts] and the critic gate's [B, critics]; rows sum to 1."""
        user_mean = self.embeddings.user(batch).mean(-2)
        return self.gates(self.dense_parameters(), user_mean, self.embeddings.campaign(batch))

    # The network reads the user embeddings G(u) [..., B, F_u, d] twice: all experts' first layer, and
    # their mean over fields for the gates. `head` takes both, so that the batched meta-training can
    # form them its own way; leading dimensions (a task axis) are free throughout.
    FIRST_LAYER = ("expert_w0", "expert_b0")

    def expert_input(self, p: Params, user: torch.Tensor) -> torch.Tensor:
        """Every expert's first layer before its ReLU, side by side: G(u) @ expert_w0 + b, [..., B, n * h]."""
        return matmul(user.flatten(-2), p["expert_w0"]) + _bias(p["expert_b0"])

    def gates(self, p: Params, user_mean: torch.Tensor, campaign: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """user_mean [..., B, d]; campaign [..., B, F_c, d], or [..., 1, F_c, d] when all rows share it."""
        hidden = torch.relu(
            user_mean @ p["gate_user_w"] + campaign.flatten(-2) @ p["gate_campaign_w"] + _bias(p["gate_b"])
        )
        expert_hidden, critic_hidden = hidden.split(self.config.gate_hidden, dim=-1)
        expert = torch.softmax(expert_hidden @ p["expert_gate_w"] + _bias(p["expert_gate_b"]), dim=-1)
        critic = torch.softmax(critic_hidden @ p["critic_gate_w"] + _bias(p["critic_gate_b"]), dim=-1)
        return expert, critic

    def experts(self, p: Params, expert_input: torch.Tensor) -> torch.Tensor:
        """Every expert's output h_i(G(u)) from `expert_input`, [..., experts, B, h]."""
        n, widths = self.config.experts, self.config.expert_hidden
        h = torch.relu(expert_input).unflatten(-1, (n, widths[0])).transpose(-2, -3)
        for k in range(1, len(widths)):
            h = torch.relu(h @ p[f"expert_w{k}"] + _bias(p[f"expert_b{k}"]))
        return h

    def head(
        self, p: Params, expert_input: torch.Tensor, user_mean: torch.Tensor, campaign: torch.Tensor
    ) -> torch.Tensor:
        """Probabilities [..., B] (p's first-layer entries are not read: `expert_input` holds that layer).

        The critics' input r is the gated sum of the experts' outputs, so r @ critic_w is the same sum of
        each expert's output through critic_w: the gating then multiplies and sums [..., experts, B,
        critics] instead of [..., experts, B, hidden] (its backward passes cost more than the product)."""
        expert_w, critic_w = self.gates(p, user_mean, campaign)
        h = self.experts(p, expert_input)
        through_critics = (h.flatten(-3, -2) @ p["critic_w"]).unflatten(-2, h.shape[-3:-1])
        logits = (expert_w.transpose(-1, -2).unsqueeze(-1) * through_critics).sum(-3) + _bias(p["critic_b"])
        return (critic_w * torch.sigmoid(logits)).sum(-1)

    def campaign_gates(self, p: Params, campaign: torch.Tensor) -> CampaignGates:
        """What the gates compute once per campaign, for `score_head` (campaign [1, F_c, d])."""
        n, gh = self.config.experts, self.config.gate_hidden
        out_w = p["expert_gate_w"].new_zeros((2 * gh, n + self.config.critics))
        out_w[:gh, :n], out_w[gh:, n:] = p["expert_gate_w"], p["critic_gate_w"]
        return CampaignGates(
            hidden_bias=campaign.flatten(-2) @ p["gate_campaign_w"] + p["gate_b"],
            out_w=out_w,
            out_b=torch.cat([p["expert_gate_b"], p["critic_gate_b"]]),
        )

    def score_head(
        self, p: Params, expert_input: torch.Tensor, user_mean: torch.Tensor, gates: CampaignGates
    ) -> torch.Tensor:
        """`head` for inference on [B, ...] rows (no task axis, no autograd), one expert at a time: an
        expert's [B, h] activations stay in the cache, and its gate weight is added into r in place. The
        gates' campaign part comes precomputed and both gates' outputs in one product (on 2 cores the
        small ops cost more than the arithmetic). `expert_input` is overwritten."""
        hidden = torch.addmm(gates.hidden_bias, user_mean, p["gate_user_w"]).relu_()
        logits = torch.addmm(gates.out_b, hidden, gates.out_w)
        expert_w = torch.softmax(logits[:, : self.config.experts], -1)
        critic_w = torch.softmax(logits[:, self.config.experts :], -1)
        widths = self.config.expert_hidden
        x = expert_input.relu_()
        r = torch.zeros((len(x), widths[-1]), dtype=x.dtype, device=x.device)
        for i in range(self.config.experts):
            h = x[:, i * widths[0] : (i + 1) * widths[0]]
            for k in range(1, len(widths)):
                h = torch.addmm(p[f"expert_b{k}"][i], h, p[f"expert_w{k}"][i]).relu_()
            r.addcmul_(h, expert_w[:, i : i + 1])
        scores = torch.addmm(p["critic_b"], r, p["critic_w"]).sigmoid_()
        return (critic_w * scores).sum(-1)

    def expert_critics(self, p: Params, expert_input: torch.Tensor) -> torch.Tensor:
        """For scoring one batch for many campaigns of this unadapted network: what the campaigns share, each
        expert's output through the critics' layer, (h_i(G(u)) @ critic_w)^T, [experts, critics, B] (the
        critics' input r is the gated sum of the h_i, so r @ critic_w is the same sum of these). Users are
        the last axis: the per-campaign part reduces over experts and critics, which is fast along the first
        axes and slow along a last axis of 5 or 8 (softmax there ran 20x slower). `expert_input` is
        overwritten."""
        widths = self.config.expert_hidden
        x = expert_input.relu_()
        out = x.new_empty((self.config.experts, self.config.critics, len(x)))
        for i in range(self.config.experts):
            h = x[:, i * widths[0] : (i + 1) * widths[0]]
            for k in range(1, len(widths)):
                h = torch.addmm(p[f"expert_b{k}"][i], h, p[f"expert_w{k}"][i]).relu_()
            torch.mm(p["critic_w"].T, h.T, out=out[i])
        return out

    def score_gated(
        self, p: Params, expert_critics: torch.Tensor, user_gates: torch.Tensor, gates: CampaignGates
    ) -> torch.Tensor:
        """One campaign's probabilities [B] from what its campaigns share: `expert_critics` and the users'
        share of the gates' hidden layer, user_gates = (user mean @ gate_user_w)^T [2 * gate hidden, B]
        (neither is changed)."""
        n = self.config.experts
        hidden = torch.add(user_gates, gates.hidden_bias.T).relu_()
        logits = torch.addmm(gates.out_b[:, None], gates.out_w.T, hidden)  # [experts + critics, B]
        expert_w, critic_w = torch.softmax(logits[:n], 0), torch.softmax(logits[n:], 0)
        scores = (expert_w[:, None] * expert_critics).sum(0).add_(p["critic_b"][:, None]).sigmoid_()
        return (critic_w * scores).sum(0)

    def flops_per_row(self) -> int:
        """Forward multiply-add FLOPs per row (2 per MAC) of the dense part; lookups and pooling excluded."""
        c, n, m, gh = self.config, self.config.experts, self.config.critics, self.config.gate_hidden
        widths = (self.embeddings.n_user_fields * c.embedding_dim, *c.expert_hidden)
        experts = sum(n * a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
        gate_in = c.embedding_dim * (1 + len(self.schema.campaign_fields))
        return 2 * (experts + gate_in * 2 * gh + gh * (n + m) + widths[-1] * m)
