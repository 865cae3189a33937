"""L2 logistic regression on the raw one-hot / multi-hot user features, fit to convergence by L-BFGS
(scipy; scikit-learn's objective, checked against it in the tests) with C chosen by cross-validation:
the honest `LR` baseline, `Category LR`, and the linear part of the recommended method, whose few dense
columns are fit by Newton's method instead.

A user's design row has one column per (user field, id), laid out like the embedding tables end to end:
a single field puts 1 on its id, a list field 1 on each of its valid ids (binary multi-hot, as a
practitioner's scikit-learn design has it); the networks' masked mean (1/(valid ids) each) ranks worse
(bench/README.md). A model is then a 1-dim table per field plus a bias,
scored by the same bags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.model_selection import GroupKFold, StratifiedKFold

from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Features, Rows
from metaheac.runtime.threads import blas_workers


@dataclass(frozen=True)
class LinearConfig:
    cs: tuple[float, ...] = (0.01, 0.1, 1.0)  # inverse L2 strengths tried by cross-validation
    folds: int = 3
    max_iter: int = 1_000  # L-BFGS iterations: far above what convergence (tol) needs on seed sets
    tol: float = 1e-4  # on the largest gradient entry of the mean loss (scikit-learn's default tol)
    one_se: bool = False  # the smallest C within one standard error of the least held-out loss (glmnet's rule)
    # C grid of the models fit on many campaigns' rows (Category LR's, `fit_category_lr`): half-decade steps,
    # as their optimum matters more than a seed set's and their fits are few
    pooled_cs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    seed: int = 2020

    def __post_init__(self) -> None:
        if not self.cs or min(self.cs) <= 0 or not self.pooled_cs or min(self.pooled_cs) <= 0 or self.folds < 2:
            raise ValueError("LinearConfig: need at least one C > 0 in cs and in pooled_cs, and folds >= 2")


def column_offsets(schema: DatasetSchema) -> np.ndarray:
    """Where each user field's columns start, and (last) the column count."""
    sizes = [f.vocab_size for f in schema.user_single] + [f.vocab_size for f in schema.user_lists]
    return np.concatenate(([0], np.cumsum(sizes)))


def design_offsets(schema: DatasetSchema) -> torch.Tensor:
    """Each id column's first design column, for a user's ids [single | lists] side by side (int32): the one
    place the design's column layout is computed."""
    widths = [1] * len(schema.user_single) + list(schema.list_lengths)
    return torch.from_numpy(np.repeat(column_offsets(schema)[:-1], widths)).int()


def list_values(lists: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Each list id's value in a design row (list ids side by side): 1 for a valid id, 0 for padding
    (binary multi-hot, module doc)."""
    return (lists != 0).to(dtype)


def design_bag(
    single: torch.Tensor, lists: torch.Tensor, schema: DatasetSchema, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Users' design rows from their ids [n, S] and [n, L] as a bag: (columns [n, K] int64, values [n, K] of
    `dtype`; padding has value 0)."""
    columns = torch.cat([single, lists], 1).long() + design_offsets(schema).to(single.device)
    values = torch.cat([torch.ones(single.shape, dtype=dtype, device=single.device), list_values(lists, dtype)], 1)
    return columns, values


def user_columns(
    features: Features, users: torch.Tensor, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """The design rows of `users` as (columns [n, K], values [n, K] of `dtype`) where the users table lives;
    padding has value 0."""
    table = features.users
    users = torch.as_tensor(users, device=table.single.device)
    return design_bag(table.single[users], table.lists[users], features.schema, dtype)


def design(features: Features, users: torch.Tensor | np.ndarray) -> sp.csr_matrix:
    """The users' design rows [len(users), columns] (module doc)."""
    columns, values = (t.cpu().numpy() for t in user_columns(features, torch.as_tensor(users)))
    n, k = columns.shape
    x = sp.csr_matrix((values.ravel(), columns.ravel(), np.arange(0, n * k + 1, k)),
                      shape=(n, int(column_offsets(features.schema)[-1])))
    x.sum_duplicates()
    x.eliminate_zeros()
    return x


@dataclass
class LinearModel:
    """Weights per column (and extra columns after them), bias, and the C cross-validation chose."""

    weight: np.ndarray
    bias: float
    c: float

    def logit(self, x: sp.spmatrix | np.ndarray) -> np.ndarray:
        return np.asarray(x @ self.weight).ravel() + self.bias


def _fit(
    x: sp.csr_matrix | np.ndarray, y: np.ndarray, c: float, config: LinearConfig, start: np.ndarray | None,
    offset: np.ndarray,
) -> np.ndarray:
    """[weights..., bias] minimising sum of log-losses of offset + x @ w + b, + |w|^2 / (2C) (scikit-learn's
    objective, bias unpenalised), scaled by 1 / rows for conditioning. `start` warm-starts it. Dense x (a few
    hundred columns at most) is solved by Newton's method, sparse x by L-BFGS."""
    if isinstance(x, np.ndarray):
        return _fit_newton(x, y, c, config, start, offset)
    n, d = x.shape
    xt = x.T.tocsr()

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        z = offset + x @ w + b
        g = (expit(z) - y) / n
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z) + w @ w / (2 * c * n))
        return loss, np.append(xt @ g + w / (c * n), g.sum())

    theta = np.zeros(d + 1) if start is None else start
    result = minimize(objective, theta, jac=True, method="L-BFGS-B",
                      options={"maxiter": config.max_iter, "gtol": config.tol, "ftol": 1e-10})
    return result.x


def _fit_newton(
    x: np.ndarray, y: np.ndarray, c: float, config: LinearConfig, start: np.ndarray | None, offset: np.ndarray
) -> np.ndarray:
    """`_fit`'s objective by Newton steps with backtracking, to the same tolerance. Heavy-tailed dense columns
    (standardised topic shares) make it ill-conditioned: L-BFGS took ~150 iterations where Newton takes ~5."""
    n, d = x.shape
    xa = np.column_stack([x, np.ones(n)])
    ridge = np.append(np.full(d, 1.0 / (c * n)), 1e-12)  # the bias is unpenalised; 1e-12 keeps H invertible

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = offset + xa @ theta
        return float(np.mean(np.logaddexp(0.0, z) - y * z) + theta[:d] @ theta[:d] / (2 * c * n)), z

    theta = np.zeros(d + 1) if start is None else start.copy()
    value, z = loss(theta)
    for _ in range(config.max_iter):
        p = expit(z)
        gradient = xa.T @ ((p - y) / n) + ridge * theta
        if np.abs(gradient).max() <= config.tol:
            break
        hessian = (xa * (p * (1 - p) / n)[:, None]).T @ xa + np.diag(ridge)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while True:  # Armijo backtracking: the full step is taken near the optimum
            candidate = theta - size * step
            new_value, new_z = loss(candidate)
            if new_value <= value - 1e-4 * size * (gradient @ step) or size < 1e-10:
                break
            size /= 2
        theta, value, z = candidate, new_value, new_z
    return theta


def _log_losses(theta: np.ndarray, x: sp.spmatrix, y: np.ndarray, offset: np.ndarray) -> np.ndarray:
    z = offset + x @ theta[:-1] + theta[-1]
    return np.logaddexp(0.0, z) - y * z


def _choose_c(losses: list[np.ndarray], cs: list[float], one_se: bool) -> float:
    """The C of least mean held-out loss (`losses`: per C, every held-out row's loss), or with `one_se`
    the smallest C within one standard error of it: seed sets are small and their CV noisy."""
    means = np.array([v.mean() for v in losses])
    best = int(np.argmin(means))
    if not one_se:
        return cs[best]
    limit = means[best] + losses[best].std() / np.sqrt(len(losses[best]))
    return cs[int(np.flatnonzero(means <= limit)[0])]


def fit_cv(
    x: sp.spmatrix | np.ndarray,
    y: np.ndarray,
    config: LinearConfig,
    groups: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> LinearModel:
    """L2 logistic regression with the C of least held-out log-loss, refit on all rows; the logit is
    `offset` (a prior's logit per row, default 0) + x @ w + b, so the penalty pulls toward the prior.

    Folds are stratified by label, or grouped (`groups`, e.g. campaigns: held-out campaigns, as a new
    campaign is). With one class, or fewer positives or groups than folds, there is nothing to validate:
    the smallest C (the strongest pull to the prior) is used.
    """
    y = np.asarray(y, dtype=np.float64)
    offset = np.zeros(len(y)) if offset is None else np.asarray(offset, dtype=np.float64)
    full = x.shape[1]
    if isinstance(x, np.ndarray):  # a few dense columns: Newton (`_fit`)
        x, used = np.asarray(x, dtype=np.float64), np.arange(full)
    else:
        # Columns no row uses get weight 0 at the optimum: fit on the used ones only (far fewer on seed sets).
        x = sp.csr_matrix(x)
        used = np.unique(x.indices)
        x = x[:, used]
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        base = float(np.log((positives + 0.5) / (len(y) - positives + 0.5)))
        return LinearModel(np.zeros(full), base - float(offset.mean()), 0.0)
    if groups is not None:
        splits = list(GroupKFold(config.folds).split(x, y, groups)) if len(np.unique(groups)) >= config.folds else []
    elif min(positives, len(y) - positives) >= config.folds:
        splits = list(StratifiedKFold(config.folds, shuffle=True, random_state=config.seed).split(x, y))
    else:
        splits = []
    cs = sorted(config.cs)
    c = cs[0]
    held_out: list[list[np.ndarray]] = [[] for _ in cs]
    for a, b in splits if len(cs) > 1 else []:
        if not 0 < y[a].sum() < len(a):
            continue
        theta = None
        for i, c in enumerate(cs):  # increasing C, each warm-started from the last
            theta = _fit(x[a], y[a], c, config, theta, offset[a])
            held_out[i].append(_log_losses(theta, x[b], y[b], offset[b]))
    if held_out[0]:
        c = _choose_c([np.concatenate(v) for v in held_out], cs, config.one_se)
    theta = _fit(x, y, c, config, None, offset)
    weight = np.zeros(full)
    weight[used] = theta[:-1]
    return LinearModel(weight, float(theta[-1]), c)


def campaign_lr(features: Features, rows: Rows, config: LinearConfig) -> LinearModel:
    """The `LR` baseline: one campaign's seed rows, C by stratified cross-validation."""
    return fit_cv(design(features, rows.user), rows.label.cpu().numpy(), config)


def hierarchy_fields(schema: DatasetSchema) -> tuple[str | None, str | None]:
    """The campaign fields the transferring methods group by: the schema's hierarchy's coarsest level (the
    "category") and the next one (the "advertiser"); None for a level the hierarchy lacks."""
    coarse, fine, *_ = [*schema.hierarchy, None, None]
    return coarse, fine


def _column(features: Features, name: str | None) -> int | None:
    return None if name is None else [f.name for f in features.schema.campaign_fields].index(name)


def category_column(features: Features) -> int | None:
    """The campaign-field column of the hierarchy's coarsest level (`hierarchy_fields`)."""
    return _column(features, hierarchy_fields(features.schema)[0])


def advertiser_column(features: Features) -> int | None:
    """The campaign-field column of the hierarchy's second level (`hierarchy_fields`)."""
    return _column(features, hierarchy_fields(features.schema)[1])


@dataclass
class CategoryLR:
    """`Category LR`: one model per category (the hierarchy's coarsest campaign field) of the training
    campaigns, and one on all of them for a category never trained on (for every campaign, where the schema
    has no hierarchy). Uses no seed rows of the campaign it scores."""

    by_category: dict[int, LinearModel]
    overall: LinearModel
    column: int | None  # the category's column in the campaign fields (None: the schema has no hierarchy)

    def model(self, features: Features, campaign: int) -> LinearModel:
        if self.column is None:
            return self.overall
        category = int(features.campaigns.fields[campaign, self.column])
        return self.by_category.get(category, self.overall)


def fit_category_lr(features: Features, train_rows: Rows, config: LinearConfig) -> CategoryLR:
    """Category LR on the training campaigns' stage-1 rows: each model's C by its own cross-validation over
    held-out campaigns (on `config.pooled_cs`): one C for every category, the overall model's, fits them less well
    (bench/README.md)."""
    column = category_column(features)
    campaigns = train_rows.campaign.cpu().numpy()
    x, y = design(features, train_rows.user), train_rows.label.cpu().numpy()
    pooled = dataclasses.replace(config, cs=config.pooled_cs)
    if column is None:  # no categories: every campaign gets the model over all of them
        return CategoryLR({}, fit_cv(x, y, pooled, groups=campaigns), None)
    category = features.campaigns.fields[:, column].cpu().numpy()[campaigns]
    values = np.unique(category)

    def fit(value: int | None) -> LinearModel:
        if value is None:
            return fit_cv(x, y, pooled, groups=campaigns)
        mine = np.flatnonzero(category == value)
        return fit_cv(x[mine], y[mine], pooled, groups=campaigns[mine])

    # The fits are independent and scipy's sparse products release the GIL: threads use every core.
    with blas_workers() as pool:
        overall, *models = pool.map(fit, [None, *values.tolist()])
    return CategoryLR(dict(zip(values.tolist(), models, strict=True)), overall, column)

