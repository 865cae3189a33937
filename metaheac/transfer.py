"""The recommended method, "MetaHeac+LR": per campaign, an L2 logistic regression on the raw features
plus two transfer scores, with C cross-validated on the seed rows.

The transfer scores are logits of models trained on the training campaigns only, never on the campaign's
seeds: the meta-trained general network (unadapted) and the campaign's `Category LR`. A cold campaign's
C comes out small and its score leans on them; a hot one's large, and it leans on its own fit. The two
transfer columns are scaled up by `TRANSFER_SCALE`, so that the L2 penalty barely shrinks their weights.

As the Category LR is linear in the same columns, the fitted score folds into one linear head over the
raw features plus a weight on the general network's logit (`TransferHead`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from metaheac.adaptation import score
from metaheac.data.tensors import Features, Rows
from metaheac.linear import CategoryLR, LinearConfig, LinearModel, design, fit_cv

RECOMMENDED = "MetaHeac+LR"
TRANSFER_SCALE = 10.0


def general_logit(network: nn.Module, features: Features, campaign: int, users: torch.Tensor) -> np.ndarray:
    """The general network's logit of each user for `campaign`, unadapted."""
    p = score(network, features, campaign, users).double().clamp(1e-7, 1 - 1e-7)
    return torch.logit(p).cpu().numpy()


@dataclass
class TransferHead:
    """logit = x @ weight + bias + general_weight * general logit (x: the raw design rows)."""

    weight: np.ndarray
    bias: float
    general_weight: float
    c: float

    def logit(self, x: sp.spmatrix, general: np.ndarray) -> np.ndarray:
        return np.asarray(x @ self.weight).ravel() + self.bias + self.general_weight * general


def _stack(x: sp.spmatrix, general: np.ndarray, category: np.ndarray) -> sp.csr_matrix:
    transfer = TRANSFER_SCALE * np.stack([general, category], axis=1)
    return sp.hstack([x, sp.csr_matrix(transfer)], format="csr")


def fit_transfer(
    network: nn.Module, category_lr: CategoryLR, features: Features, campaign: int, rows: Rows, config: LinearConfig
) -> TransferHead:
    """The campaign's head, fit on its seed rows (module doc)."""
    x = design(features, rows.user)
    general = general_logit(network, features, campaign, rows.user)
    category: LinearModel = category_lr.model(features, campaign)
    fit = fit_cv(_stack(x, general, category.logit(x)), rows.label.cpu().numpy(), config)
    columns = x.shape[1]
    a_general, a_category = TRANSFER_SCALE * fit.weight[columns:]
    return TransferHead(
        weight=fit.weight[:columns] + a_category * category.weight,
        bias=fit.bias + a_category * category.bias,
        general_weight=float(a_general),
        c=fit.c,
    )
