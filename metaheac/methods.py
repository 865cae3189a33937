"""The methods of the paper's table, by name: which network, how its general model is trained, and how
it adapts to a campaign (docs/architecture.md, "The method contract").

- "none": no general model. LR and "MLP one-stage" are trained per campaign from a fresh network.
- "joint": plain joint pre-training on every training campaign's stage-1 rows (`training/joint.py`).
- "meta": MAML meta-training (`training/meta.py`).
Every method adapts per campaign with `metaheac.adaptation`'s protocol unless it overrides `adapt_campaigns`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedKFold

from metaheac import adaptation
from metaheac.adaptation import AdaptConfig, AdaptedModel
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Features, Rows
from metaheac.linear.head import (
    CategoryNetwork,
    LinearAdapted,
    LinearHead,
    LinearTables,
    load_category_lr,
    store_category_lr,
)
from metaheac.linear.lr import CategoryLR, LinearConfig, LinearModel, campaign_lr, design, fit_category_lr
from metaheac.method_names import RECOMMENDED, check_method
from metaheac.model import store
from metaheac.model.baselines import MLP, LogisticRegression, MMoE, SharedBottom
from metaheac.model.config import ModelConfig
from metaheac.model.heac import HybridExpertsCritics
from metaheac.model.network import Network
from metaheac.phases import phase
from metaheac.recommended.factors import fit_factors
from metaheac.recommended.head import TransferNetwork, factor_config, fit_bank, fit_transfer, transfer_config
from metaheac.recommended.topics import TopicConfig, fit_topics
from metaheac.training.config import MetaTrainConfig
from metaheac.training.joint import JointTrainConfig, joint_train
from metaheac.training.meta import meta_train

Training = Literal["none", "joint", "meta"]
_FITS_AHEAD = 2  # campaign fits queued per thread: enough to keep every core busy, few heads held at once


def _fit_each(
    fit: Callable[[int, Rows], LinearHead], seeds: Mapping[int, Rows]
) -> Iterator[tuple[int, LinearHead]]:
    """(campaign, fit(campaign, seed rows)) in `seeds`' order, fit on threads: the per-campaign fits are
    independent and spend their time in numpy and scipy, which release the GIL."""
    threads = torch.get_num_threads()
    with ThreadPoolExecutor(threads) as pool:
        pending: deque[tuple[int, Future[LinearHead]]] = deque()
        for campaign, rows in seeds.items():
            pending.append((campaign, pool.submit(fit, campaign, rows)))
            if len(pending) >= _FITS_AHEAD * threads:
                done, head = pending.popleft()
                yield done, head.result()
        while pending:
            done, head = pending.popleft()
            yield done, head.result()


@dataclass(frozen=True)
class Method:
    """A method: its network builder, how its general model is trained, how it adapts to a campaign.

    A new method is an instance (or a subclass overriding `train` and/or `adapt_campaigns`) added to
    `METHODS`, and its name to `method_names.METHOD_NAMES`; the steps call only these hooks.
    """

    name: str
    network: Callable[[DatasetSchema, ModelConfig], Network]
    training: Training
    config_changes: dict[str, Any] = field(default_factory=dict)  # the ablations' ModelConfig edits

    @property
    def from_scratch(self) -> bool:
        """Whether each campaign is adapted from a freshly initialised network."""
        return self.training == "none"

    def build(self, schema: DatasetSchema, config: ModelConfig | None = None) -> Network:
        return self.network(schema, replace(config or ModelConfig(), **self.config_changes))

    def train(
        self,
        features: Features,
        train_rows: Rows,
        model_config: ModelConfig | None = None,
        meta_config: MetaTrainConfig | None = None,
        joint_config: JointTrainConfig | None = None,
        seed: int = 2020,
        checkpoint_uri: str | None = None,
        progress: bool = True,
    ) -> Network:
        """The general model, initialised with `seed` and trained on `train_rows` (the training campaigns'
        stage-1 rows, sorted by campaign). For "none" methods it is the untrained network, which
        adaptation only uses as the architecture to re-initialise per campaign (see `adapt_config`).

        With `checkpoint_uri`, meta-training writes checkpoints there and resumes from one it finds;
        joint training (one pass over the rows) does not checkpoint.
        """
        with torch.random.fork_rng(devices=[]):  # seeds the init without touching the caller's RNG
            torch.manual_seed(seed)
            model = self.build(features.schema, model_config)
        if self.training == "joint":
            with phase("joint training"):
                joint_train(model, features, train_rows, joint_config, progress=progress)
        elif self.training == "meta":
            if not isinstance(model, HybridExpertsCritics):
                raise TypeError(f"{self.name}: meta-training takes the HybridExpertsCritics network")
            with phase("meta-training"):
                meta_train(model, features, train_rows, meta_config, checkpoint_uri, resume=True, progress=progress)
        self.fit_extras(model, features, train_rows, seed)
        return model

    def fit_extras(self, model: Network, features: Features, train_rows: Rows, seed: int) -> None:
        """What a method fits on the training campaigns besides its network (none by default)."""

    def adapt_config(self, config: AdaptConfig | None = None) -> AdaptConfig:
        """The adaptation protocol: `config` (default: official), from scratch where there is no general model."""
        return replace(config or AdaptConfig(), from_scratch=self.from_scratch)

    def adapt_campaigns(
        self, general_model: Network, features: Features, seeds: dict[int, Rows], config: AdaptConfig | None = None
    ) -> Iterator[tuple[int, AdaptedModel]]:
        """(campaign, adapted model) for every campaign in `seeds`; the default is the official protocol."""
        return adaptation.adapt_campaigns(general_model, features, seeds, self.adapt_config(config))

    def adapt_and_score(
        self,
        general_model: Network,
        features: Features,
        stage1: Rows,
        stage2: Rows,
        config: AdaptConfig | None = None,
        progress: bool = True,
    ) -> pd.DataFrame:
        """The evaluation protocol with this method's adaptation (`adaptation.adapt_and_score_campaigns`)."""
        config = self.adapt_config(config)
        return adaptation.adapt_and_score_campaigns(
            general_model, features, stage1, stage2, config, progress, adapt=self.adapt_campaigns
        )


@dataclass(frozen=True)
class EarlyStopped(Method):
    """Adapts from scratch as a practitioner would: a fifth of the seeds held out, up to 40 epochs of
    batches of 128, the epoch of least held-out loss kept, patience 3 (not the official 2 epochs of 512)."""

    def adapt_config(self, config: AdaptConfig | None = None) -> AdaptConfig:
        return replace(super().adapt_config(config), epochs=40, batch_size=128, holdout=0.2, patience=3)


@dataclass(frozen=True)
class CampaignLR(Method):
    """`LR` as a practitioner fits it: per campaign, L2 logistic regression on the raw features solved by
    L-BFGS, C cross-validated on the seeds (`metaheac.linear.lr`)."""

    def adapt_campaigns(
        self, general_model: Network, features: Features, seeds: dict[int, Rows], config: AdaptConfig | None = None
    ) -> Iterator[tuple[int, AdaptedModel]]:
        linear_config = LinearConfig(seed=self.adapt_config(config).seed)

        def fit(campaign: int, rows: Rows) -> LinearHead:
            model = campaign_lr(features, rows, linear_config)
            return LinearHead(model.weight, model.bias, model.c)

        for campaign, head in _fit_each(fit, seeds):
            yield campaign, LinearAdapted(general_model, head)


SKLEARN_CS = (0.01, 0.03, 0.1, 0.3, 1.0)  # scikit-learn's C grid: half-decade steps
SKLEARN_SCORING = "neg_log_loss"  # the CV criterion of `sklearn LR` (bench/README.md: it ranks better than AUC's)


def _sklearn_head(model: Any, c: float) -> LinearHead:
    return LinearHead(model.coef_.ravel().astype(np.float64), float(model.intercept_[0]), c)


def sklearn_lr(x: Any, y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None) -> LinearHead:
    """scikit-learn's own L2 `LogisticRegression` on the design `x`, C by `GridSearchCV` over `SKLEARN_CS`
    (folds stratified by label, or grouped by `groups`), refit on every row. With one class, or too few rows of
    a class (or groups) to validate, the smallest C is fit; with one class, only the bias."""
    positives = int(y.sum())
    if positives in (0, len(y)):
        bias = float(np.log((positives + 0.5) / (len(y) - positives + 0.5)))
        return LinearHead(np.zeros(x.shape[1]), bias, 0.0)
    base = SkLogisticRegression(C=SKLEARN_CS[0], max_iter=1000)
    enough = len(np.unique(groups)) >= folds if groups is not None else min(positives, len(y) - positives) >= folds
    if not enough:
        return _sklearn_head(base.fit(x, y), SKLEARN_CS[0])
    cv = GroupKFold(folds) if groups is not None else StratifiedKFold(folds, shuffle=True, random_state=seed)
    search = GridSearchCV(base, {"C": list(SKLEARN_CS)}, scoring=SKLEARN_SCORING, cv=cv, error_score=np.nan)
    search.fit(x, y, groups=groups)
    return _sklearn_head(search.best_estimator_, float(search.best_params_["C"]))


@dataclass(frozen=True)
class SklearnLR(Method):
    """`sklearn LR`: the practitioner's baseline as scikit-learn fits it, per campaign on its seeds
    (`sklearn_lr` on the binary multi-hot design)."""

    def adapt_campaigns(
        self, general_model: Network, features: Features, seeds: dict[int, Rows], config: AdaptConfig | None = None
    ) -> Iterator[tuple[int, AdaptedModel]]:
        seed = self.adapt_config(config).seed

        def fit(campaign: int, rows: Rows) -> LinearHead:
            return sklearn_lr(design(features, rows.user), rows.label.cpu().numpy(), LinearConfig().folds, seed)

        for campaign, head in _fit_each(fit, seeds):
            yield campaign, LinearAdapted(general_model, head)


@dataclass(frozen=True)
class PooledLR(Method):
    """`pooled LR`: one scikit-learn logistic regression over every training campaign's rows, C by CV over
    held-out campaigns; it uses no seeds, so every campaign gets the same audience ranking."""

    def fit_extras(self, model: Network, features: Features, train_rows: Rows, seed: int) -> None:
        head = sklearn_lr(design(features, train_rows.user), train_rows.label.cpu().numpy(), LinearConfig().folds,
                          seed, groups=train_rows.campaign.cpu().numpy())
        store_category_lr(categories(model), CategoryLR({}, LinearModel(head.weight, head.bias, head.c), None))

    def adapt_campaigns(
        self, general_model: Network, features: Features, seeds: dict[int, Rows], config: AdaptConfig | None = None
    ) -> Iterator[tuple[int, AdaptedModel]]:
        model = categories(general_model).models()[-1]
        for campaign in seeds:
            yield campaign, LinearAdapted(general_model, LinearHead(model.weight, model.bias, 0.0))


def categories(network: Network) -> LinearTables:
    """The Category LR models a general model of `Category LR` or the recommended method carries."""
    return cast(LinearTables, network.categories)


@dataclass(frozen=True)
class CategoryLROnly(Method):
    """`Category LR`: the model of the campaign's category (its hierarchy's coarsest field) fit on the training
    campaigns; no seeds."""

    def fit_extras(self, model: Network, features: Features, train_rows: Rows, seed: int) -> None:
        with phase("category LR"):
            store_category_lr(categories(model), fit_category_lr(features, train_rows, LinearConfig(seed=seed)))

    def adapt_campaigns(
        self, general_model: Network, features: Features, seeds: dict[int, Rows], config: AdaptConfig | None = None
    ) -> Iterator[tuple[int, AdaptedModel]]:
        category_lr = load_category_lr(categories(general_model), features)
        for campaign in seeds:
            model = category_lr.model(features, campaign)
            yield campaign, LinearAdapted(general_model, LinearHead(model.weight, model.bias, 0.0))


@dataclass(frozen=True)
class TransferLR(Method):
    """The recommended method (`metaheac.recommended.head`): the meta-trained network, the Category LR models and the
    audience factors as the general model; per campaign, an L2 logistic regression on the seeds over their
    scores, pulled toward the campaign's category and advertiser prior."""

    def fit_extras(self, model: Network, features: Features, train_rows: Rows, seed: int) -> None:
        """`transfer.train_bank`, one phase a part."""
        with phase("category LR"):
            category_lr = fit_category_lr(features, train_rows, LinearConfig(seed=seed))
        with phase("audience factors"):
            factors = fit_factors(features, train_rows, factor_config(model.config, seed))
        with phase("user topics"):
            topics = fit_topics(features, TopicConfig(topics=model.config.user_topics, seed=seed))
        with phase("topic models and bank statistics"):
            bank = fit_bank(features, train_rows, category_lr, factors, topics, seed)
        cast(TransferNetwork, model).store_bank(bank)

    def adapt_campaigns(
        self, general_model: Network, features: Features, seeds: dict[int, Rows], config: AdaptConfig | None = None
    ) -> Iterator[tuple[int, AdaptedModel]]:
        linear_config = transfer_config(self.adapt_config(config).seed)
        bank = cast(TransferNetwork, general_model).bank(features)

        def fit(campaign: int, rows: Rows) -> LinearHead:
            return fit_transfer(general_model, bank, features, campaign, rows, linear_config,
                                general_model.config.residual_lr)

        for campaign, head in _fit_each(fit, seeds):
            yield campaign, LinearAdapted(general_model, head)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        CampaignLR("LR", LogisticRegression, "none"),
        EarlyStopped("MLP one-stage", MLP, "none"),
        Method("MLP+pre-training", MLP, "joint"),
        Method("Shared-Bottom+pre-training", SharedBottom, "joint"),
        Method("MMoE+pre-training", MMoE, "joint"),
        Method("MetaHeac", HybridExpertsCritics, "meta"),
        Method("MetaHeac w/o HC", HybridExpertsCritics, "meta", {"critics": 1}),
        Method("MetaHeac w/o HE", HybridExpertsCritics, "meta", {"experts": 1}),
        Method("MetaHeac w/o Meta", HybridExpertsCritics, "joint"),
        SklearnLR("sklearn LR", LogisticRegression, "none"),
        PooledLR("pooled LR", CategoryNetwork, "none"),
        CategoryLROnly("Category LR", CategoryNetwork, "none"),
        TransferLR(RECOMMENDED, TransferNetwork, "meta"),
    )
}


def method(name: str) -> Method:
    return METHODS[check_method(name)]


def build_network(name: str, schema: DatasetSchema, config: ModelConfig) -> Network:
    """The network of the method named `name` (how `model.store` rebuilds a saved model)."""
    return method(name).build(schema, config)


def load_model(uri: str, device: torch.device | str = "cpu") -> tuple[Network, dict[str, Any]]:
    """A general model saved by `model.store.save_model`, rebuilt by its method, and its config.json."""
    return store.load_model(uri, build_network, device)
