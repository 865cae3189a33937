"""The recommended method, "MetaHeac+LR": per campaign, an L2 logistic regression on the seed rows over
what the training campaigns taught, pulled toward the campaign's prior.

The general model (fit on the training campaigns only, never on a new campaign's seeds):
- the meta-trained MetaHeac network;
- a bank of linear models on the raw features (`TransferBank`): `Category LR`'s (one per category, the
  schema's coarsest hierarchy field, and one over all training campaigns), with the mean and std of each
  model's logit over training rows;
- the shared audience factors (`metaheac.recommended.factors`): a user's factors h, linear in the raw features, and a
  vector per category and advertiser;
- the user topics (`metaheac.recommended.topics`): a topic model of every user's ids (no labels) giving each user a
  topic mix m, and weights over m per category and advertiser.

Per campaign, the prior logit is its category's LR plus m . (its category's + its advertiser's topic
weights) + their biases (the topic prior). The campaign's logit is prior + a @ (the bank's standardised
logits) + g * (the network's logit) + f * (the factor prior h . (its category's + advertiser's vector))
+ t * (the topic prior) + e @ (h, standardised) + k @ (m, standardised) + b: a few dense columns, so a seed
set of ten positives can fit them; C by cross-validation on the seeds with the one-standard-error rule, so a
noisy seed set stays near the prior. The fitted score folds into one linear head over the raw features,
weights over the topic mix and a weight on the network's logit (`TransferHead`). The bank's and the priors'
columns are scaled by `TRANSFER_SCALE`, so their penalty is lighter than the factors' and topics' own.
bench/README.md has the variants tried and their measured effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from metaheac.adaptation import score
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Features, Rows
from metaheac.linear.head import LinearHead, LinearTables, design_width, load_category_lr, network_logit
from metaheac.linear.lr import (
    CategoryLR,
    LinearConfig,
    LinearModel,
    advertiser_column,
    category_column,
    design,
    fit_cv,
    hierarchy_fields,
)
from metaheac.model.config import ModelConfig
from metaheac.model.heac import HybridExpertsCritics
from metaheac.model.network import Network
from metaheac.recommended.factors import AudienceFactors, FactorConfig, fit_factors
from metaheac.recommended.topics import TopicConfig, TopicModels, UserTopics, fit_topic_models, fit_topics

TRANSFER_SCALE = 3.0
# The per-campaign fit: a wide C grid (the dense columns need small ones) and the one-SE rule.
TRANSFER_CS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
# The residual LR's grid (`fit_transfer`): the raw design's many columns need no C below 0.01.
RESIDUAL_CS = (0.01, 0.1, 1.0)
STATS_ROWS = 20_000  # training rows sampled for the bank's logit mean and std


def transfer_config(seed: int) -> LinearConfig:
    return LinearConfig(cs=TRANSFER_CS, one_se=True, seed=seed)


def factor_config(config: ModelConfig, seed: int) -> FactorConfig:
    """How the factors a network of `config` carries are fit."""
    return FactorConfig(dim=config.audience_factors, models=config.audience_factor_fits, seed=seed)


def general_logit(network: Network, features: Features, campaign: int, users: torch.Tensor) -> np.ndarray:
    """The general network's logit of each user for `campaign`, unadapted."""
    return network_logit(score(network, features, campaign, users)).cpu().numpy()


@dataclass
class TransferBank:
    """The linear models the training campaigns taught (module doc): the category models and the overall
    one side by side as `weight` [columns, models] and `bias` [models], and the audience factors."""

    category_lr: CategoryLR
    factors: AudienceFactors
    mean: np.ndarray  # [models]: of each model's logit over training rows
    std: np.ndarray
    topics: UserTopics
    topic_models: TopicModels

    @property
    def models(self) -> list[LinearModel]:
        return [*self.category_lr.by_category.values(), self.category_lr.overall]

    @cached_property  # [columns, models]: stacked once, not per campaign
    def weight(self) -> np.ndarray:
        return np.stack([m.weight for m in self.models], 1)

    @cached_property
    def bias(self) -> np.ndarray:
        return np.array([m.bias for m in self.models])

    def standardised(self, x: sp.spmatrix) -> np.ndarray:
        return (np.asarray(x @ self.weight) + self.bias - self.mean) / self.std


def fit_bank(
    features: Features,
    train_rows: Rows,
    category_lr: CategoryLR,
    factors: AudienceFactors,
    topics: UserTopics,
    seed: int,
) -> TransferBank:
    """The bank of `category_lr`, `factors` and `topics` (with the topic models fit on `train_rows`), with its
    logit statistics over (a sample of) `train_rows`."""
    topic_models = fit_topic_models(features, train_rows, topics, seed)
    bank = TransferBank(category_lr, factors, np.zeros(0), np.ones(0), topics, topic_models)
    sample = np.random.default_rng(seed).permutation(len(train_rows))[:STATS_ROWS]
    logits = np.asarray(design(features, train_rows.user[sample]) @ bank.weight) + bank.bias
    bank.mean, bank.std = logits.mean(0), logits.std(0) + 1e-6
    return bank


def train_bank(
    features: Features,
    train_rows: Rows,
    category_lr: CategoryLR,
    config: ModelConfig,
    seed: int,
    topic_config: TopicConfig | None = None,
) -> TransferBank:
    """The bank of a general model of `config`: `category_lr`, and the audience factors and user topics fit
    on `train_rows` and the users table (`topic_config` default: `config`'s topic count, `seed`)."""
    factors = fit_factors(features, train_rows, factor_config(config, seed))
    topics = fit_topics(features, topic_config or TopicConfig(topics=config.user_topics, seed=seed))
    return fit_bank(features, train_rows, category_lr, factors, topics, seed)


def _factor_stds(factors: AudienceFactors, vector: np.ndarray) -> tuple[float, np.ndarray]:
    """The std over training rows of the factor prior's logit (h . vector) and of each factor."""
    return float(np.sqrt(vector @ factors.cov @ vector)) + 1e-6, np.sqrt(np.diag(factors.cov)) + 1e-6


def _topic_stds(topics: UserTopics, prior: LinearModel) -> tuple[float, np.ndarray]:
    """The std over training rows of the topic prior's logit and of each topic's share."""
    return float(np.sqrt(prior.weight @ topics.cov @ prior.weight)) + 1e-6, np.sqrt(np.diag(topics.cov)) + 1e-6


def transfer_columns(
    bank: TransferBank, x: sp.spmatrix, general: np.ndarray, vector: np.ndarray, mixes: np.ndarray,
    topic_prior: LinearModel,
) -> np.ndarray:
    """The dense columns the seeds fit (module doc) for design rows x and topic mixes `mixes`: scaled, the
    bank's standardised logits, the network's logit, the factor and the topic priors; then the factors and
    the topic shares, standardised."""
    factors, topics = bank.factors, bank.topics
    h = factors.users(x)
    factor_std, h_std = _factor_stds(factors, vector)
    topic_std, mix_std = _topic_stds(topics, topic_prior)
    scaled = TRANSFER_SCALE * np.column_stack(
        [bank.standardised(x), general, h @ vector / factor_std, topic_prior.logit(mixes) / topic_std])
    return np.column_stack([scaled, (h - factors.mean) / h_std, (mixes - topics.mean) / mix_std])


def fit_transfer(
    network: Network,
    bank: TransferBank,
    features: Features,
    campaign: int,
    rows: Rows,
    config: LinearConfig,
    residual: bool = False,
) -> LinearHead:
    """The campaign's head, fit on its seed rows (module doc); without seed rows, its prior. With `residual`,
    then an L2 LR on the seeds' raw design with the head's logit as offset (C by CV), added into the head:
    where the seeds carry more than the few dense columns can take (real data, bench/README.md)."""
    category = bank.category_lr.model(features, campaign)
    topics, topic_prior = bank.topics, bank.topic_models.prior(features, campaign)
    if not len(rows):
        return LinearHead(category.weight, category.bias + topic_prior.bias, 0.0, topic_weight=topic_prior.weight,
                          topics=topics)
    x = design(features, rows.user)
    mixes = topics.of_users(features, rows.user)
    factors, vector = bank.factors, bank.factors.prior(features, campaign)
    general = general_logit(network, features, campaign, rows.user)
    dense = transfer_columns(bank, x, general, vector, mixes, topic_prior)
    fit = fit_cv(dense, rows.label.cpu().numpy(), config, offset=category.logit(x) + topic_prior.logit(mixes))
    models = len(bank.bias)
    w = TRANSFER_SCALE * fit.weight[:models + 3]  # the scaled columns' weights, then the standardised ones'
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
    if residual:
        offset = head.logit(x, general, mixes)
        fit = fit_cv(x, rows.label.cpu().numpy(), LinearConfig(cs=RESIDUAL_CS, seed=config.seed), offset=offset)
        head.weight, head.bias = head.weight + fit.weight, head.bias + fit.bias
    return head


class FactorTables(nn.Module):
    """The audience factors as buffers sized by the schema (`AudienceFactors`' fields)."""

    embedding: torch.Tensor  # float32: the factors train in it
    category: torch.Tensor
    advertiser: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor

    def __init__(self, schema: DatasetSchema, dim: int) -> None:
        super().__init__()
        columns = design_width(schema)
        values = {f.name: f.vocab_size for f in schema.campaign_fields}
        category, advertiser = (values.get(name, 1) if name else 1 for name in hierarchy_fields(schema))
        self.register_buffer("embedding", torch.zeros(columns, dim))
        self.register_buffer("category", torch.zeros(category, dim, dtype=torch.float64))
        self.register_buffer("advertiser", torch.zeros(advertiser, dim, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("cov", torch.eye(dim, dtype=torch.float64))

    def store(self, factors: AudienceFactors) -> None:
        with torch.no_grad():
            for name in ("embedding", "category", "advertiser", "mean", "cov"):
                getattr(self, name).copy_(torch.from_numpy(getattr(factors, name)))

    def factors(self, features: Features) -> AudienceFactors:
        embedding, category, advertiser, mean, cov = (
            t.double().cpu().numpy() for t in (self.embedding, self.category, self.advertiser, self.mean, self.cov)
        )
        return AudienceFactors(embedding, category, advertiser, category_column(features), advertiser_column(features),
                               mean, cov)


class TopicTables(nn.Module):
    """The user topics and the topic models (`UserTopics`, `TopicModels`) as buffers sized by the schema."""

    word: torch.Tensor  # float32 [design columns, topics]
    prior: torch.Tensor  # 0-dim: the E-step's Dirichlet prior
    steps: torch.Tensor  # 0-dim: its iterations
    mean: torch.Tensor
    cov: torch.Tensor

    def __init__(self, schema: DatasetSchema, topics: int) -> None:
        super().__init__()
        self.register_buffer("word", torch.zeros(design_width(schema), topics))
        self.register_buffer("prior", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("steps", torch.tensor(1))
        self.register_buffer("mean", torch.zeros(topics, dtype=torch.float64))
        self.register_buffer("cov", torch.eye(topics, dtype=torch.float64))
        category, advertiser = hierarchy_fields(schema)
        self.categories = LinearTables(schema, category, topics)
        self.advertisers = LinearTables(schema, advertiser, topics)

    def store(self, topics: UserTopics, models: TopicModels) -> None:
        with torch.no_grad():
            for name in ("word", "prior", "steps", "mean", "cov"):
                getattr(self, name).copy_(torch.as_tensor(getattr(topics, name)))
        for table, fitted in ((self.categories, models.category), (self.advertisers, models.advertiser)):
            table.store(fitted, [0.0] * len(fitted), [1.0] * len(fitted))

    def topics(self) -> UserTopics:
        return UserTopics(self.word.float().cpu().numpy(), float(self.prior), int(self.steps),
                          self.mean.double().cpu().numpy(), self.cov.double().cpu().numpy())

    def models(self, features: Features) -> TopicModels:
        return TopicModels(self.categories.models(), self.advertisers.models(), category_column(features),
                           advertiser_column(features), self.word.shape[1])


class TransferNetwork(HybridExpertsCritics):
    """The recommended method's general model: the meta-trained network plus the bank (module doc)."""

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None = None) -> None:
        super().__init__(schema, config)
        self.categories = LinearTables(schema, hierarchy_fields(schema)[0])
        self.factors = FactorTables(schema, self.config.audience_factors * self.config.audience_factor_fits)
        self.topics = TopicTables(schema, self.config.user_topics)

    def store_bank(self, bank: TransferBank) -> None:
        count = len(bank.bias)
        self.categories.store({**bank.category_lr.by_category, -1: bank.category_lr.overall},
                              list(bank.mean[:count]), list(bank.std[:count]))
        self.factors.store(bank.factors)
        self.topics.store(bank.topics, bank.topic_models)

    def bank(self, features: Features) -> TransferBank:
        return TransferBank(load_category_lr(self.categories, features), self.factors.factors(features),
                            *self.categories.stats(), self.topics.topics(), self.topics.models(features))
