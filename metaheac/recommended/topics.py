"""User topics: a topic model (LDA) of the users' ids, learnt without labels, and linear models on the users'
topic mixes per campaign category and advertiser.

Interest ids come in topics: the ids a user has are drawn from a few interests, so which ids co-occur across
all users (not only the labelled ones) tells which topics a user is in. A linear model on the ids learns each
id from the training labels alone; LDA learns the ids' topics from every user's ids, and a user's mix is
inferred from all of them at once (an iterative E-step: an id shared by two topics counts for the one the
user's other ids point to). That inference is what linear pooling of the ids cannot do (bench/README.md).

A campaign's topic logit is mix . (its category's weights + its advertiser's) + their biases: an L2 logistic
regression per category on its training campaigns' rows, C by cross-validation over held-out campaigns, then
one per advertiser on top of its category's logit (offset), pulled toward it.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from metaheac.data.tensors import Features, Rows
from metaheac.linear.lr import (
    LinearConfig,
    LinearModel,
    advertiser_column,
    category_column,
    column_offsets,
    design,
    fit_cv,
    user_columns,
)
from metaheac.recommended.lda import dirichlet_expectation, fit_lda
from metaheac.runtime.threads import blas_workers, one_thread_workers


@dataclass(frozen=True)
class TopicConfig:
    topics: int = 32  # above the few tens of interests a vocabulary of this kind holds: extra topics stay small
    min_users: int = 5  # users an id needs to be a word of the model; rarer ids are ignored
    max_users: int = 20_000  # users the topic model is fit on (a random sample of a larger users table)
    passes: int = 20  # EM passes of the fit over those users: 10 rank worse (bench/README.md)
    doc_topic_prior: float = 0.1  # Dirichlet prior of a user's mix: small = a few topics per user
    inference_steps: int = 5  # E-step iterations inferring a user's mix: 5, 10 and 30 rank alike
    seed: int = 2020

    def __post_init__(self) -> None:
        if min(self.topics, self.max_users, self.passes, self.inference_steps) < 1 or self.doc_topic_prior <= 0:
            raise ValueError("TopicConfig: need topics, max_users, passes, inference_steps >= 1 and "
                             "doc_topic_prior > 0")


def _digamma(x: torch.Tensor) -> torch.Tensor:
    """digamma for x > 0 within 1e-5, 3x faster than torch's: psi(x) = psi(x + 2) - 1/x - 1/(x + 1), and
    psi's asymptotic series at x + 2 >= 2."""
    y = x + 2
    r = 1 / (y * y)
    return torch.log(y) - 0.5 / y - r * (1 / 12 - r * (1 / 120 - r / 252)) - 1 / x - 1 / (x + 1)


class _KnownMixes:
    """The mixes inferred so far of one users table's rows (`UserTopics.of_users`), and which rows they are.
    The table is known by its id tensors (`Features.to` makes a new table of the same tensors)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.table: tuple[weakref.ref[torch.Tensor], weakref.ref[torch.Tensor]] | None = None
        self.mixes = torch.zeros(0, 0)
        self.done = torch.zeros(0, dtype=torch.bool)

    def of(self, features: Features, topics: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixes [users, topics] and rows done of `features`' users table: empty for a new table."""
        single, lists = features.users.single, features.users.lists
        if self.table is None or self.table[0]() is not single or self.table[1]() is not lists:
            self.table = weakref.ref(single), weakref.ref(lists)
            self.mixes, self.done = torch.zeros(len(single), topics), torch.zeros(len(single), dtype=torch.bool)
        return self.mixes, self.done


@dataclass
class UserTopics:
    """The fitted topic model: `word` [columns, topics] is exp(E[log p(id | topic)]) (0 for an id left out),
    what the E-step needs."""

    word: np.ndarray
    prior: float
    steps: int
    mean: np.ndarray  # [topics]: of the mixes over training rows
    cov: np.ndarray  # [topics, topics]
    _known: _KnownMixes = field(default_factory=_KnownMixes, init=False, repr=False, compare=False)

    @cached_property
    def digest(self) -> str:
        """The topic model's identity: sha256 of what a user's mix depends on (the E-step's table, prior and
        steps). Each adaptation loads its own copy of the model (`TransferNetwork.bank`), so campaigns share
        their users' mixes by it, not by the object; stored mixes are keyed by it (`online.user_mixes`)."""
        digest = hashlib.sha256(np.ascontiguousarray(self.word, dtype=np.float32).tobytes())
        digest.update(f"{self.word.shape} {float(self.prior)!r} {int(self.steps)}".encode())
        return digest.hexdigest()

    @cached_property
    def vocabulary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's words' rows of `word` with a zero row last, and each design column's row in it (the
        zero row for an id left out): the E-step gathers from a table small enough to stay in cache (8,189 of
        334,185 rows on bench/adapt_score.py's data; the full table made the gather 3x slower)."""
        word = torch.as_tensor(self.word, dtype=torch.float32)
        rows = torch.nonzero(word.sum(1) > 0).flatten()
        index = torch.full((len(word),), len(rows), dtype=torch.int32)
        index[rows] = torch.arange(len(rows), dtype=torch.int32)
        return index, torch.cat([word[rows], torch.zeros(1, word.shape[1])])

    def mixes(self, columns: torch.Tensor, present: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """The users' topic mixes [n, topics] from their design columns [n, K] and which of them are ids
        (`present`: 0 for padding), by `steps` E-step iterations from a flat mix (scikit-learn's `transform`
        with a fixed count)."""
        index, table = self.vocabulary
        # users of like id counts batch together: a batch is cut to its longest row (1.3x faster)
        order = present.sum(1).argsort()
        batches = order.split(batch_size)

        def batch(users: torch.Tensor) -> torch.Tensor:
            return self._mixes(index, table, columns[users], present[users])

        threads = min(torch.get_num_threads(), len(batches))
        if threads <= 1:
            parts = [batch(users) for users in batches]
        else:
            with one_thread_workers(threads) as pool:
                parts = list(pool.map(batch, batches))
        mixes = torch.empty(len(order), table.shape[1])
        mixes[order] = torch.cat(parts)
        return mixes

    def _mixes(self, index: torch.Tensor, table: torch.Tensor, columns: torch.Tensor,
               present: torch.Tensor) -> torch.Tensor:
        blank = len(table) - 1
        # sorted: the model's words first (padding and ids left out are the blank row, last), and a list's
        # repeated id side by side, to count once as in the fit's binary rows
        words = index[columns.long()].masked_fill(~present.bool(), blank).sort(1).values
        width = int((words < blank).sum(1).max()) if len(words) else 0
        words = words[:, :width]
        count = (words < blank).float()
        count[:, 1:] *= words[:, 1:] != words[:, :-1]
        beta = table.index_select(0, words.flatten()).view(*words.shape, table.shape[1])  # [n, width, topics]
        gamma = torch.ones(len(words), table.shape[1])
        for _ in range(self.steps):
            theta = dirichlet_expectation(gamma, _digamma)
            norm = torch.bmm(beta, theta[:, :, None])[:, :, 0] + 1e-30  # bmm: 1.2x vecdot, 1.5x einsum here
            gamma = self.prior + theta * torch.bmm((count / norm)[:, None, :], beta)[:, 0]
        return gamma / gamma.sum(1, keepdim=True)

    def of_users(self, features: Features, users: torch.Tensor | np.ndarray) -> np.ndarray:
        """The mixes of rows `users` of the users table. Each user's is inferred once per users table and
        kept: it depends on the user's ids only, so every campaign scored on the table shares it."""
        users = torch.as_tensor(users).cpu().long()
        with self._known.lock:  # campaigns fit on threads (`linear.method.fit_each`)
            mixes, done = self._known.of(features, self.word.shape[1])
            missing = users[~done[users]].unique()
            if len(missing):
                columns, values = user_columns(features, missing)
                mixes[missing] = self.mixes(columns.cpu(), (values > 0).cpu())
                done[missing] = True
            return mixes[users].double().numpy()


def fit_topics(features: Features, config: TopicConfig) -> UserTopics:
    """The topic model of the users table's ids (module doc); no labels. Its `mean` and `cov` are left for
    `fit_topic_models`, which infers the training rows' mixes."""
    users = np.arange(len(features.users.single))
    if len(users) > config.max_users:
        users = np.sort(np.random.default_rng(config.seed).choice(users, config.max_users, replace=False))
    x = design(features, users)
    x.data[:] = 1.0  # an id counts once a user, whatever its list's length
    kept = np.flatnonzero(np.asarray(x.sum(0)).ravel() >= config.min_users)
    word = np.zeros((int(column_offsets(features.schema)[-1]), config.topics), dtype=np.float32)
    if len(kept):  # else no id is common enough: every user gets the flat mix
        word[kept] = fit_lda(x[:, kept], config.topics, config.doc_topic_prior, config.passes, config.seed).T
    return UserTopics(word, config.doc_topic_prior, config.inference_steps, np.zeros(config.topics),
                      np.eye(config.topics))


@dataclass
class TopicModels:
    """Per category and per advertiser, weights over the topic mix (module doc)."""

    category: dict[int, LinearModel]
    advertiser: dict[int, LinearModel]  # fit with the category's logit as offset
    category_column: int | None
    advertiser_column: int | None
    topics: int

    def prior(self, features: Features, campaign: int) -> LinearModel:
        """The campaign's weights over the topic mix and bias: its category's plus its advertiser's (none for
        a value never trained on)."""
        fields = features.campaigns.fields[campaign]
        weight, bias = np.zeros(self.topics), 0.0
        for models, column in ((self.category, self.category_column), (self.advertiser, self.advertiser_column)):
            model = models.get(-1 if column is None else int(fields[column]))
            if model is not None:
                weight, bias = weight + model.weight, bias + model.bias
        return LinearModel(weight, bias, 0.0)


def fit_topic_models(features: Features, train_rows: Rows, topics: UserTopics, config: LinearConfig) -> TopicModels:
    """The category and advertiser models on the training rows' topic mixes (`config`: their C grid and
    seed, `RecommendedConfig.topic_cs`); sets `topics`' mean and cov of those mixes."""
    users, row_user = np.unique(train_rows.user.cpu().numpy(), return_inverse=True)
    mixes = topics.of_users(features, users)[row_user]
    topics.mean, topics.cov = mixes.mean(0), np.cov(mixes.T, ddof=0)
    campaigns = train_rows.campaign.cpu().numpy()
    y = train_rows.label.cpu().numpy()
    x = mixes  # dense: `fit_cv` solves its few columns by Newton
    columns = category_column(features), advertiser_column(features)
    # without the field, one model over every campaign, keyed -1 as `LinearTables` keeps such a model
    values = [np.full(len(y), -1) if c is None else features.campaigns.fields[:, c].cpu().numpy()[campaigns]
              for c in columns]
    offset = np.zeros(len(y))
    fitted: list[dict[int, LinearModel]] = []
    for value in values:
        keys = np.unique(value).tolist()

        def fit(key: int, value: np.ndarray = value) -> LinearModel:
            rows = np.flatnonzero(value == key)
            return fit_cv(x[rows], y[rows], config, groups=campaigns[rows], offset=offset[rows])

        with blas_workers() as pool:
            models = dict(zip(keys, pool.map(fit, keys), strict=True))
        for key, model in models.items():
            rows = np.flatnonzero(value == key)
            offset[rows] += model.logit(x[rows])
        fitted.append(models)
    return TopicModels(fitted[0], fitted[1], *columns, mixes.shape[1])
