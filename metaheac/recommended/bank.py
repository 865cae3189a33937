"""The bank: what the training campaigns taught, as the recommended method's general model holds it beside
its network (package doc): the Category LR models with their logit statistics, the audience factors, the
user topics and the topic models."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from metaheac.data.tensors import Features, Rows
from metaheac.linear.lr import CategoryLR, LinearConfig, LinearModel, design, fit_category_lr
from metaheac.recommended.config import RecommendedConfig
from metaheac.recommended.factors import AudienceFactors, fit_factors
from metaheac.recommended.topics import TopicModels, UserTopics, fit_topic_models, fit_topics
from metaheac.runtime.phases import phase


@dataclass
class TransferBank:
    """The category models and the overall one side by side as `weight` [columns, models] and `bias`
    [models], with the mean and std of each model's logit over training rows; the audience factors; the user
    topics and the topic models."""

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
    settings: RecommendedConfig,
    seed: int,
) -> TransferBank:
    """The bank of `category_lr`, `factors` and `topics` (with the topic models fit on `train_rows`), with its
    logit statistics over (a sample of `settings.stats_rows` of) `train_rows`."""
    topic_models = fit_topic_models(features, train_rows, topics, LinearConfig(cs=settings.topic_cs, seed=seed))
    bank = TransferBank(category_lr, factors, np.zeros(0), np.ones(0), topics, topic_models)
    sample = np.random.default_rng(seed).permutation(len(train_rows))[:settings.stats_rows]
    logits = np.asarray(design(features, train_rows.user[sample]) @ bank.weight) + bank.bias
    bank.mean, bank.std = logits.mean(0), logits.std(0) + 1e-6
    return bank


def train_bank(
    features: Features,
    train_rows: Rows,
    settings: RecommendedConfig,
    seed: int,
    category_lr: CategoryLR | None = None,
) -> TransferBank:
    """The bank fit on `train_rows` (and, the user topics, on the users table) with `settings` seeded by
    `seed`, one phase a part; `category_lr` is fit unless given."""
    settings = settings.seeded(seed)
    if category_lr is None:
        with phase("category LR"):
            category_lr = fit_category_lr(features, train_rows, LinearConfig(seed=seed))
    with phase("audience factors"):
        factors = fit_factors(features, train_rows, settings.factors)
    with phase("user topics"):
        topics = fit_topics(features, settings.topics)
    with phase("topic models and bank statistics"):
        return fit_bank(features, train_rows, category_lr, factors, topics, settings, seed)
