"""The user topics: the E-step against scikit-learn's, what the topics find, and the models over the mixes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import LatentDirichletAllocation

from metaheac.data.tensors import Features, UserTable
from metaheac.evaluation.metrics import roc_auc
from metaheac.linear import lr as linear
from metaheac.recommended import topics
from metaheac.recommended.config import RecommendedConfig
from tests.tiny import tiny_features, tiny_rows, with_category


def two_pools(users: int = 400) -> tuple[Features, np.ndarray]:
    """Tiny features whose list ids come from one of two disjoint pools per user (which: the user's age
    parity), with repeats and empty lists as tiny_features has them."""
    features = with_category([1, 1, 2, 2, 1, 1, 2, 2])
    base = tiny_features(users)
    pool = base.users.single[:, 0].numpy() % 2
    lists = base.users.lists.numpy().copy()
    start = 0
    for field in features.schema.user_lists:
        part = lists[:, start:start + field.length]
        half = field.vocab_size // 2
        lists[:, start:start + field.length] = np.where(part > 0, 1 + (part - 1) % (half - 1) + pool[:, None] * half,
                                                         0)
        start += field.length
    users_table = UserTable(base.users.uid, base.users.single, torch.from_numpy(lists).int())
    return Features(features.schema, users_table, features.campaigns), pool


def test_inferred_mixes_are_scikit_learns_transform() -> None:
    features = tiny_features()  # list ids drawn with repeats: a repeat counts once on both sides
    x = linear.design(features, np.arange(300))
    x.data[:] = 1.0
    lda = LatentDirichletAllocation(3, doc_topic_prior=0.1, learning_method="batch", max_iter=10, random_state=0)
    kept = np.flatnonzero(np.asarray(x.sum(0)).ravel() > 0)
    lda.fit(x[:, kept])
    word = np.zeros((x.shape[1], 3), dtype=np.float32)
    word[kept] = lda.exp_dirichlet_component_.T
    fitted = topics.UserTopics(word, 0.1, 100, np.zeros(3), np.eye(3))
    assert fitted.of_users(features, np.arange(300)) == pytest.approx(lda.transform(x[:, kept]), abs=0.01)


def test_topics_find_the_pools_and_leave_out_rare_ids() -> None:
    features, pool = two_pools()
    fitted = topics.fit_topics(features, topics.TopicConfig(topics=2, min_users=8, seed=0))
    x = linear.design(features, np.arange(len(pool)))
    seen = np.asarray((x != 0).sum(0)).ravel()
    assert not fitted.word[seen < 8].any() and (fitted.word[seen >= 8] > 0).all()
    mixes = fitted.of_users(features, np.arange(len(pool)))
    assert mixes.sum(1) == pytest.approx(np.ones(len(pool)), abs=1e-5)
    topic = mixes.argmax(1)
    agreement = (topic == pool).mean()
    assert max(agreement, 1 - agreement) > 0.9  # which topic is which pool is arbitrary
    lonely = topics.UserTopics(np.zeros_like(fitted.word), 0.1, 5, np.zeros(2), np.eye(2))
    assert lonely.of_users(features, np.arange(3)) == pytest.approx(np.full((3, 2), 0.5))  # no ids: flat


def test_topic_models_carry_a_category_and_an_advertiser_to_campaigns_never_trained_on() -> None:
    """tiny_rows' label is the user's age parity (here the user's pool) against the advertiser's parity;
    categories mix both parities, so the advertisers' models hold the sign. Campaigns 5 and 7 are not
    trained on; campaign 6's advertiser never was, so it gets its category's model alone."""
    features, _ = two_pools()  # advertisers 3, 2, 3, 4, 2, 2, 6, 3
    rows = tiny_rows(features, [400, 400, 400, 400, 0, 400, 0, 400])
    fitted = topics.fit_topics(features, topics.TopicConfig(topics=2, min_users=8, seed=0))
    grid = linear.LinearConfig(cs=RecommendedConfig().topic_cs, seed=0)
    models = topics.fit_topic_models(features, rows.select(rows.campaign < 4), fitted, grid)
    assert set(models.category) == {1, 2} and set(models.advertiser) == {2, 3, 4}
    assert fitted.mean.sum() == pytest.approx(1.0) and fitted.cov.shape == (2, 2)
    for campaign in (5, 7):
        mine = rows.select(rows.campaign == campaign)
        logit = models.prior(features, campaign).logit(fitted.of_users(features, mine.user))
        assert roc_auc(mine.label.numpy(), logit) > 0.75
    assert models.prior(features, 6).weight == pytest.approx(models.category[2].weight)


def test_a_users_table_mixes_are_inferred_once_and_a_new_table_gets_its_own() -> None:
    features, _ = two_pools()
    fitted = topics.fit_topics(features, topics.TopicConfig(topics=2, min_users=8, seed=0))
    columns, values = linear.user_columns(features, torch.arange(400))
    expected = fitted.mixes(columns, values > 0).double().numpy()
    calls: list[int] = []
    infer = fitted.mixes
    fitted.mixes = lambda c, p: calls.append(len(c)) or infer(c, p)  # type: ignore[method-assign]
    assert fitted.of_users(features, np.array([5, 3, 5])) == pytest.approx(expected[[5, 3, 5]], abs=1e-6)
    assert fitted.of_users(features.to("cpu"), np.arange(400)) == pytest.approx(expected, abs=1e-6)
    assert calls == [2, 398]  # each user once: a repeat in a request and the users known are not inferred
    shuffled = UserTable(features.users.uid, features.users.single.flip(0), features.users.lists.flip(0))
    other = Features(features.schema, shuffled, features.campaigns)
    assert fitted.of_users(other, np.arange(400)) == pytest.approx(expected[::-1], abs=1e-6)
    assert calls == [2, 398, 400]
