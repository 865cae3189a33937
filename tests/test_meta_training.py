"""Meta-training: the batched sparse path against the plain loop, sampling, checkpoints and resume."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from metaheac.data.tensors import Rows
from metaheac.model.config import ModelConfig
from metaheac.model.heac import weighted_bce
from metaheac.runtime.phases import phase, recording
from metaheac.training.bags import BagPlan, bag_sum
from metaheac.training.config import MetaTrainConfig
from metaheac.training.lazy_adam import LazyAdam
from metaheac.training.meta import meta_gradients, meta_train
from metaheac.training.sampling import TaskSampler, campaign_weights, distinct
from tests.oracle import oracle_meta_gradients
from tests.tiny import TINY
from tests.tiny_meta import COUNTS, config, data, model


def sampler(rows: Rows, tasks: int = 4, batch: int = 16, sampling: str = "normal", seed: int = 1) -> TaskSampler:
    return TaskSampler(rows, tasks, batch, sampling, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("net_config", [TINY, replace(TINY, experts=1), replace(TINY, critics=1)])
def test_batched_meta_gradient_equals_the_plain_loop(net_config: ModelConfig) -> None:
    features, rows = data()
    net = model(net_config)
    for seed in range(3):
        tasks = sampler(rows, seed=seed).sample()
        oracle_loss, oracle = oracle_meta_gradients(net, features, rows, tasks, inner_lr=0.5)
        fast_loss, fast = meta_gradients(net, features, rows, tasks, inner_lr=0.5)
        assert fast.keys() == oracle.keys()
        torch.testing.assert_close(fast_loss, oracle_loss, rtol=0, atol=1e-12)
        for name, expected in oracle.items():
            got = fast[name].to_dense() if fast[name].is_sparse else fast[name]
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12, msg=name)
        assert any(oracle[name].abs().max() > 0 for name in oracle if name.startswith("embeddings."))


def test_embedding_gradients_are_sparse_and_coalesced() -> None:
    features, rows = data()
    _, grads = meta_gradients(model(), features, rows, sampler(rows).sample(), inner_lr=0.5)
    table = grads["embeddings.user_lists.0.weight"]
    assert table.is_sparse and table.is_coalesced()
    assert 0 not in table.indices()[0].tolist()  # list padding is read by no one


def test_bag_sum_is_twice_differentiable() -> None:
    index, bag = torch.tensor([0, 2, 2, 1, 0]), torch.tensor([0, 0, 1, 1, 3])  # bag 2 is empty
    weight = torch.tensor([0.5, 0.5, 1.0, 2.0, 1.0], dtype=torch.float64)
    plan = BagPlan.build(index, bag, weight, (4, 3), torch.argsort(index, stable=True))
    table = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    expected = torch.stack([0.5 * table[0] + 0.5 * table[2], table[2] + 2 * table[1], torch.zeros(2), table[0]])
    torch.testing.assert_close(bag_sum(table, plan), expected)
    assert torch.autograd.gradcheck(lambda t: bag_sum(t, plan), (table,))
    assert torch.autograd.gradgradcheck(lambda t: bag_sum(t, plan).pow(2), (table,))


def test_meta_steps_reduce_the_query_loss() -> None:
    features, rows = data([120, 90, 150, 100, 80])
    net = model(dtype=torch.float32)

    def loss() -> float:
        with torch.no_grad():
            return float(weighted_bce(net(features.batch(rows.campaign, rows.user)), rows.label, torch.ones(len(rows))))

    before = loss()
    result = meta_train(net, features, rows, config(epochs=2, max_steps=60, inner_lr=2e-4), progress=False)
    assert result.steps == 60 and len(result.losses) == 60 and result.rows_per_second > 0
    assert loss() < before - 0.05
    assert sum(result.losses[-10:]) < sum(result.losses[:10])


def test_the_same_seed_gives_the_same_model_and_another_seed_another() -> None:
    features, rows = data()
    a, b, c = model(), model(), model()
    meta_train(a, features, rows, config(max_steps=4), progress=False)
    meta_train(b, features, rows, config(max_steps=4), progress=False)
    meta_train(c, features, rows, config(max_steps=4, seed=8), progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.expert_w0, c.expert_w0)


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_resume_ends_with_the_parameters_of_an_uninterrupted_run(where: str, tmp_path, request) -> None:
    uri = str(tmp_path) if where == "local" else f"gs://{request.getfixturevalue('gcs_bucket')}/run"
    features, rows = data()
    straight, interrupted = model(), model()
    full = meta_train(straight, features, rows, config(max_steps=6), progress=False)
    meta_train(interrupted, features, rows, config(max_steps=3, checkpoint_every=2), checkpoint_uri=uri, progress=False)
    resumed_model = model(seed=1)  # as in a fresh process: the checkpoint must bring everything back
    resumed = meta_train(
        resumed_model,
        features,
        rows,
        config(max_steps=6, checkpoint_every=2),
        checkpoint_uri=uri,
        resume=True,
        progress=False,
    )
    assert resumed.steps == 6 and resumed.losses == full.losses
    for (name, x), y in zip(straight.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path) -> None:
    features, rows = data()
    meta_train(model(), features, rows, config(max_steps=2), checkpoint_uri=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        meta_train(
            model(), features, rows, config(max_steps=4, batch_size=8), str(tmp_path), resume=True, progress=False
        )


def test_the_steps_run_at_the_configured_matmul_precision_and_put_it_back(monkeypatch, tmp_path) -> None:
    """A float32 model (the float64 tiny one ignores the setting): the step's products see the configured
    precision, the process's own comes back after, it is saved with the checkpoint, and a resume at another
    precision is refused (its steps would not be the interrupted run's)."""
    features, rows = data()
    net = model(dtype=torch.float32)
    seen = []
    forward = type(net).expert_input
    monkeypatch.setattr(type(net), "expert_input",
                        lambda self, *a: seen.append(torch.get_float32_matmul_precision()) or forward(self, *a))
    meta_train(net, features, rows, config(max_steps=2, matmul_precision="medium"), str(tmp_path), progress=False)
    assert seen and set(seen) == {"medium"}
    assert torch.get_float32_matmul_precision() == "highest"
    with pytest.raises(ValueError, match="matmul_precision"):
        meta_train(model(dtype=torch.float32), features, rows, config(max_steps=4, matmul_precision="highest"),
                   str(tmp_path), resume=True, progress=False)
    with pytest.raises(ValueError, match="matmul_precision must be one of highest, high, medium, got 'low'"):
        config(matmul_precision="low")


def test_resume_without_a_checkpoint_starts_afresh(tmp_path) -> None:
    features, rows = data()
    result = meta_train(model(), features, rows, config(max_steps=2), str(tmp_path), resume=True, progress=False)
    assert result.steps == 2 and (tmp_path / "checkpoint.pt").exists()


def test_a_recorded_meta_training_phase_notes_its_steps(tmp_path) -> None:
    features, rows = data()
    with recording() as log, phase("meta-training"):
        result = meta_train(model(), features, rows, config(max_steps=3), str(tmp_path / "ckpt"), progress=False)
    (recorded,) = log.phases
    assert recorded.steps == 3 and 0 < recorded.step_seconds <= recorded.seconds
    assert recorded.step_seconds == round(result.seconds, 2) and recorded.step_cpu_seconds > 0
    assert recorded.line().endswith(f"3 steps in {recorded.step_seconds:.1f} s")


def test_one_epoch_is_ceil_rows_over_batch_size() -> None:
    assert MetaTrainConfig(batch_size=512).total_steps(1025) == 3
    assert MetaTrainConfig(batch_size=512, epochs=2, max_steps=5).total_steps(1025) == 5


@pytest.mark.parametrize("sampling", ["normal", "sqrt", "unit"])
def test_campaigns_are_drawn_in_proportion_to_their_weight(sampling: str) -> None:
    counts = [40, 10, 1, 90, 4]  # campaign 2 has a single row: no disjoint batches, never drawn
    _, rows = data(counts)
    draws = torch.cat(
        [sampler(rows, tasks=50, batch=2, sampling=sampling, seed=s).sample().campaign for s in range(80)]
    )
    expected = {
        "normal": [c if c >= 2 else 0 for c in counts],
        "sqrt": [math.sqrt(c) if c >= 2 else 0 for c in counts],
        "unit": [1 if c >= 2 else 0 for c in counts],
    }[sampling]
    share = torch.bincount(draws, minlength=len(counts)).double() / len(draws)
    torch.testing.assert_close(share, torch.tensor(expected, dtype=torch.float64) / sum(expected), rtol=0, atol=0.02)
    torch.testing.assert_close(
        campaign_weights(torch.tensor(counts), sampling).double(), torch.tensor(expected).double()
    )


def test_support_and_query_are_disjoint_rows_of_the_task_campaign() -> None:
    _, rows = data()
    for seed in range(5):
        tasks = sampler(rows, seed=seed).sample()
        for t, c in enumerate(tasks.campaign.tolist()):
            real = int(tasks.weight[t].sum())
            assert real == min(16, COUNTS[c] // 2)
            support, query = tasks.support[t, :real].tolist(), tasks.query[t, :real].tolist()
            assert not set(support) & set(query) and len(set(support)) == len(set(query)) == real
            assert (rows.campaign[support + query] == c).all()
            assert (tasks.weight[t, real:] == 0).all()


@pytest.mark.parametrize("n,k", [(12, 6), (50, 4)])  # a permutation's prefix, and draws without repeats
def test_distinct_draws_are_uniform_without_repeats(n: int, k: int) -> None:
    g, cpu = torch.Generator().manual_seed(0), torch.device("cpu")
    draws = torch.stack([distinct(n, k, g, cpu) for _ in range(3000)])
    assert all(len(set(row)) == k for row in draws.tolist()) and 0 <= draws.min() and draws.max() < n
    first = torch.bincount(draws[:, 0], minlength=n).double() / len(draws)  # each position is uniform
    torch.testing.assert_close(first, torch.full((n,), 1 / n, dtype=torch.float64), rtol=0, atol=0.025)


def test_rows_must_be_sorted_by_campaign() -> None:
    _, rows = data()
    shuffled = rows.select(torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="sorted by campaign"):
        sampler(shuffled)


def test_lazy_adam_makes_sparse_adams_update() -> None:
    torch.manual_seed(0)
    ours = torch.randn(6, 3, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_()
    opt_ours, opt_theirs = LazyAdam([ours], lr=0.1), torch.optim.SparseAdam([theirs], lr=0.1)
    for rows in ([0, 2], [2, 5], [1]):
        values = torch.randn(len(rows), 3)
        grad = torch.sparse_coo_tensor(torch.tensor([rows]), values, (6, 3), check_invariants=True).coalesce()
        ours.grad, theirs.grad = grad, grad.clone()
        opt_ours.step()
        opt_theirs.step()
        torch.testing.assert_close(ours, theirs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_meta_training_matches_cpu() -> None:
    features, rows = data()
    on_cpu, on_gpu = model(), model()
    meta_train(on_cpu, features, rows, config(max_steps=3), progress=False)
    result = meta_train(on_gpu, features, rows, config(max_steps=3, device="auto"), progress=False)
    assert next(on_gpu.parameters()).is_cuda and result.steps == 3
    # CUDA draws other random numbers than the CPU: compare a fresh meta-gradient instead.
    tasks = sampler(rows).sample()
    cpu_loss, cpu = meta_gradients(on_cpu, features, rows, tasks, 0.5)
    gpu_loss, gpu = meta_gradients(on_cpu.cuda(), features.to("cuda"), rows.to("cuda"), tasks.to("cuda"), 0.5)
    torch.testing.assert_close(gpu_loss.cpu(), cpu_loss, rtol=1e-9, atol=1e-12)
    for name, g in cpu.items():
        torch.testing.assert_close(gpu[name].cpu().to_dense(), g.to_dense(), rtol=1e-9, atol=1e-12)
