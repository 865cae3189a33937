"""Meta-training throughput: the batched sparse path vs the plain loop, against this machine's GEMM floor.

    python bench/meta_train.py [--steps N] [--window N] [--oracle-steps N] [--device cpu|cuda]
                               [--threads N] [--clock wall|cpu] [--matmul-precision P] [--profile]

Random data at the Tencent Look-alike sizes (vocabularies, list lengths), Zipf-like id frequencies,
default model (8 experts, 5 critics, emb 64) and meta-training (5 tasks, batch 512). Rows/s counts
support + query rows. The floor divides the GEMM rate at the model's main shape ([2560, 896] x
[896, 512]) by the analytic FLOPs of a second-order step per row; the rates of the other shapes are
printed beside it. The fast path is timed in rounds, each a burst of that GEMM then a window of
steps, so that a round's floor and rate see the same load: on a shared machine the best round is
the machine's, the median the neighbours'. `--threads 1 --clock cpu` counts CPU time instead.
The steps run at `MetaTrainConfig.matmul_precision` (default "medium": float32 products on bfloat16 operands
where the CPU has AMX or AVX512-BF16; TF32 on CUDA); `--matmul-precision highest` steps in float32. The floor
stays the float32 GEMM's, measured at "highest".
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch

from metaheac.data.schema import DatasetSchema, Field
from metaheac.data.tensors import CampaignTable, Features, Rows, UserTable
from metaheac.model.config import ModelConfig
from metaheac.model.heac import HybridExpertsCritics
from metaheac.training.config import MATMUL_PRECISIONS, MetaTrainConfig, resolve_device
from metaheac.training.meta import MetaTrainer
from metaheac.training.sampling import TaskSampler
from tests.oracle import oracle_meta_gradients

SINGLE = {"age": 6, "gender": 3, "education": 8, "consumptionAbility": 3, "LBS": 856, "carrier": 4, "house": 2}
LISTS = {
    "interest1": (125, 10),
    "interest2": (83, 10),
    "interest3": (13, 10),
    "kw1": (263313, 5),
    "kw2": (49781, 5),
    "topic1": (10003, 5),
    "topic2": (9985, 5),
}
CAMPAIGN = {
    "advertiserId": 79,
    "campaignId": 138,
    "creativeSize": 15,
    "adCategoryId": 40,
    "productId": 32,
    "productType": 4,
}
# Forward-pass equivalents of a second-order step: a support row runs forward, backward with
# create_graph and the backward of that backward (~9), a query row forward and backward (3).
SUPPORT_FORWARDS, QUERY_FORWARDS = 9, 3


def tencent_schema() -> DatasetSchema:
    return DatasetSchema(
        [Field(name, size) for name, size in SINGLE.items()],
        [Field(name, size, length) for name, (size, length) in LISTS.items()],
        [Field(name, size) for name, size in CAMPAIGN.items()],
    )


def zipf_ids(rng: np.random.Generator, vocab: int, shape: tuple[int, ...]) -> np.ndarray:
    """Ids in [1, vocab) with P(id <= k) = ((k - 1) / (vocab - 1)) ** 0.3: a few ids hold most of the mass."""
    return (1 + (vocab - 1) * rng.random(shape) ** (1 / 0.3)).astype(np.int32).clip(1, vocab - 1)


def random_data(users: int, campaigns: int, rows: int, seed: int = 0) -> tuple[Features, Rows]:
    rng = np.random.default_rng(seed)
    schema = tencent_schema()
    single = np.stack([zipf_ids(rng, f.vocab_size, (users,)) for f in schema.user_single], 1)
    lists = []
    for f in schema.user_lists:
        valid = np.arange(f.length) < rng.integers(0, f.length + 1, (users, 1))  # 0..length ids, some empty
        lists.append(np.where(valid, zipf_ids(rng, f.vocab_size, (users, f.length)), 0))
    user_table = UserTable(np.arange(users), torch.from_numpy(single), torch.from_numpy(np.concatenate(lists, 1)))
    fields = np.stack([rng.integers(1, f.vocab_size, campaigns) for f in schema.campaign_fields], 1)
    campaign_table = CampaignTable(
        np.arange(campaigns), torch.from_numpy(fields).int(), np.array(["train"] * campaigns), np.zeros(campaigns)
    )
    sizes = rng.pareto(1.2, campaigns) + 1  # heavy-tailed campaign sizes, as in the Tencent data
    counts = np.maximum((sizes / sizes.sum() * rows).astype(np.int64), 100)
    campaign = torch.from_numpy(np.repeat(np.arange(campaigns), counts))
    user = torch.from_numpy(rng.integers(0, users, len(campaign)))
    label = torch.from_numpy((rng.random(len(campaign)) < 0.05).astype(np.float32))
    return Features(schema, user_table, campaign_table), Rows(campaign, user, label)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    run: Callable[[], float], clock: Callable[[], float], device: torch.device, repeats: int, warm_up: bool = True
) -> list[float]:
    """`run` returns its amount of work; the list holds work per second of each repeat."""
    if warm_up:
        run()
    rates = []
    for _ in range(repeats):
        sync(device)
        started = clock()
        work = run()
        sync(device)
        rates.append(work / (clock() - started))
    return rates


def gemm_rates(
    b: int, m: int, k: int, n: int, device: torch.device, clock: Callable[[], float], repeats: int = 8
) -> list[float]:
    """FLOP/s of float32 [b, m, k] x [b, k, n], in bursts of 5 products."""
    x, y = torch.randn(b, m, k, device=device), torch.randn(b, k, n, device=device)

    def run() -> float:
        for _ in range(5):
            x @ y
        return 5 * 2 * b * m * k * n

    return timed(run, clock, device, repeats)


def model_gemms(model: HybridExpertsCritics, rows: int) -> list[tuple[str, int, int, int, int]]:
    """The forward's matmuls at `rows` rows: (name, batch, m, k, n)."""
    c = model.config
    g = model.embeddings.n_user_fields * c.embedding_dim
    h = c.expert_hidden
    shapes = [("experts layer 1", 1, rows, g, c.experts * h[0])]
    layers = zip(h[:-1], h[1:], strict=True)
    shapes += [(f"experts layer {i + 2}", c.experts, rows, a, b) for i, (a, b) in enumerate(layers)]
    n_campaign = len(model.schema.campaign_fields)
    shapes += [
        ("gates hidden: mean user emb", 1, rows, c.embedding_dim, 2 * c.gate_hidden),
        ("gates hidden: campaign embs", 1, rows, c.embedding_dim * n_campaign, 2 * c.gate_hidden),
        ("critics", 1, rows, h[-1], c.critics),
    ]
    return shapes


def oracle_rates(
    model: HybridExpertsCritics, features: Features, rows: Rows, config: MetaTrainConfig, steps: int, clock
) -> list[float]:
    """The official approach: per-task loop, dense gradients, dense Adam over every parameter."""
    generator = torch.Generator(rows.label.device).manual_seed(config.seed)
    sampler = TaskSampler(rows, config.task_count, config.batch_size, config.sampling, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.outer_lr)

    def run() -> float:
        tasks = sampler.sample()
        _, grads = oracle_meta_gradients(model, features, rows, tasks, config.inner_lr)
        for name, p in model.named_parameters():
            p.grad = grads[name]
        optimizer.step()
        return tasks.row_count

    return timed(run, clock, rows.label.device, repeats=steps)


def profile_fast(trainer: MetaTrainer) -> None:
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.rows.label.is_cuda
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            trainer.step()
    print(prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=30))


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="meta-steps timed on the fast path")
    parser.add_argument("--window", type=int, default=4, help="fast-path steps per timed window")
    parser.add_argument("--oracle-steps", type=int, default=3, help="meta-steps timed on the plain loop (0: skip)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time, robust to other load at 1 thread",
    )
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, default=MetaTrainConfig().matmul_precision,
                        help="MetaTrainConfig.matmul_precision of the steps (the floor stays float32's)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of the fast path")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    device = resolve_device(args.device)
    torch.manual_seed(0)
    features, rows = random_data(args.users, args.campaigns, args.rows)
    features, rows = features.to(device), rows.to(device)
    config = MetaTrainConfig(device=str(device), matmul_precision=args.matmul_precision)
    model = HybridExpertsCritics(features.schema, ModelConfig()).to(device)
    batch = config.task_count * config.batch_size

    forward = model.flops_per_row()
    step_flops = (SUPPORT_FORWARDS + QUERY_FORWARDS) / 2 * forward
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.clock} clock, {n_params:,} parameters, "
          f"step matmul precision {args.matmul_precision}")
    print(f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"forward {forward / 1e6:.3f} MFLOP/row; second-order step {step_flops / 1e6:.2f} MFLOP/row (average)")
    print(f"\n{'float32 GFLOP/s at the model shapes (5 tasks x 512 rows)':<58}{'best':>8}{'median':>8}{'FLOPs':>8}")
    weighted_time, total = 0.0, 0
    for name, b, m, k, n in model_gemms(model, batch):
        rates = gemm_rates(b, m, k, n, device, clock)
        flops = b * m * k * n
        weighted_time, total = weighted_time + flops / max(rates), total + flops
        shape = f"{name} [{b}x] [{m}x{k}] x [{k}x{n}]"
        print(f"{shape:<58}{max(rates) / 1e9:>8.1f}{median(rates) / 1e9:>8.1f}{flops / (forward / 2 * batch):>8.1%}")
    _, _, _, k, n = model_gemms(model, config.batch_size)[0]
    per_task = gemm_rates(config.task_count, config.batch_size, k, n, device, clock)
    shape = "experts layer 1 per task (bmm with fast weights)"
    print(f"{shape:<58}{max(per_task) / 1e9:>8.1f}{median(per_task) / 1e9:>8.1f}")
    print(f"{'FLOP-weighted over the forward (GFLOP/s)':<58}{total / weighted_time / 1e9:>8.1f}")

    # Rounds alternate a burst of the main GEMM with a window of fast steps, so that each round's
    # floor and rate are taken under the same load.
    trainer = MetaTrainer(model, features, rows, config)
    trainer.step()  # warm-up
    _, b, m, k, n = model_gemms(model, batch)[0]
    floors, fast = [], []
    for _ in range(max(1, args.steps // args.window)):
        floors.append(max(gemm_rates(b, m, k, n, device, clock, repeats=2)) / step_flops)
        fast += timed(lambda: float(sum(trainer.step() for _ in range(args.window))), clock, device, 1, warm_up=False)
    ratios = [f / r for f, r in zip(floors, fast, strict=True)]
    print(
        f"\nfloor = main GEMM rate / {step_flops / 1e6:.2f} MFLOP per row: best {max(floors):,.0f} rows/s, "
        f"median {median(floors):,.0f} ({total / weighted_time / step_flops:,.0f} at the FLOP-weighted rate)"
    )
    head = f"{'path (rows/s: support + query rows per second)':<48}{'steps':>6}{'best':>9}{'median':>9}"
    print(f"\n{head}{'floor/rate best':>17}{'per round':>11}")
    steps = len(fast) * args.window
    row = f"{'fast: batched tasks, sparse tables':<48}{steps:>6}{max(fast):>9,.0f}{median(fast):>9,.0f}"
    print(f"{row}{max(floors) / max(fast):>16.2f}x{median(ratios):>10.2f}x")
    if args.oracle_steps:
        oracle = oracle_rates(model, features, rows, config, args.oracle_steps, clock)
        row = f"{'oracle: task loop, dense tables (official)':<48}{args.oracle_steps:>6}{max(oracle):>9,.0f}"
        print(f"{row}{median(oracle):>9,.0f}{max(floors) / max(oracle):>16.2f}x")
    print(f"\nload average at end {os.getloadavg()[0]:.2f} (other processes on these cores slow the wall clock)")
    if args.profile:
        profile_fast(trainer)


if __name__ == "__main__":
    main()
