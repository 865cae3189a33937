"""The linear family's methods: `LR` and `sklearn LR` (per campaign, on its seeds), `pooled LR` and
`Category LR` (fit on the training campaigns, no seeds). Each adapts to a `linear.head.LinearHead`."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedKFold

from metaheac.adaptation import AdaptConfig, AdaptedModel
from metaheac.data.tensors import Features, Rows
from metaheac.linear.head import LinearAdapted, LinearHead, LinearTables, load_category_lr, store_category_lr
from metaheac.linear.lr import CategoryLR, LinearConfig, LinearModel, campaign_lr, design, fit_category_lr
from metaheac.method import Method
from metaheac.model.network import Network
from metaheac.runtime.phases import phase
from metaheac.runtime.threads import blas_workers

_FITS_AHEAD = 2  # campaign fits queued per thread: enough to keep every core busy, few heads held at once


def fit_each(
    fit: Callable[[int, Rows], LinearHead], seeds: Mapping[int, Rows]
) -> Iterator[tuple[int, LinearHead]]:
    """(campaign, fit(campaign, seed rows)) in `seeds`' order, fit on threads a bounded window ahead of the
    consumer: the per-campaign fits are independent and spend their time in numpy and scipy, which release
    the GIL."""
    threads = torch.get_num_threads()
    with blas_workers(threads) as pool:
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

        for campaign, head in fit_each(fit, seeds):
            yield campaign, LinearAdapted(general_model, head)


SKLEARN_CS = (0.01, 0.03, 0.1, 0.3, 1.0)  # scikit-learn's C grid: half-decade steps
SKLEARN_SCORING = "neg_log_loss"  # `sklearn LR`'s CV; AUC-scoring: no better cold, worse pooled AUC (bench/README.md)


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

        for campaign, head in fit_each(fit, seeds):
            yield campaign, LinearAdapted(general_model, head)


def categories(network: Network) -> LinearTables:
    """The Category LR models a general model of `Category LR`, `pooled LR` or the recommended method carries."""
    return cast(LinearTables, network.categories)


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
