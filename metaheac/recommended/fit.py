"""The per-campaign fit (package doc): the seeds' dense columns, their L2 LR pulled toward the campaign's
prior, folded into one `LinearHead`, then (`RecommendedConfig.residual_lr`) the residual LR on the raw design."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from metaheac.data.tensors import Features, Rows
from metaheac.linear.head import LinearHead
from metaheac.linear.lr import LinearConfig, LinearModel, design, fit_cv
from metaheac.model.network import Network
from metaheac.recommended.bank import TransferBank
from metaheac.recommended.config import RecommendedConfig
from metaheac.recommended.factors import AudienceFactors
from metaheac.recommended.network import general_logit
from metaheac.recommended.topics import UserTopics


def _factor_stds(factors: AudienceFactors, vector: np.ndarray) -> tuple[float, np.ndarray]:
    """The std over training rows of the factor prior's logit (h . vector) and of each factor."""
    return float(np.sqrt(vector @ factors.cov @ vector)) + 1e-6, np.sqrt(np.diag(factors.cov)) + 1e-6


def _topic_stds(topics: UserTopics, prior: LinearModel) -> tuple[float, np.ndarray]:
    """The std over training rows of the topic prior's logit and of each topic's share."""
    return float(np.sqrt(prior.weight @ topics.cov @ prior.weight)) + 1e-6, np.sqrt(np.diag(topics.cov)) + 1e-6


def transfer_columns(
    bank: TransferBank, x: sp.spmatrix, general: np.ndarray, vector: np.ndarray, mixes: np.ndarray,
    topic_prior: LinearModel, scale: float,
) -> np.ndarray:
    """The dense columns the seeds fit (package doc) for design rows x and topic mixes `mixes`: times `scale`,
    the bank's standardised logits, the network's logit, the factor and the topic priors; then the factors
    and the topic shares, standardised."""
    factors, topics = bank.factors, bank.topics
    h = factors.users(x)
    factor_std, h_std = _factor_stds(factors, vector)
    topic_std, mix_std = _topic_stds(topics, topic_prior)
    scaled = scale * np.column_stack(
        [bank.standardised(x), general, h @ vector / factor_std, topic_prior.logit(mixes) / topic_std])
    return np.column_stack([scaled, (h - factors.mean) / h_std, (mixes - topics.mean) / mix_std])


def fit_transfer(
    network: Network,
    bank: TransferBank,
    features: Features,
    campaign: int,
    rows: Rows,
    settings: RecommendedConfig,
    seed: int,
) -> LinearHead:
    """The campaign's head, fit on its seed rows (package doc; `seed`: the CV folds'); without seed rows, its
    prior. With `settings.residual_lr`, then an L2 LR on the seeds' raw design with the head's logit as
    offset (C by CV), added into the head: where the seeds carry more than the few dense columns can take
    (real data, bench/README.md)."""
    category = bank.category_lr.model(features, campaign)
    topics, topic_prior = bank.topics, bank.topic_models.prior(features, campaign)
    if not len(rows):
        return LinearHead(category.weight, category.bias + topic_prior.bias, 0.0, topic_weight=topic_prior.weight,
                          topics=topics)
    x = design(features, rows.user)
    mixes = topics.of_users(features, rows.user)
    factors, vector = bank.factors, bank.factors.prior(features, campaign)
    # Left out, the column is 0: its weight, and so the network's share of the head, is 0.
    general = (general_logit(network, features, campaign, rows.user) if settings.network_column
               else np.zeros(len(rows.user)))
    dense = transfer_columns(bank, x, general, vector, mixes, topic_prior, settings.scale)
    config = LinearConfig(cs=settings.cs, one_se=True, seed=seed)
    fit = fit_cv(dense, rows.label.cpu().numpy(), config, offset=category.logit(x) + topic_prior.logit(mixes))
    models = len(bank.bias)
    w = settings.scale * fit.weight[:models + 3]  # the scaled columns' weights, then the standardised ones'
    a = w[:models] / bank.std
    factor_std, h_std = _factor_stds(factors, vector)
    topic_std, mix_std = _topic_stds(topics, topic_prior)
    e = fit.weight[models + 3:models + 3 + len(h_std)] / h_std
    g = fit.weight[models + 3 + len(h_std):] / mix_std
    on_topic_prior = w[models + 2] / topic_std
    head = LinearHead(
        weight=category.weight + bank.weight @ a + factors.embedding @ (w[models + 1] * vector / factor_std + e),
        bias=float(category.bias + topic_prior.bias * (1 + on_topic_prior) + fit.bias + (bank.bias - bank.mean) @ a
                   - factors.mean @ e - topics.mean @ g),
        general_weight=float(w[models]),
        c=fit.c,
        topic_weight=topic_prior.weight * (1 + on_topic_prior) + g,
        topics=topics,
    )
    if settings.residual_lr:
        offset = head.logit(x, general, mixes)
        residual = LinearConfig(cs=settings.residual_cs, seed=seed)
        fit = fit_cv(x, rows.label.cpu().numpy(), residual, offset=offset)
        head.weight, head.bias = head.weight + fit.weight, head.bias + fit.bias
    return head
