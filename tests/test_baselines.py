"""The baselines, the method registry, and joint pre-training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaheac.adaptation import AdaptConfig
from metaheac.methods import METHODS, method
from metaheac.model.baselines import MLP, LogisticRegression, MMoE, SharedBottom
from metaheac.model.heac import HybridExpertsCritics
from metaheac.training.config import MetaTrainConfig
from metaheac.training.joint import JointTrainConfig, joint_train
from tests.tiny import TINY, tiny_features, tiny_rows

BASELINES = [LogisticRegression, MLP, SharedBottom, MMoE]


def data(counts: tuple[int, ...] = (40, 30, 50, 20)):
    features = tiny_features()
    return features, tiny_rows(features, list(counts))


@pytest.mark.parametrize("network", BASELINES)
def test_baselines_give_one_probability_per_row(network) -> None:
    features, rows = data()
    torch.manual_seed(0)
    p = network(features.schema, TINY)(features.batch(rows.campaign, rows.user))
    assert p.shape == (len(rows),) and p.dtype == torch.float32
    assert bool(((p > 0) & (p < 1)).all())


@pytest.mark.parametrize("network", [*BASELINES, HybridExpertsCritics])
def test_predict_runs_per_task_parameters_and_a_shared_campaign(network) -> None:
    """A leading task axis on the parameters runs each task's own network; one campaign [1, F_c, d]
    broadcasts over the rows. Adaptation and scoring rely on both."""
    features, rows = data()
    torch.manual_seed(0)
    net = network(features.schema, TINY)
    batch = features.batch(torch.zeros_like(rows.user), rows.user)  # every row on campaign 0
    user, campaign = net.embeddings.user(batch), net.embeddings.campaign(batch)
    params = [{k: w + 0.1 * torch.randn_like(w) for k, w in net.dense_parameters().items()} for _ in range(3)]
    stacked = {k: torch.stack([p[k] for p in params]) for k in params[0]}
    batched = net.predict(stacked, user.expand(3, *user.shape), campaign[:1].expand(3, 1, *campaign.shape[1:]))
    for t, p in enumerate(params):
        torch.testing.assert_close(batched[t], net.predict(p, user, campaign))


def test_logistic_regression_starts_at_one_half_and_learns() -> None:
    features, rows = data()
    net = LogisticRegression(features.schema)
    batch = features.batch(rows.campaign, rows.user)
    torch.testing.assert_close(net(batch), torch.full((len(rows),), 0.5))
    before = F.binary_cross_entropy(net(batch), rows.label).item()
    joint_train(net, features, rows, JointTrainConfig(epochs=30, batch_size=32, lr=0.05), progress=False)
    assert F.binary_cross_entropy(net(batch), rows.label).item() < before - 0.05


def test_the_registry_names_the_papers_methods_and_builds_each() -> None:
    assert list(METHODS) == [
        "LR",
        "MLP one-stage",
        "MLP+pre-training",
        "Shared-Bottom+pre-training",
        "MMoE+pre-training",
        "MetaHeac",
        "MetaHeac w/o HC",
        "MetaHeac w/o HE",
        "MetaHeac w/o Meta",
        "sklearn LR",
        "pooled LR",
        "Category LR",
        "MetaHeac+LR",
    ]
    schema = tiny_features().schema
    built = {name: spec.build(schema, TINY) for name, spec in METHODS.items()}
    assert isinstance(built["LR"], LogisticRegression)
    assert isinstance(built["Shared-Bottom+pre-training"], SharedBottom)
    assert isinstance(built["MMoE+pre-training"], MMoE)
    assert (built["MetaHeac"].config.experts, built["MetaHeac"].config.critics) == (3, 2)
    assert built["MetaHeac w/o HC"].config.critics == 1 and built["MetaHeac w/o HC"].config.experts == 3
    assert built["MetaHeac w/o HE"].config.experts == 1 and built["MetaHeac w/o HE"].config.critics == 2
    assert {name for name, spec in METHODS.items() if spec.training == "none"} == {
        "LR", "MLP one-stage", "sklearn LR", "pooled LR", "Category LR"}
    assert {name for name, spec in METHODS.items() if spec.training == "meta"} == {
        "MetaHeac",
        "MetaHeac w/o HC",
        "MetaHeac w/o HE",
        "MetaHeac+LR",
    }
    assert method("LR").adapt_config().from_scratch
    assert not method("MetaHeac w/o Meta").adapt_config(AdaptConfig()).from_scratch
    with pytest.raises(ValueError, match="unknown method 'Hubble'"):
        method("Hubble")


@pytest.mark.parametrize("name", ["MLP one-stage", "MMoE+pre-training", "MetaHeac w/o HC"])
def test_train_general_model_trains_as_the_method_says(name: str) -> None:
    features, rows = data()
    kwargs = {
        "meta_config": MetaTrainConfig(task_count=2, batch_size=8, max_steps=3),
        "joint_config": JointTrainConfig(batch_size=16, max_steps=3),
        "progress": False,
    }
    trained = method(name).train(features, rows, TINY, seed=7, **kwargs)
    torch.manual_seed(7)
    fresh = METHODS[name].build(features.schema, TINY)
    changed = any(not torch.equal(a, b) for a, b in zip(trained.parameters(), fresh.parameters(), strict=True))
    assert changed == (METHODS[name].training != "none")
    assert isinstance(trained, HybridExpertsCritics) == name.startswith("MetaHeac")


def test_joint_training_lowers_the_loss_and_is_seeded() -> None:
    features, rows = data((120, 120, 120, 120))
    batch = features.batch(rows.campaign, rows.user)

    def trained(seed: int) -> MLP:
        torch.manual_seed(0)
        net = MLP(features.schema, TINY)
        result = joint_train(
            net, features, rows, JointTrainConfig(epochs=6, batch_size=64, lr=0.01, seed=seed), progress=False
        )
        assert result.steps == 6 * 8 and len(result.losses) == result.steps
        return net

    torch.manual_seed(0)
    before = F.binary_cross_entropy(MLP(features.schema, TINY)(batch), rows.label).item()
    net = trained(1)
    assert F.binary_cross_entropy(net(batch), rows.label).item() < before - 0.1
    assert all(not t.sparse for t in net.embeddings.tables())  # sparse only while training
    same, other = trained(1), trained(2)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), same.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(net.parameters(), other.parameters(), strict=True))


def test_joint_training_moves_only_the_table_rows_it_reads() -> None:
    """Lazy Adam on sparse gradients: a table row no training row reads keeps its initial value."""
    features, rows = data()
    rows = rows.select(slice(0, 8))  # 8 users read at most 24 of kw1's 49 ids
    torch.manual_seed(0)
    net = SharedBottom(features.schema, TINY)
    before = net.embeddings.user_lists[1].weight.detach().clone()
    joint_train(net, features, rows, JointTrainConfig(batch_size=4, epochs=2), progress=False)
    read = features.users.lists[rows.user][:, 4:].unique().long()  # kw1's ids (after interest1's 4)
    unread = torch.ones(len(before), dtype=torch.bool)
    unread[read] = False
    after = net.embeddings.user_lists[1].weight.detach()
    assert bool(unread.any()) and torch.equal(after[unread], before[unread])
    assert not torch.equal(after[read[read > 0]], before[read[read > 0]])


def test_joint_training_needs_rows() -> None:
    features, rows = data()
    with pytest.raises(ValueError, match="no rows"):
        joint_train(MLP(features.schema, TINY), features, rows.select(slice(0, 0)), progress=False)
