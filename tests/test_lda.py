"""The LDA fit against scikit-learn's batch fit (one process: the same random draws in the same order)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import LatentDirichletAllocation

from metaheac.recommended import lda


@pytest.mark.parametrize("batch", [7, 1024])  # many batches of like lengths, or one
def test_fit_is_scikit_learns_batch_fit(monkeypatch, batch: int) -> None:
    rng = np.random.default_rng(0)
    dense = (rng.random((300, 40)) < rng.random((300, 1)) * 0.3) * rng.integers(1, 3, (300, 40))
    dense[:5] = 0  # users with no ids
    x = sp.csr_matrix(dense.astype(np.float64))
    monkeypatch.setattr(lda, "BATCH", batch)
    ours = lda.fit_lda(x, 4, 0.1, 6, seed=3)
    reference = LatentDirichletAllocation(4, doc_topic_prior=0.1, learning_method="batch", max_iter=6,
                                          random_state=3, n_jobs=1).fit(x)
    assert ours == pytest.approx(reference.exp_dirichlet_component_, rel=1e-5)  # sums in another order
