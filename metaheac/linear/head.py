"""A campaign's linear head and its scoring: the one model every linear method adapts to (LR, sklearn LR,
pooled LR, Category LR and the recommended MetaHeac+LR), and the one kernel that computes its score.

A head's logit is x @ weight + bias (x: the user's binary design row, `linear.lr.design`), plus, where the
head has them, mix @ topic_weight (the user's topic mix, a per-user input the recommended method gives) and
general_weight * the general network's logit (its probability clamped to [1e-7, 1 - 1e-7]). `head_probability`
computes it from those parts, for every path that scores a campaign: `adapt` and `expand`
(`LinearAdapted.score`), and `expand_shard` (`LinearHeadScorer`, `LinearHeads`: many campaigns in one read).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from metaheac.adaptation import AdaptedModel, Trunks
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Features
from metaheac.linear.lr import CategoryLR, LinearModel, category_column, column_offsets, design_bag, hierarchy_fields
from metaheac.model.baselines import LogisticRegression
from metaheac.model.config import ModelConfig
from metaheac.model.heac import CampaignGates, HybridExpertsCritics
from metaheac.model.network import Network
from metaheac.model.scoring import CampaignScorer, ScoreConfig, UserScorer


class UserMixes(Protocol):
    """Per-user dense inputs a head weighs beside the design row: the recommended method's topic mixes
    (`recommended.topics.UserTopics`)."""

    @property
    def digest(self) -> str:
        """The model's identity: equal digests give equal mixes (campaigns group by it, stores key by it)."""

    def of_users(self, features: Features, users: torch.Tensor | np.ndarray) -> np.ndarray:
        """Mixes [len(users), topics] (float64) of rows of the users table."""

    def mixes(self, columns: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Mixes [n, topics] (float32) of users given by their design columns and which are ids."""


@dataclass
class LinearHead:
    """A campaign's head (module doc): `weight` over the design columns, `bias`, the C its fit chose; the
    recommended method's also `general_weight` on the network's logit and `topic_weight` over the mixes of
    `topics`."""

    weight: np.ndarray
    bias: float
    c: float
    general_weight: float = 0.0
    topic_weight: np.ndarray | None = None
    topics: UserMixes | None = None

    def logit(self, x: sp.spmatrix, general: np.ndarray, mixes: np.ndarray | None = None) -> np.ndarray:
        """The logit of design rows x with the network's logits `general` and the mixes (float64; the fit's
        offset, `recommended.fit.fit_transfer`)."""
        logit = np.asarray(x @ self.weight).ravel() + self.bias + self.general_weight * general
        return logit if self.topic_weight is None or mixes is None else logit + mixes @ self.topic_weight


def network_logit(probability: torch.Tensor) -> torch.Tensor:
    """The general network's logit (float64) from its probability, clamped away from 0 and 1."""
    return torch.logit(probability.double().clamp(1e-7, 1 - 1e-7))


def head_probability(
    head: LinearHead, linear: torch.Tensor, mixes: torch.Tensor | None, general: torch.Tensor | None
) -> torch.Tensor:
    """The head's probabilities [B] (float32) from its parts (module doc): `linear`, x @ weight [B] (float32,
    a bag); `mixes` [B, topics] (float64, used where the head weighs them); `general`, the network's
    probabilities [B] (used where its weight is not 0)."""
    logit = linear + head.bias
    if head.topic_weight is not None and mixes is not None:
        logit = logit + mixes @ torch.as_tensor(head.topic_weight, device=mixes.device)
    if head.general_weight:
        assert general is not None, "a head with a weight on the network's logit needs its probabilities"
        logit = logit + head.general_weight * network_logit(general)
    return torch.sigmoid(logit).float()


def design_width(schema: DatasetSchema) -> int:
    """Columns of a design row (`linear.lr.design`): every user field's vocabulary end to end."""
    return int(column_offsets(schema)[-1])


class LinearAdapted(AdaptedModel):
    """A campaign's `LinearHead` over the unadapted general network (module doc)."""

    def __init__(self, network: Network, head: LinearHead) -> None:
        super().__init__(network, {name: w.detach() for name, w in network.dense_parameters().items()})
        self.head = head

    def score(
        self, features: Features, campaign: int, users: torch.Tensor, batch_size: int | None = None
    ) -> torch.Tensor:
        device = next(self.network.parameters()).device
        features, users = features.to(device), users.to(device)
        weight = torch.as_tensor(self.head.weight, dtype=torch.float32, device=device)[:, None]  # 1.6x float64's speed
        table = features.users

        def linear(chunk: torch.Tensor) -> torch.Tensor:
            ids, values = design_bag(table.single[chunk], table.lists[chunk], features.schema)
            return F.embedding_bag(ids, weight, mode="sum", per_sample_weights=values).squeeze(-1)

        topics, mixes = self.head.topics, None
        if self.head.topic_weight is not None and topics is not None:
            # by chunks of users: a chunk's float64 mixes at a time, not every user's
            mixes = torch.cat([torch.from_numpy(topics.of_users(features, chunk)) for chunk in users.split(65536)])
            mixes = mixes.to(device)
        general = super().score(features, campaign, users, batch_size) if self.head.general_weight else None
        return head_probability(self.head, torch.cat([linear(c) for c in users.split(batch_size or 65536)]),
                                mixes, general)

    def scorer(self, campaign_ids: torch.Tensor, config: ScoreConfig | None = None,
               trunks: Trunks | None = None) -> LinearHeadScorer:
        return LinearHeadScorer(self, campaign_ids, config, trunks)


class _LastMixes(threading.local):
    """Per scoring thread, the topic mixes of the last batch: campaigns scored alone on the same batch tensors
    in turn have their mixes inferred once. The batch is held, so its identity cannot be reused by a later
    one while it is the key."""

    key: tuple[str, torch.Tensor] | None = None
    mixes: torch.Tensor | None = None


_last_mixes = _LastMixes()


class LinearHeadScorer:
    """A `LinearAdapted` campaign's scorer of batches of users: the one-campaign case of `LinearHeads`, so
    alone or among many it gives the same scores."""

    def __init__(self, model: LinearAdapted, campaign_ids: torch.Tensor, config: ScoreConfig | None = None,
                 trunks: Trunks | None = None) -> None:
        self.head = model.head
        self.general = model.network
        self.trunk: CampaignScorer | None = None
        self.gates: CampaignGates | None = None
        if model.head.general_weight:
            # The general network's user side is the same for every campaign (its own tables and weights):
            # campaigns of one network prepared together share one (`trunks`, by network), and with it one
            # set of pre-multiplied tables. Only the gates are the campaign's.
            trunks = {} if trunks is None else trunks
            key = id(model.network)
            self.trunk = trunks[key] = trunks.get(key) or model.network_scorer(campaign_ids, config)
            if self.trunk.split:
                heac = cast(HybridExpertsCritics, model.network)
                self.gates = heac.campaign_gates(model.dense, model.campaign(model.tables(), campaign_ids[None]))
            else:  # no split path: the campaign's own network scorer
                self.trunk = model.network_scorer(campaign_ids, config)
        self.dtype = self.trunk.dtype if self.trunk else torch.float32
        self.schema = model.network.schema
        self.weight = torch.from_numpy(model.head.weight).float()[:, None]
        self.topics = model.head.topics if model.head.topic_weight is not None else None
        self._alone: LinearHeads | None = None

    @property
    def group(self) -> Hashable:
        """Campaigns of one general network and topic model score together (`LinearHeads`): the model by its
        content (`UserMixes.digest`), as each campaign's adaptation loads its own copy."""
        return "linear head", id(self.general), None if self.topics is None else self.topics.digest

    def batched(self, scorers: list[UserScorer]) -> LinearHeads:
        return LinearHeads(cast(list[LinearHeadScorer], scorers))

    @property
    def network(self) -> CampaignScorer | None:
        """The network's scorer, where the head has a weight on its logit."""
        return self.trunk

    def __call__(self, single: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        if self._alone is None:
            self._alone = LinearHeads([self])
        return self._alone(single, lists)[:, 0]


class LinearHeads:
    """Many campaigns' heads scored in one read of a batch of users: one bag of the users' ids over every
    head's weight side by side, [design columns, campaigns] (its columns are independent sums: each is as it
    is alone); the topic mixes inferred once; where heads weigh the general network's logit, its user side
    (first layer, experts through the critics' layer, the gates' user share) computed once and only the gates
    per campaign (`HybridExpertsCritics.score_gated`); then each campaign's `head_probability`."""

    def __init__(self, scorers: list[LinearHeadScorer]) -> None:
        first = scorers[0]
        self.scorers, self.schema = scorers, first.schema
        topics = {None if s.topics is None else s.topics.digest for s in scorers}
        if len(topics) > 1:
            raise ValueError("LinearHeads: the heads have different topic models (or some none); group them apart")
        self.topics = scorers[0].topics
        self.weight = torch.cat([s.weight for s in scorers], 1).contiguous()  # [design columns, campaigns]
        self.networked = [k for k, s in enumerate(scorers) if s.trunk is not None]
        trunks = {id(scorers[k].trunk): scorers[k].trunk for k in self.networked if scorers[k].gates is not None}
        self.trunk = next(iter(trunks.values()), None)  # one network: its trunk (any one gives the same)
        self.heac = cast(HybridExpertsCritics, first.general)

    def _mixes(self, lists: torch.Tensor, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        assert self.topics is not None
        key = _last_mixes.key
        if _last_mixes.mixes is None or key is None or key[0] != self.topics.digest or key[1] is not lists:
            _last_mixes.mixes = self.topics.mixes(ids, values > 0)
            _last_mixes.key = (self.topics.digest, lists)
        return _last_mixes.mixes

    @torch.inference_mode()
    def user_mixes(self, single: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        """The batch's topic mixes [B, topics] (float32) as `__call__` infers them (the heads weigh mixes)."""
        ids, values = design_bag(single, lists, self.schema)
        return self._mixes(lists, ids, values)

    @torch.inference_mode()
    def __call__(self, single: torch.Tensor, lists: torch.Tensor, mixes: torch.Tensor | None = None) -> torch.Tensor:
        """Probabilities [B, campaigns]; `mixes`: the batch's topic mixes (float32) when known (stored with the
        user base, `online.user_mixes`), else inferred."""
        ids, values = design_bag(single, lists, self.schema)
        linear = F.embedding_bag(ids, self.weight, mode="sum", per_sample_weights=values)
        if self.topics is None:
            mixes = None
        else:
            mixes = (self._mixes(lists, ids, values) if mixes is None else mixes).double()
        general: dict[int, torch.Tensor] = {}
        if self.networked:
            shared = None
            if self.trunk is not None:
                dense = self.trunk.dense
                expert_input, user_mean = self.trunk.pool(single, lists)
                shared = (self.heac.expert_critics(dense, expert_input), dense["gate_user_w"].T @ user_mean.T)
            for k in self.networked:
                scorer = self.scorers[k]
                assert scorer.trunk is not None
                if shared is not None and scorer.gates is not None:
                    general[k] = self.heac.score_gated(scorer.trunk.dense, *shared, scorer.gates)
                else:
                    general[k] = scorer.trunk(single, lists)
        return torch.stack([head_probability(s.head, linear[:, k], mixes, general.get(k))
                            for k, s in enumerate(self.scorers)], 1)


class LinearTables(nn.Module):
    """Linear models on the raw features (or on `columns` others) as buffers sized by the schema: one weight
    column per value of the campaign field `field` and a last one (key -1: over all training campaigns);
    `fitted` marks the columns trained on; `mean` and `std` are each model's logit statistics (the
    recommended method's bank)."""

    weight: torch.Tensor  # buffers: [user feature columns, values + 1], then [values + 1] each
    bias: torch.Tensor
    fitted: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, schema: DatasetSchema, field: str | None, columns: int | None = None) -> None:
        super().__init__()
        columns = design_width(schema) if columns is None else columns
        values = next((f.vocab_size for f in schema.campaign_fields if f.name == field), 0) + 1
        self.register_buffer("weight", torch.zeros(columns, values, dtype=torch.float64))
        for name in ("bias", "mean"):
            self.register_buffer(name, torch.zeros(values, dtype=torch.float64))
        self.register_buffer("std", torch.ones(values, dtype=torch.float64))
        self.register_buffer("fitted", torch.zeros(values, dtype=torch.bool))

    def store(self, models: dict[int, LinearModel], mean: list[float], std: list[float]) -> None:
        with torch.no_grad():
            for (value, model), m, s in zip(models.items(), mean, std, strict=True):
                self.weight[:, value] = torch.from_numpy(model.weight)
                self.bias[value], self.mean[value], self.std[value] = model.bias, m, s
                self.fitted[value] = True

    def values(self) -> list[int]:
        """The fitted values in ascending order (as they were fit), the overall model (-1) last."""
        fitted = torch.nonzero(self.fitted[:-1]).flatten().tolist()
        return fitted + [-1] * bool(self.fitted[-1])

    def models(self) -> dict[int, LinearModel]:
        return {v: LinearModel(self.weight[:, v].cpu().numpy(), float(self.bias[v]), 0.0) for v in self.values()}

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        values = self.values()
        return self.mean[values].cpu().numpy(), self.std[values].cpu().numpy()


def store_category_lr(tables: LinearTables, category_lr: CategoryLR) -> None:
    count = len(category_lr.by_category) + 1
    tables.store({**category_lr.by_category, -1: category_lr.overall}, [0.0] * count, [1.0] * count)


def load_category_lr(tables: LinearTables, features: Features) -> CategoryLR:
    models = tables.models()
    overall = models.pop(-1)
    return CategoryLR(models, overall, category_column(features))


class CategoryNetwork(LogisticRegression):
    """`Category LR`'s general model: the Category LR models (the network itself stays unused)."""

    def __init__(self, schema: DatasetSchema, config: ModelConfig | None = None) -> None:
        super().__init__(schema, config)
        self.categories = LinearTables(schema, hierarchy_fields(schema)[0])
