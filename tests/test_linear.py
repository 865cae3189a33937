"""The linear models on the raw features: the design rows, the cross-validated C, Category LR, and the
recommended method's transfer head."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from metaheac.linear import lr as linear
from metaheac.linear import method as linear_methods
from metaheac.linear.head import LinearAdapted, LinearHead
from metaheac.method_names import RECOMMENDED
from metaheac.methods import load_model, method
from metaheac.model.baselines import LogisticRegression
from metaheac.model.store import save_model
from metaheac.recommended import bank as banks
from metaheac.recommended import fit as transfer
from metaheac.recommended.config import RecommendedConfig
from metaheac.recommended.factors import FactorConfig, fit_factors
from metaheac.recommended.network import general_logit
from metaheac.recommended.topics import TopicConfig, fit_topics
from metaheac.training.config import MetaTrainConfig
from tests.tiny import tiny_features, tiny_rows, with_category

FEATURES = tiny_features()
CONFIG = linear.LinearConfig(cs=(0.01, 0.1, 1.0, 10.0))
FACTORS = FactorConfig(dim=4, models=2, min_users=5, learning_rate=0.03, batch_size=128, seed=0)
TOPICS = TopicConfig(topics=4, passes=5, seed=0)


def test_design_rows_are_binary_multi_hot() -> None:
    """A single field puts 1 on its id, a list field 1 on each valid id (not 1/length: bench/README.md, ninth
    round), and an empty list nothing; a linear head's score is the sigmoid of design @ weight + bias."""
    users = torch.arange(50)
    x = linear.design(FEATURES, users).toarray()
    offsets = linear.column_offsets(FEATURES.schema)
    single, lists = FEATURES.users.single[users].numpy(), FEATURES.users.lists[users].numpy()
    assert (x[np.arange(50), offsets[0] + single[:, 0]] == 1).all()
    assert (x[:, offsets[0]:offsets[1]].sum(1) == 1).all()
    first = FEATURES.schema.list_lengths[0]
    for u in range(50):
        ids = lists[u, :first][lists[u, :first] != 0]
        block = x[u, offsets[2]:offsets[3]]
        assert block.sum() == len(ids) and (block[ids] >= 1).all()  # a repeated id counts twice
    w = np.random.default_rng(0).normal(size=offsets[-1])
    head = LinearHead(w, 0.3, 0.0)
    adapted = LinearAdapted(LogisticRegression(FEATURES.schema), head)
    expected = x @ w + 0.3
    assert torch.logit(adapted.score(FEATURES, 0, users).double()).numpy() == pytest.approx(expected, abs=1e-4)


def test_sklearn_lr_is_scikit_learns_fit_at_the_c_its_cross_validation_chose() -> None:
    rows = tiny_rows(FEATURES, [400])
    seeds = {0: rows}
    ((_, adapted),) = method("sklearn LR").adapt_campaigns(LogisticRegression(FEATURES.schema), FEATURES, seeds)
    x, y = linear.design(FEATURES, rows.user), rows.label.numpy()
    assert adapted.head.c in linear_methods.SKLEARN_CS
    reference = SkLogisticRegression(C=adapted.head.c, max_iter=1000).fit(x, y)
    assert adapted.head.weight == pytest.approx(reference.coef_.ravel(), abs=1e-6)
    users = torch.arange(100)
    assert adapted.score(FEATURES, 0, users).numpy() == pytest.approx(
        reference.predict_proba(linear.design(FEATURES, users))[:, 1], abs=1e-5)
    one_class = rows.select(rows.label == 0)
    ((_, base),) = method("sklearn LR").adapt_campaigns(LogisticRegression(FEATURES.schema), FEATURES, {0: one_class})
    assert not base.head.weight.any() and base.head.bias < 0


def test_pooled_lr_is_one_model_over_the_training_campaigns_that_survives_a_save(tmp_path) -> None:
    rows = tiny_rows(FEATURES, [200, 200, 200, 200, 200, 200])  # the advertisers' parities differ
    pooled = method("pooled LR")
    general = pooled.train(FEATURES, rows, seed=0, progress=False)
    save_model(general, str(tmp_path), method="pooled LR")
    loaded, _ = load_model(str(tmp_path))
    x, y = linear.design(FEATURES, rows.user), rows.label.numpy()
    users = torch.arange(100)
    scores = [a.score(FEATURES, c, users).numpy()
              for c, a in pooled.adapt_campaigns(loaded, FEATURES, {1: rows, 2: rows})]
    assert scores[0] == pytest.approx(scores[1])  # no seeds: the same ranking for every campaign
    reference = linear_methods.sklearn_lr(x, y, 3, 0, groups=rows.campaign.numpy())
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-(linear.design(FEATURES, users) @ reference.weight
                                                         + reference.bias))), abs=1e-5)


def test_fit_matches_sklearn_and_cross_validation_picks_the_c_of_least_held_out_loss() -> None:
    rows = tiny_rows(FEATURES, [600])
    x, y = linear.design(FEATURES, rows.user), rows.label.numpy()
    model = linear.fit_cv(x, y, dataclasses.replace(CONFIG, tol=1e-9))  # the same objective, solved tightly
    reference = SkLogisticRegression(C=model.c, max_iter=5000, tol=1e-10).fit(x, y)
    assert model.weight == pytest.approx(reference.coef_.ravel(), abs=1e-3)
    assert model.bias == pytest.approx(reference.intercept_[0], abs=1e-3)
    assert model.c > 0.01  # a real signal: the strongest penalty is not the best
    noise = np.random.default_rng(1).random(len(y)) < 0.3
    assert linear.fit_cv(x, noise, CONFIG).c == 0.01  # pure noise: the strongest penalty wins


def test_dense_columns_are_solved_by_newton_to_the_same_optimum() -> None:
    """A few dense heavy-tailed columns (as the recommended method's): Newton's optimum is L-BFGS's and
    scikit-learn's, with an offset and the C grid's warm starts."""
    rng = np.random.default_rng(3)
    x = rng.exponential(size=(500, 6)) ** 2  # heavy tails, as standardised topic shares
    x[:, 5] = x[:, 4] * 2 + 1e-3 * rng.normal(size=500)  # nearly collinear: only the penalty separates them
    offset = rng.normal(size=500)
    y = (rng.random(500) < 1 / (1 + np.exp(-(offset + x[:, 0] - x[:, 1] - 1)))).astype(float)
    tight = dataclasses.replace(CONFIG, tol=1e-9)
    dense = linear.fit_cv(x, y, tight, offset=offset)
    lbfgs = linear.fit_cv(sp.csr_matrix(x), y, tight, offset=offset)
    assert dense.c == lbfgs.c and dense.logit(x) == pytest.approx(lbfgs.logit(x), abs=1e-3)

    def objective(model: linear.LinearModel) -> tuple[float, np.ndarray]:
        z = offset + model.logit(x)
        gradient = x.T @ (1 / (1 + np.exp(-z)) - y) + model.weight / model.c
        return float(np.sum(np.logaddexp(0, z) - y * z) + model.weight @ model.weight / (2 * model.c)), gradient

    # the optimum itself: L-BFGS stops short along the collinear pair, Newton does not
    assert objective(dense)[0] <= objective(lbfgs)[0] + 1e-9 and np.abs(objective(dense)[1]).max() < 1e-6
    reference = SkLogisticRegression(C=1.0, max_iter=5000, tol=1e-10).fit(x, y)
    plain = linear.fit_cv(x, y, dataclasses.replace(tight, cs=(1.0,)))
    assert plain.weight == pytest.approx(reference.coef_.ravel(), abs=1e-4)


def test_one_class_gives_the_base_rate() -> None:
    rows = tiny_rows(FEATURES, [40])
    x = linear.design(FEATURES, rows.user)
    model = linear.fit_cv(x, np.zeros(40), CONFIG)
    assert (model.weight == 0).all() and 1 / (1 + np.exp(-model.bias)) < 0.05


def test_category_lr_fits_per_category_and_falls_back_to_all() -> None:
    features = with_category([1, 1, 2, 2, 3, 1, 2, 3])
    rows = tiny_rows(features, [100, 100, 100, 100])  # campaigns 0..3: categories 1, 1, 2, 2
    category_lr = linear.fit_category_lr(features, rows, CONFIG)
    assert set(category_lr.by_category) == {1, 2}
    assert category_lr.model(features, 5) is category_lr.by_category[1]
    assert category_lr.model(features, 4) is category_lr.overall  # category 3: never trained on
    without = linear.fit_category_lr(FEATURES, rows, CONFIG)  # a schema without a hierarchy
    assert not without.by_category and without.model(FEATURES, 5) is without.overall


def test_an_offset_is_the_prior_the_penalty_pulls_toward() -> None:
    rows = tiny_rows(FEATURES, [600])
    x, y = linear.design(FEATURES, rows.user), rows.label.numpy()
    offset = x @ np.random.default_rng(2).normal(size=x.shape[1])
    tight = dataclasses.replace(CONFIG, cs=(0.3,), tol=1e-10)
    model = linear.fit_cv(x, y, tight, offset=offset)
    # optimality of sum log-loss(offset + x w + b) + |w|^2 / 2C: the gradient vanishes
    p = 1 / (1 + np.exp(-(offset + model.logit(x))))
    assert np.abs(x.T @ (p - y) + model.weight / 0.3).max() < 1e-3 and abs((p - y).sum()) < 1e-3
    assert not np.allclose(model.weight, linear.fit_cv(x, y, tight).weight, atol=1e-2)  # the offset mattered
    # a very strong penalty keeps the prior: only the bias moves
    assert np.abs(linear.fit_cv(x, y, dataclasses.replace(CONFIG, cs=(1e-6,)), offset=offset).weight).max() < 1e-3


def test_one_standard_error_rule_prefers_the_stronger_penalty_within_noise() -> None:
    rng = np.random.default_rng(0)
    losses = [0.50 + rng.normal(0, 0.5, 200), 0.49 + rng.normal(0, 0.5, 200), 0.48 + rng.normal(0, 0.5, 200)]
    losses = [v - v.mean() + m for v, m in zip(losses, (0.50, 0.49, 0.48), strict=True)]
    assert linear._choose_c(losses, [0.01, 0.1, 1.0], one_se=False) == 1.0
    assert linear._choose_c(losses, [0.01, 0.1, 1.0], one_se=True) == 0.01
    sharp = [v * 0.01 + (1 - 0.01) * m for v, m in zip(losses, (0.50, 0.49, 0.48), strict=True)]
    assert linear._choose_c(sharp, [0.01, 0.1, 1.0], one_se=True) == 1.0  # a clear win is kept


def test_transfer_head_folds_the_priors_and_the_bank_into_one_linear_head() -> None:
    features = with_category([1, 1, 2, 2, 1, 1, 2, 2])
    rows = tiny_rows(features, [150, 150, 150, 150, 300])
    train = rows.select(rows.campaign < 4)
    factors = fit_factors(features, train, FACTORS)
    topics = fit_topics(features, TOPICS)
    settings = RecommendedConfig()
    bank = banks.fit_bank(features, train, linear.fit_category_lr(features, train, CONFIG), factors, topics,
                          settings, 0)
    network = method("MLP+pre-training").build(features.schema)
    seeds = rows.select(rows.campaign == 4)
    plain = dataclasses.replace(settings, residual_lr=False)
    config = linear.LinearConfig(cs=settings.cs, one_se=True, seed=0)
    head = transfer.fit_transfer(network, bank, features, 4, seeds, plain, 0)
    vector = bank.factors.prior(features, 4)  # category 1's vector + advertiser 2's
    assert vector == pytest.approx(bank.factors.category[1] + bank.factors.advertiser[2])
    topic_prior = bank.topic_models.prior(features, 4)  # the same, over the topic mix
    models = bank.topic_models
    assert topic_prior.weight == pytest.approx(models.category[1].weight + models.advertiser[2].weight)

    def prior(x: sp.spmatrix, mixes: np.ndarray) -> np.ndarray:
        return bank.category_lr.by_category[1].logit(x) + topic_prior.logit(mixes)

    def dense(users: torch.Tensor) -> np.ndarray:
        x, mixes = linear.design(features, users), topics.of_users(features, users)
        general = general_logit(network, features, 4, users)
        return transfer.transfer_columns(bank, x, general, vector, mixes, topic_prior, settings.scale)

    seed_mixes = topics.of_users(features, seeds.user)
    stacked = linear.fit_cv(dense(seeds.user), seeds.label.numpy(), config,
                            offset=prior(linear.design(features, seeds.user), seed_mixes))
    users = torch.arange(100)
    x, mixes = linear.design(features, users), topics.of_users(features, users)
    expected = prior(x, mixes) + stacked.logit(dense(users))
    general = general_logit(network, features, 4, users)
    assert head.logit(x, general, mixes) == pytest.approx(expected, abs=1e-8)
    empty = transfer.fit_transfer(network, bank, features, 4, seeds.select(seeds.campaign < 0), plain, 0)
    assert empty.logit(x, np.zeros(100), mixes) == pytest.approx(prior(x, mixes))  # no seeds: the prior

    # the residual LR: the raw design's fit with the head's logit as offset, folded into the same head
    with_residual = transfer.fit_transfer(network, bank, features, 4, seeds, settings, 0)
    seed_x = linear.design(features, seeds.user)
    seed_general = general_logit(network, features, 4, seeds.user)
    offset = head.logit(seed_x, seed_general, seed_mixes)
    residual = linear.fit_cv(seed_x, seeds.label.numpy(), linear.LinearConfig(cs=settings.residual_cs, seed=0),
                             offset=offset)
    assert np.abs(residual.weight).max() > 1e-3  # it has something to add, so the check below can fail
    assert with_residual.logit(x, general, mixes) == pytest.approx(head.logit(x, general, mixes)
                                                                   + residual.logit(x), abs=1e-8)

    # the network's column left out (the ablation): no weight on the network, the rest fit as without it
    assert head.general_weight != 0  # with it, the network has a share, so the checks below can fail
    ablated = transfer.fit_transfer(network, bank, features, 4, seeds,
                                    dataclasses.replace(plain, network_column=False), 0)
    assert ablated.general_weight == 0
    zero = np.zeros(len(seeds.user))
    without = linear.fit_cv(np.delete(transfer.transfer_columns(bank, seed_x, zero, vector, seed_mixes, topic_prior,
                                                                settings.scale), len(bank.bias), axis=1),
                            seeds.label.numpy(), config, offset=prior(seed_x, seed_mixes))
    assert ablated.logit(x, general, mixes) == pytest.approx(
        prior(x, mixes) + without.logit(np.delete(dense(users), len(bank.bias), axis=1)), abs=1e-6)


def test_recommended_method_trains_adapts_and_scores_through_the_method_contract(tmp_path) -> None:
    features = with_category([1, 1, 2, 2, 1, 3, 2, 2])
    rows = tiny_rows(features, [150, 150, 150, 150, 0, 300])
    recommended = method(RECOMMENDED)
    general = recommended.train(features, rows.select(rows.campaign < 4),
                                meta_config=MetaTrainConfig(max_steps=2, device="cpu"), seed=0, progress=False)
    bank = general.bank(features)
    save_model(general, str(tmp_path), method=RECOMMENDED, settings=recommended.settings_of(general))
    general, _ = load_model(str(tmp_path))  # the bank travels with the network
    loaded = general.bank(features)
    assert loaded.weight == pytest.approx(bank.weight) and loaded.std == pytest.approx(bank.std)
    for name in ("embedding", "category", "advertiser", "mean", "cov"):  # the factors travel too
        assert getattr(loaded.factors, name) == pytest.approx(getattr(bank.factors, name))
    for name in ("word", "prior", "steps", "mean", "cov"):  # and the topics
        assert getattr(loaded.topics, name) == pytest.approx(getattr(bank.topics, name))
    for value, model in bank.topic_models.advertiser.items():
        assert loaded.topic_models.advertiser[value].weight == pytest.approx(model.weight)
    seeds = rows.select(rows.campaign == 5)  # category 3: no training campaign, the overall model
    ((_, adapted),) = recommended.adapt_campaigns(general, features, {5: seeds})
    users = torch.arange(200)
    x = linear.design(features, users)
    expected = adapted.head.logit(x, general_logit(general, features, 5, users),
                                  loaded.topics.of_users(features, users))
    assert torch.logit(adapted.score(features, 5, users, batch_size=64).double()).numpy() == pytest.approx(
        expected, abs=1e-3)
    category = loaded.category_lr
    assert set(category.by_category) == {1, 2} and category.model(features, 5) is category.overall


def test_the_recommended_settings_are_saved_with_the_model_and_old_config_json_loads_alike(tmp_path) -> None:
    """Settings off the defaults travel in config.json's "settings"; a config.json written before they had
    their own key (four of them in "model", the rest unrecorded) loads with the same settings and scores the
    same, bit for bit."""
    features = with_category([1, 1, 2, 2, 1, 3, 2, 2])
    rows = tiny_rows(features, [150, 150, 150, 150, 0, 300])
    recommended = method(RECOMMENDED)
    settings = RecommendedConfig(factors=dataclasses.replace(FACTORS, dim=3, models=1), residual_lr=False,
                                 topics=dataclasses.replace(TOPICS, topics=3))
    general = recommended.train(features, rows.select(rows.campaign < 4), seed=0, progress=False, settings=settings,
                                meta_config=MetaTrainConfig(max_steps=1, device="cpu"))
    save_model(general, str(tmp_path / "new"), method=RECOMMENDED, settings=recommended.settings_of(general))
    new, info = load_model(str(tmp_path / "new"))
    assert new.settings == settings.seeded(0) and RecommendedConfig.from_dict(info["settings"]) == new.settings
    old = json.loads((tmp_path / "new" / "config.json").read_text())
    del old["settings"]
    old["model"] |= {"audience_factors": 3, "audience_factor_fits": 1, "user_topics": 3, "residual_lr": False}
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    loaded, _ = load_model(str(tmp_path / "old"))
    assert (loaded.settings.factors.dim, loaded.settings.topics.topics, loaded.settings.residual_lr) == (3, 3, False)
    seeds, users = {5: rows.select(rows.campaign == 5)}, torch.arange(200)
    ((_, a),) = recommended.adapt_campaigns(new, features, seeds)
    ((_, b),) = recommended.adapt_campaigns(loaded, features, seeds)
    assert torch.equal(a.score(features, 5, users), b.score(features, 5, users))
    with_residual = dataclasses.replace(settings, residual_lr=True)
    assert recommended.read_settings({"settings": with_residual.to_dict()}) == with_residual  # it is read
    with pytest.raises(ValueError, match="unknown field 'factors.width'"):
        recommended.parse_settings({"factors": {"width": 3}})


def test_category_lr_scores_the_same_after_a_save_and_load(tmp_path) -> None:
    features = with_category([1, 1, 2, 2, 1, 3, 2, 2])
    rows = tiny_rows(features, [150, 150, 150, 150, 0, 300])
    category_lr = method("Category LR")
    general = category_lr.train(features, rows.select(rows.campaign < 4), seed=0, progress=False)
    save_model(general, str(tmp_path), method="Category LR")
    loaded, _ = load_model(str(tmp_path))  # a float32 network beside float64 Category LR weights
    seeds = {2: rows.select(rows.campaign == 2)}
    users = torch.arange(200)
    ((_, before),) = category_lr.adapt_campaigns(general, features, seeds)
    ((_, after),) = category_lr.adapt_campaigns(loaded, features, seeds)
    assert after.score(features, 2, users).numpy() == pytest.approx(before.score(features, 2, users).numpy(), abs=1e-5)


def test_campaign_fits_on_threads_keep_the_order_and_stay_a_bounded_window_ahead() -> None:
    submitted: list[int] = []

    def fit(campaign: int, rows: object) -> LinearHead:
        submitted.append(campaign)
        time.sleep(0.01 * (campaign % 3))  # later campaigns often finish first
        return LinearHead(np.full(2, float(campaign)), 0.0, 0.0)

    window = linear_methods._FITS_AHEAD * torch.get_num_threads()
    for k, (campaign, head) in enumerate(linear_methods.fit_each(fit, {c: None for c in range(20)})):
        assert campaign == k and head.weight[0] == k
        assert max(submitted) < k + window + 1  # heads held at once stay bounded, whatever the campaigns
