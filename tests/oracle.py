"""The test oracle: second-order MAML written the plain way (docs/architecture.md, "Data flow").

One task at a time, with dense gradients and fast copies of every full table, as the official code
does: slow, and obviously right, so it is the reference the batched path
in `metaheac/training/meta.py` must equal.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from metaheac.data.tensors import Features, Rows
from metaheac.model.heac import HybridExpertsCritics, weighted_bce
from metaheac.training.sampling import Tasks


def oracle_meta_gradients(
    model: HybridExpertsCritics, features: Features, rows: Rows, tasks: Tasks, inner_lr: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mean query loss over tasks and its gradient for every parameter, by name (dense)."""
    params = dict(model.named_parameters())

    def loss(weights: dict[str, torch.Tensor], index: torch.Tensor, task: int) -> torch.Tensor:
        picked = rows.select(index)
        p = functional_call(model, weights, (features.batch(picked.campaign, picked.user),))
        return weighted_bce(p, picked.label, tasks.weight[task])

    query_losses = []
    for t in range(len(tasks.campaign)):
        grads = torch.autograd.grad(loss(params, tasks.support[t], t), list(params.values()), create_graph=True)
        fast = {name: w - inner_lr * g for (name, w), g in zip(params.items(), grads, strict=True)}
        query_losses.append(loss(fast, tasks.query[t], t))
    meta_loss = torch.stack(query_losses).mean()
    grads = torch.autograd.grad(meta_loss, list(params.values()))
    return meta_loss.detach(), dict(zip(params, grads, strict=True))
