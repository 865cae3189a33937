"""The recommended method's general model as one module (`TransferNetwork`): the meta-trained network, whose
logit the head weighs (`general_logit`), and the bank's tables as buffers sized by the schema and the
settings, so the model saves and loads as any network does."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from metaheac.adaptation import score
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Features
from metaheac.linear.head import LinearTables, design_width, load_category_lr, network_logit
from metaheac.linear.lr import advertiser_column, category_column, hierarchy_fields
from metaheac.model.config import ModelConfig
from metaheac.model.heac import HybridExpertsCritics
from metaheac.model.network import Network
from metaheac.recommended.bank import TransferBank
from metaheac.recommended.config import RecommendedConfig
from metaheac.recommended.factors import AudienceFactors
from metaheac.recommended.topics import TopicModels, UserTopics


def general_logit(network: Network, features: Features, campaign: int, users: torch.Tensor) -> np.ndarray:
    """The general network's logit of each user for `campaign`, unadapted (float64)."""
    return network_logit(score(network, features, campaign, users)).cpu().numpy()


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
    """The recommended method's general model: the meta-trained network plus the bank (package doc), and
    the `settings` it is built and fit with (saved in config.json, `method.TransferLR.settings_of`)."""

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None = None,
                 settings: RecommendedConfig | None = None) -> None:
        super().__init__(schema, config)
        self.settings = settings = settings or RecommendedConfig()
        self.categories = LinearTables(schema, hierarchy_fields(schema)[0])
        self.factors = FactorTables(schema, settings.factors.dim * settings.factors.models)
        self.topics = TopicTables(schema, settings.topics.topics)

    def store_bank(self, bank: TransferBank) -> None:
        count = len(bank.bias)
        self.categories.store({**bank.category_lr.by_category, -1: bank.category_lr.overall},
                              list(bank.mean[:count]), list(bank.std[:count]))
        self.factors.store(bank.factors)
        self.topics.store(bank.topics, bank.topic_models)

    def bank(self, features: Features) -> TransferBank:
        return TransferBank(load_category_lr(self.categories, features), self.factors.factors(features),
                            *self.categories.stats(), self.topics.topics(), self.topics.models(features))
