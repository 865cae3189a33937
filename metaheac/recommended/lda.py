"""The fit of a topic model (LDA) of the users' ids: scikit-learn's batch variational Bayes
(`LatentDirichletAllocation(learning_method="batch")` in one process), with its E-step batched over users
in torch instead of a Python loop over them.

Each user's mix is iterated as scikit-learn does it (the same update, from the same random draw, until its
mean change is below 1e-3 or 100 steps) and adds its share to the topics' statistics; the tests check the
result against scikit-learn's. Users of like id counts share a batch, and a batch drops its users as they
converge. Faster than scikit-learn's fit (bench/README.md), and the same on any number of cores:
scikit-learn's processes each start from a copy of one random state, so its result depends on `n_jobs`.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat

import numpy as np
import scipy.sparse as sp
import torch

from metaheac.runtime.threads import one_thread_workers

MAX_STEPS = 100  # scikit-learn's max_doc_update_iter
TOLERANCE = 1e-3  # its mean_change_tol
BATCH = 1024  # users per batch


def dirichlet_expectation(
    alpha: torch.Tensor, digamma: Callable[[torch.Tensor], torch.Tensor] = torch.digamma
) -> torch.Tensor:
    """exp(E[log x]) for x ~ Dirichlet(alpha), per row."""
    return torch.exp(digamma(alpha) - digamma(alpha.sum(-1, keepdim=True)))


def _batch_statistics(
    word: torch.Tensor, ids: torch.Tensor, counts: torch.Tensor, gamma: torch.Tensor, prior: float
) -> torch.Tensor:
    """scikit-learn's `_update_doc_distribution` for a batch of users: their ids [b, width] (padding: the
    zero row of `word` [words + 1, topics]) and counts, their mixes iterated from `gamma`; returns their
    share of the topics' statistics [words + 1, topics]."""
    eps = torch.finfo(word.dtype).eps
    beta = word[ids]  # [b, width, topics]
    theta = dirichlet_expectation(gamma)
    active = torch.arange(len(ids))  # the users of the working set, which holds the moving ones
    moving = torch.ones(len(ids), dtype=torch.bool)
    b_beta, b_counts, b_gamma, b_theta = beta, counts, gamma, theta
    for _ in range(MAX_STEPS):
        norm = torch.bmm(b_beta, b_theta[:, :, None])[:, :, 0] + eps
        b_gamma_next = b_theta * torch.bmm((b_counts / norm)[:, None, :], b_beta)[:, 0] + prior
        still = moving[:, None]  # a converged user keeps its last update, as in scikit-learn
        moving = moving & ((b_gamma_next - b_gamma).abs().mean(1) >= TOLERANCE)
        b_gamma = torch.where(still, b_gamma_next, b_gamma)
        b_theta = torch.where(still, dirichlet_expectation(b_gamma), b_theta)
        if not moving.any():
            break
        if moving.sum() < len(moving) // 2:  # the working set shrinks to the moving users once they are half
            theta[active] = b_theta
            keep = moving.nonzero()[:, 0]
            active, moving, b_beta, b_counts = active[keep], moving[keep], b_beta[keep], b_counts[keep]
            b_gamma, b_theta = b_gamma[keep], b_theta[keep]
    theta[active] = b_theta
    norm = torch.bmm(beta, theta[:, :, None])[:, :, 0] + eps
    statistics = torch.zeros_like(word)
    return statistics.index_add_(0, ids.flatten(), (theta[:, None, :] * (counts / norm)[:, :, None]).flatten(0, 1))


def _batches(x: sp.csr_matrix) -> list[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(rows, ids, counts) per batch of rows of like length, padded with id x.shape[1] and count 0."""
    lengths = np.diff(x.indptr)
    batches = []
    for rows in np.array_split(np.argsort(lengths, kind="stable"), max(1, -(-x.shape[0] // BATCH))):
        width = int(lengths[rows].max()) if len(rows) else 0
        ids = np.full((len(rows), width), x.shape[1], dtype=np.int64)
        counts = np.zeros((len(rows), width))
        for i, row in enumerate(rows):
            start, end = x.indptr[row], x.indptr[row + 1]
            ids[i, :end - start], counts[i, :end - start] = x.indices[start:end], x.data[start:end]
        batches.append((rows, torch.from_numpy(ids), torch.from_numpy(counts)))
    return batches


def fit_lda(x: sp.csr_matrix, topics: int, doc_topic_prior: float, passes: int, seed: int) -> np.ndarray:
    """exp(E[log p(id | topic)]) [topics, ids] of LDA fit on the users' rows x (scikit-learn's
    `exp_dirichlet_component_` after `passes` batch EM passes; topic_word_prior 1 / topics)."""
    rng = np.random.RandomState(seed)  # scikit-learn's draws, in its order
    n, words = x.shape
    word = dirichlet_expectation(torch.from_numpy(rng.gamma(100.0, 0.01, (topics, words))))
    rows, ids, counts = zip(*_batches(sp.csr_matrix(x, dtype=np.float64)), strict=True)
    with one_thread_workers() as pool:
        for _ in range(passes):
            gamma = torch.from_numpy(rng.gamma(100.0, 0.01, (n, topics)))
            padded = torch.cat([word.T, torch.zeros(1, topics, dtype=word.dtype)])
            shares = pool.map(_batch_statistics, repeat(padded), ids, counts, [gamma[r] for r in rows],
                              repeat(doc_topic_prior))
            statistics = torch.stack(list(shares)).sum(0)[:words].T
            word = dirichlet_expectation(1.0 / topics + statistics * word)
    return word.numpy()
