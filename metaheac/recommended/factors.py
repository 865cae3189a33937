"""Shared audience factors: a low-rank logistic regression over every training campaign at once.

A user's factors are h = x @ embedding (x: the raw design row of `metaheac.linear.lr`, so the factors are as
linear in the features as Category LR is); a training campaign's logit is h . (category vector +
advertiser vector + its own vector) + its bias. One embedding serves every campaign, so an id seen by a
few users of many campaigns is learnt once, where a per-category LR learns it per category; the
advertiser vectors carry what an advertiser's campaigns share beyond their category with `dim` numbers,
not one weight per column. A new campaign's prior is its category's vector plus its advertiser's.

Fit by Adam on the training campaigns' stage-1 rows, with ids dropped at random, an L2 pull of the
advertiser and campaign vectors toward the category's, and the epoch of least loss on held-out rows kept.
Columns fewer than `min_users` training users have stay at 0: a rare id's row only memorises its users.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from metaheac.data.tensors import Features, Rows
from metaheac.linear.lr import advertiser_column, category_column, column_offsets, design, user_columns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FactorConfig:
    dim: int = 32  # factors per user, in each fit
    models: int = 3  # fits averaged: their mean prior ranks better than one fit's (bench/README.md)
    min_users: int = 20  # training users a column needs to get a row
    dropout: float = 0.3  # share of a user's ids dropped per training row
    vector_l2: float = 0.1  # pull of the advertiser and campaign vectors toward the category's
    learning_rate: float = 0.003
    batch_size: int = 2048
    max_epochs: int = 40
    patience: int = 3  # epochs without a better held-out loss before stopping
    holdout: float = 0.1  # share of the training rows held out for that loss
    seed: int = 2020

    def __post_init__(self) -> None:
        sizes = min(self.dim, self.models, self.max_epochs, self.batch_size)
        if sizes < 1 or not 0 <= self.dropout < 1 or not 0 < self.holdout < 1:
            raise ValueError("FactorConfig: need dim, models, max_epochs, batch_size >= 1, dropout in [0, 1) "
                             "and holdout in (0, 1)")


@dataclass
class AudienceFactors:
    """The fitted factors (module doc). `mean` and `cov` are of the users' factors over training rows."""

    embedding: np.ndarray  # [columns, dim * models]
    category: np.ndarray  # [category values, dim * models]; an untrained category holds the mean vector
    advertiser: np.ndarray  # [advertiser values, dim * models]; 0 for an advertiser never trained on
    category_column: int | None
    advertiser_column: int | None
    mean: np.ndarray  # [dim * models]
    cov: np.ndarray  # [dim * models, dim * models]

    def users(self, x: sp.spmatrix) -> np.ndarray:
        return np.asarray(x @ self.embedding)

    def prior(self, features: Features, campaign: int) -> np.ndarray:
        """The campaign's vector before its seeds: its category's plus its advertiser's."""
        fields = features.campaigns.fields[campaign]
        vector = self.category[_value(fields, self.category_column)]
        return vector + self.advertiser[_value(fields, self.advertiser_column)]


def _value(fields: torch.Tensor, column: int | None) -> int:
    return 0 if column is None else int(fields[column])


def _campaign_values(features: Features, column: int | None) -> tuple[torch.Tensor, int]:
    """Each campaign's value of a campaign field (0 without the field) and how many values it has."""
    if column is None:
        return torch.zeros(len(features.campaigns.fields), dtype=torch.long), 1
    return features.campaigns.fields[:, column].long().cpu(), features.schema.campaign_fields[column].vocab_size


def fit_factors(features: Features, train_rows: Rows, config: FactorConfig) -> AudienceFactors:
    """The factors of `train_rows`' campaigns (module doc): `config.models` fits side by side, each vector
    divided by their number, so a prior logit is the mean of theirs."""
    users, user_of_row = torch.unique(train_rows.user.cpu(), return_inverse=True)
    columns, values = user_columns(features.to("cpu"), users)
    n_columns = int(column_offsets(features.schema)[-1])
    seen = torch.bincount(columns[values > 0], minlength=n_columns)
    values = values.float() * (seen[columns] >= config.min_users)
    cat_col, adv_col = category_column(features), advertiser_column(features)
    category, n_categories = _campaign_values(features, cat_col)
    advertiser, n_advertisers = _campaign_values(features, adv_col)
    data = _TrainingData(columns, values, user_of_row, train_rows.campaign.long().cpu(),
                         train_rows.label.float().cpu(), category, advertiser)
    sizes = (n_columns, n_categories, n_advertisers)
    with ThreadPoolExecutor(config.models) as pool:  # torch's small ops leave cores idle: the fits overlap
        fits = list(pool.map(lambda k: _fit_one(data, sizes, config, config.seed + k), range(config.models)))
    embedding, category_, advertiser_ = (np.concatenate(part, 1) for part in zip(*fits, strict=True))
    category_, advertiser_ = category_ / config.models, advertiser_ / config.models
    embedding[(seen < config.min_users).numpy()] = 0.0  # rows no training row reached keep their init
    trained = category[torch.unique(data.campaign)].numpy()
    untrained = np.ones(n_categories, dtype=bool)
    untrained[trained] = False
    category_[untrained] = category_[trained].mean(0)
    h = np.asarray(design(features, users) @ embedding)[user_of_row.numpy()]
    return AudienceFactors(embedding, category_, advertiser_, cat_col, adv_col, h.mean(0), np.cov(h.T, ddof=0))


@dataclass
class _TrainingData:
    columns: torch.Tensor  # [users, K]: each training user's design columns
    values: torch.Tensor  # [users, K]: their values, 0 for a column left out
    user_of_row: torch.Tensor  # [rows]: index into the users
    campaign: torch.Tensor  # [rows]
    label: torch.Tensor  # [rows]
    category: torch.Tensor  # [campaigns]: value index of the campaign's category
    advertiser: torch.Tensor  # [campaigns]


def _fit_one(
    data: _TrainingData, sizes: tuple[int, int, int], config: FactorConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fit: (embedding, category vectors, advertiser vectors) of the epoch of least held-out loss."""
    generator = torch.Generator().manual_seed(seed)
    n_columns, n_categories, n_advertisers = sizes
    d, label, campaign = config.dim, data.label, data.campaign
    embedding = torch.nn.Parameter(0.01 * torch.randn(n_columns, d, generator=generator))
    by_category = torch.nn.Parameter(0.1 * torch.randn(n_categories, d, generator=generator))
    by_advertiser = torch.nn.Parameter(torch.zeros(n_advertisers, d))
    own = torch.nn.Parameter(torch.zeros(len(data.category), d))
    bias = torch.nn.Parameter(torch.full((len(data.category),), -3.0))
    parameters = [embedding, by_category, by_advertiser, own, bias]
    # fused: one pass over the dense embedding's moments per step, not ten (the fit ~15% faster at 1M rows)
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate, fused=True)

    def logit(rows: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        u, c = data.user_of_row[rows], campaign[rows]
        weight = data.values[u]
        if train and config.dropout:
            keep = torch.rand(weight.shape, generator=generator) >= config.dropout
            weight = weight * keep / (1 - config.dropout)
        h = F.embedding_bag(data.columns[u], embedding, per_sample_weights=weight, mode="sum")
        deviation = by_advertiser[data.advertiser[c]] + own[c]
        return (h * (by_category[data.category[c]] + deviation)).sum(1) + bias[c], deviation

    order = torch.randperm(len(label), generator=generator)
    held = order[: max(1, int(len(label) * config.holdout))]
    fit = order[len(held):]
    best, best_state, stale = float("inf"), [p.detach().clone() for p in parameters[:3]], 0
    for epoch in range(config.max_epochs):
        for batch in fit[torch.randperm(len(fit), generator=generator)].split(config.batch_size):
            z, deviation = logit(batch, train=True)
            loss = F.binary_cross_entropy_with_logits(z, label[batch])
            loss = loss + config.vector_l2 * (deviation**2).sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            held_loss = float(F.binary_cross_entropy_with_logits(logit(held, train=False)[0], label[held]))
        log.debug("audience factors (seed %d): epoch %d, held-out loss %.4f", seed, epoch, held_loss)
        if held_loss < best - 1e-4:
            best, best_state, stale = held_loss, [p.detach().clone() for p in parameters[:3]], 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    embedding_, category_, advertiser_ = (p.double().numpy() for p in best_state)
    return embedding_, category_, advertiser_
