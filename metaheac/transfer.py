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
import torch.nn.functional as F
from torch import nn

from metaheac.adaptation import AdaptedModel, score
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Features, Rows
from metaheac.linear import CategoryLR, LinearConfig, LinearModel, category_column, design, fit_cv, user_columns
from metaheac.model.baselines import LogisticRegression
from metaheac.model.config import ModelConfig
from metaheac.model.heac import HybridExpertsCritics
from metaheac.model.network import Network

RECOMMENDED = "MetaHeac+LR"
TRANSFER_SCALE = 10.0


def general_logit(network: Network, features: Features, campaign: int, users: torch.Tensor) -> np.ndarray:
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
    network: Network, category_lr: CategoryLR, features: Features, campaign: int, rows: Rows, config: LinearConfig
) -> TransferHead:
    """The campaign's head, fit on its seed rows (module doc); without seed rows, the general network."""
    x = design(features, rows.user)
    if not len(rows):
        return TransferHead(np.zeros(x.shape[1]), 0.0, 1.0, 0.0)
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


class CategoryTables(nn.Module):
    """The Category LR models as buffers sized by the schema: one weight column per adCategoryId value and
    a last one over all training campaigns; `fitted` marks the categories trained on."""

    weight: torch.Tensor  # buffers: [user feature columns, categories + 1], [categories + 1] (twice)
    bias: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, schema: DatasetSchema) -> None:
        super().__init__()
        columns = sum(f.vocab_size for f in [*schema.user_single, *schema.user_lists])
        categories = next((f.vocab_size for f in schema.campaign_fields if f.name == "adCategoryId"), 0) + 1
        self.register_buffer("weight", torch.zeros(columns, categories, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(categories, dtype=torch.float64))
        self.register_buffer("fitted", torch.zeros(categories, dtype=torch.bool))

    def store(self, category_lr: CategoryLR) -> None:
        with torch.no_grad():
            for value, model in [*category_lr.by_category.items(), (-1, category_lr.overall)]:
                self.weight[:, value] = torch.from_numpy(model.weight)
                self.bias[value] = model.bias
                self.fitted[value] = True

    def models(self, features: Features) -> CategoryLR:
        def model(value: int) -> LinearModel:
            return LinearModel(self.weight[:, value].cpu().numpy(), float(self.bias[value]), 0.0)

        fitted = torch.nonzero(self.fitted[:-1]).flatten().tolist()
        return CategoryLR({v: model(v) for v in fitted}, model(-1), category_column(features))


class TransferNetwork(HybridExpertsCritics):
    """The recommended method's general model: the meta-trained network plus the Category LR models."""

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None = None) -> None:
        super().__init__(schema, config)
        self.categories = CategoryTables(schema)


class CategoryNetwork(LogisticRegression):
    """`Category LR`'s general model: the Category LR models (the network itself stays unused)."""

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None = None) -> None:
        super().__init__(schema, config)
        self.categories = CategoryTables(schema)


def _bag(features: Features, users: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight for the users' design rows x, as one embedding bag over 1-dim weights."""
    columns, values = user_columns(features, users)
    return F.embedding_bag(columns, weight, mode="sum", per_sample_weights=values.to(weight.dtype)).squeeze(-1)


class LinearAdapted(AdaptedModel):
    """A campaign's `TransferHead` over the unadapted general network: its score is a linear head (a bag
    of 1-dim weights per user, like the LR network) plus, where its weight is not 0, a weight on the
    network's logit."""

    def __init__(self, network: Network, head: TransferHead) -> None:
        super().__init__(network, {name: w.detach() for name, w in network.dense_parameters().items()})
        self.head = head

    def score(
        self, features: Features, campaign: int, users: torch.Tensor, batch_size: int | None = None
    ) -> torch.Tensor:
        device = next(self.network.parameters()).device
        features, users = features.to(device), users.to(device)
        weight = torch.as_tensor(self.head.weight, device=device)[:, None]
        logit = torch.cat([_bag(features, chunk, weight) for chunk in users.split(batch_size or 65536)])
        logit = logit + self.head.bias
        if self.head.general_weight:
            general = super().score(features, campaign, users, batch_size).double().clamp(1e-7, 1 - 1e-7)
            logit = logit + self.head.general_weight * torch.logit(general)
        return torch.sigmoid(logit).float()
