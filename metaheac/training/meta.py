"""Second-order MAML meta-training (docs/architecture.md, "Data flow"), batched over tasks and sparse in the tables.

The plain loop (`tests/oracle.py`, the official code's approach) spends its time on dense gradients and
fast copies of whole embedding tables for every task, then on a Python loop over tasks. Instead:
- Only the table rows a task's support and query batches read can change in its inner step or reach
  its query loss. A step gathers each distinct row once (the leaves the outer gradient lands on, so
  the tables get coalesced sparse gradients) and gives every task its own copy of the rows it reads
  (one local row per (task, table, id)): the inner gradient of the summed support losses with respect
  to those copies is each task's own. Lookups and list pooling are fused weighted bag sums over the
  copies (`bags.py`), differentiable twice without materialising [rows, ids, dim] gathers.
- The tasks run together as [tasks, rows, ...] tensors. The support pass's big first layer uses the
  shared weight, so it is one matmul over all tasks' rows; its per-task inner gradient is formed
  from the gradient at the layer's output (a task's rows reach only its own loss). Every other dense
  parameter (small) is viewed per task with a leading task dimension (an expand, no copy), so one
  autograd.grad call gives each task's gradient, and the query pass runs on per-task fast weights as
  batched matmuls (on CPU, the big per-task products one task at a time: `heac.matmul`).
The tables step with row-wise lazy Adam (SparseAdam's update, `lazy_adam.py`), the dense part with
Adam. Lazy Adam differs from the official dense Adam only on rows a step does not touch: dense Adam
keeps moving them on stale momentum and decays their moments, lazy Adam leaves them alone.

Under torchrun (an initialised process group of w > 1 ranks) every rank draws a step's w * task_count
tasks with the same seeded generator, the draws a one-process run with w * task_count tasks makes, and
keeps its own slice; the ranks average their gradients (`distributed.py`) before the optimisers step,
so the run equals that one-process run up to the order of float sums.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from metaheac.data.errors import InputError
from metaheac.data.tensors import Features, Rows
from metaheac.model.embedding import TableLayout, mean_weights
from metaheac.model.heac import HybridExpertsCritics, Params, matmul, weighted_bce
from metaheac.model.store import read_tensors
from metaheac.runtime import storage
from metaheac.runtime.heap import keep_freed_memory
from metaheac.runtime.phases import note_steps
from metaheac.training.bags import BagPlan, bag_sum
from metaheac.training.config import MetaTrainConfig, matmul_precision, resolve_device
from metaheac.training.distributed import average_dense, average_sparse, broadcast_state, world
from metaheac.training.lazy_adam import LazyAdam
from metaheac.training.sampling import Tasks, TaskSampler

CHECKPOINT_FILE = "checkpoint.pt"
# A resumed run must sample and step exactly as the interrupted one did.
_RESUME_KEYS = ("task_count", "sampling", "batch_size", "inner_lr", "outer_lr", "seed", "matmul_precision")
# What a checkpoint written before a key of `_RESUME_KEYS` existed ran with.
_BEFORE_KEYS = {"matmul_precision": "highest"}
_PROGRESS_EVERY = 50  # steps between loss read-backs for the progress bar (each one a device sync)


@dataclass
class LocalTables:
    """The embedding rows one meta-step reads. Each distinct table row appears once in `user_rows` or
    `campaign_rows` (the leaves the outer gradient lands on, so it comes coalesced); the inner step
    adapts per-task copies of them: one local row per (task, table, id)."""

    user_rows: torch.Tensor  # [R_u, dim] distinct rows of the user tables, grouped by table, ids ascending
    campaign_rows: torch.Tensor  # [R_c, dim] the same for the campaign tables
    ids: list[torch.Tensor]  # per table (user tables, then campaign tables), the ids of its rows above
    user_local: torch.Tensor  # [U] the row in `user_rows` of each local user row
    campaign_local: torch.Tensor  # [T, campaign fields] the row in `campaign_rows` of each task's campaign
    support: BagPlan  # bags (task, support row, user field) -> local user rows; lists as masked means
    query: BagPlan  # the same for the query rows


class BatchedMetaGradients:
    """The meta-gradient of one step's tasks at once; equals `oracle_meta_gradients` (see module doc)."""

    def __init__(self, model: HybridExpertsCritics, features: Features, inner_lr: float) -> None:
        self.model, self.features, self.inner_lr = model, features, inner_lr
        schema = features.schema
        self.layout = TableLayout(model.embeddings, features.users.single.device)
        self.tables = self.layout.tables
        names = {id(p): name for name, p in model.named_parameters()}
        self.table_names = [names[id(table.weight)] for table in self.tables]
        self.table_rows = sum(table.num_embeddings for table in self.tables)
        self.n_single, self.list_lengths = len(schema.user_single), schema.list_lengths
        self.n_user_fields = self.n_single + len(schema.user_lists)

    def gather(self, user_ids: torch.Tensor, campaign_ids: torch.Tensor, dtype: torch.dtype) -> LocalTables:
        """Local tables for user ids [T, support rows + query rows, K_u] and campaign ids [T, K_c]."""
        tasks, k_user = user_ids.shape[0], user_ids.shape[-1]
        device = user_ids.device
        ids = user_ids.view(tasks, 2, -1, k_user).transpose(0, 1)  # [part, T, B, K_u]: support, query
        batch = ids.shape[2]
        single = torch.ones_like(ids[..., : self.n_single], dtype=dtype)
        weight = torch.cat([single, mean_weights(ids[..., self.n_single :], self.list_lengths, dtype)], dim=-1)
        # Entries: the (part, task, row, column) ids that read a row; list padding reads none.
        entry = (weight > 0).flatten().nonzero().squeeze(1)
        n_support = int(torch.searchsorted(entry, weight[0].numel()))
        task = torch.arange(tasks, device=device)[:, None, None]
        keys = (self.layout.user_keys(ids) * tasks + task).flatten()[entry]
        if self.table_rows * tasks < 2**31:  # int32 keys sort ~2x faster than int64 on CPU
            keys = keys.int()
        # Local rows are the distinct keys (table row, task). One sort gives them and, restricted to a
        # part, that part's entries in local-row order (a bag plan's transpose).
        sorted_keys, order = keys.sort(stable=True)
        unique, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
        local = torch.empty_like(order)
        local[order] = torch.repeat_interleave(torch.arange(len(unique), device=device), counts)
        user_row, user_local = torch.unique_consecutive(unique // tasks, return_inverse=True)
        campaign_row, campaign_local = torch.unique(self.layout.campaign_keys(campaign_ids), return_inverse=True)
        table_ids = self.layout.table_ids(torch.cat([user_row, campaign_row]))  # sorted: campaign tables last
        user_rows, campaign_rows = self.layout.read(table_ids).split([len(user_row), len(campaign_row)])

        bag = torch.arange(tasks * batch, device=device).view(tasks, batch, 1) * self.n_user_fields
        bag = bag + self.layout.user_field
        bags, weights = bag.expand(2, tasks, batch, k_user).flatten()[entry], weight.flatten()[entry]

        def plan(start: int, stop: int) -> BagPlan:
            by_row = order[(order >= start) & (order < stop)] - start
            sizes = (tasks * batch * self.n_user_fields, len(unique))
            return BagPlan.build(local[start:stop], bags[start:stop], weights[start:stop], sizes, by_row)

        return LocalTables(
            user_rows.requires_grad_(),
            campaign_rows.requires_grad_(),
            table_ids,
            user_local,
            campaign_local,
            plan(0, n_support),
            plan(n_support, len(entry)),
        )

    def sgd(self, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The inner step, theta - alpha * grad (one fused op)."""
        return torch.add(weight, grad, alpha=-self.inner_lr)

    def __call__(self, rows: Rows, tasks: Tasks) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean query loss and its gradient by parameter name; tables get coalesced sparse COO gradients."""
        n_tasks, batch = tasks.support.shape
        picked = rows.select(torch.cat([tasks.support, tasks.query], dim=1))  # [T, 2B]: support | query
        users = self.features.users
        user_ids = torch.cat([users.single[picked.user], users.lists[picked.user]], dim=-1).long()
        campaign_ids = self.features.campaigns.fields[tasks.campaign].long()
        dense = self.model.dense_parameters()
        local = self.gather(user_ids, campaign_ids, next(iter(dense.values())).dtype)
        # Every task's own copy of the rows it reads; a task's rows share its one campaign. (index_select:
        # its backward, index_add, is much faster on CPU than that of indexing, index_put.)
        dim = local.user_rows.shape[-1]
        user_table = local.user_rows.index_select(0, local.user_local)
        campaign = local.campaign_rows.index_select(0, local.campaign_local.flatten()).view(n_tasks, -1, dim)
        first = self.model.FIRST_LAYER
        per_task = {name: w.expand(n_tasks, *w.shape) for name, w in dense.items() if name not in first}

        def task_losses(
            table: torch.Tensor,
            campaign: torch.Tensor,
            params: Params,
            plan: BagPlan,
            label: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Per-task losses, the pooled user embeddings and the experts' first-layer input."""
            user = bag_sum(table, plan).view(n_tasks, batch, self.n_user_fields, dim)
            expert_input = self.model.expert_input(params, user)
            # The mean as a sum over fields, then a division of the [T, B, dim] result: mean's own backward
            # materialises its gradient at [T, B, fields, dim] and divides it there.
            user_mean = user.sum(-2) / self.n_user_fields
            p = self.model.head(params, expert_input, user_mean, campaign.unsqueeze(1))
            return weighted_bce(p, label, tasks.weight), user, expert_input

        # The support pass's first layer shares its weight across tasks: one matmul over every task's
        # rows. Its inner gradient per task is formed from the gradient at its output (rows of a task
        # reach only that task's loss); every other dense parameter gets a per-task view whose gradient
        # is the task's own, as the tasks' losses are summed.
        support_losses, user, expert_input = task_losses(
            user_table, campaign, {**dense, **per_task}, local.support, picked.label[:, :batch]
        )
        inner = torch.autograd.grad(
            support_losses.sum(), [user_table, campaign, expert_input, *per_task.values()], create_graph=True
        )
        fast_table, fast_campaign = self.sgd(user_table, inner[0]), self.sgd(campaign, inner[1])
        fast = {name: self.sgd(w, g) for (name, w), g in zip(per_task.items(), inner[3:], strict=True)}
        fast[first[0]] = self.sgd(dense[first[0]], matmul(user.flatten(-2).transpose(1, 2), inner[2]))
        fast[first[1]] = self.sgd(dense[first[1]], inner[2].sum(1))
        query_losses, _, _ = task_losses(fast_table, fast_campaign, fast, local.query, picked.label[:, batch:])
        meta_loss = query_losses.mean()
        outer = torch.autograd.grad(meta_loss, [local.user_rows, local.campaign_rows, *dense.values()])
        grads = dict(zip(dense, outer[2:], strict=True))
        table_grads = torch.cat(outer[:2]).split([len(i) for i in local.ids])
        for name, t, ids, g in zip(self.table_names, self.tables, local.ids, table_grads, strict=True):
            grads[name] = torch.sparse_coo_tensor(
                ids[None], g, t.weight.shape, is_coalesced=True, check_invariants=False
            )
        return meta_loss.detach(), grads


def meta_gradients(
    model: HybridExpertsCritics, features: Features, rows: Rows, tasks: Tasks, inner_lr: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The batched path's mean query loss and gradients, for comparison with `oracle_meta_gradients`."""
    return BatchedMetaGradients(model, features, inner_lr)(rows, tasks)


@dataclass
class TrainResult:
    losses: list[float]  # the mean query loss of every meta-step, resumed ones included
    steps: int  # meta-steps done in all
    seconds: float  # wall time of the steps this call ran
    rows_per_second: float  # support + query rows per second in this call


class MetaTrainer:
    """Meta-training state (what a checkpoint holds) and the meta-step that advances it; model,
    features and rows on one device."""

    def __init__(self, model: HybridExpertsCritics, features: Features, rows: Rows, config: MetaTrainConfig) -> None:
        self.model, self.rows, self.config = model, rows, config
        keep_freed_memory()  # a step's tensors reuse the last step's pages instead of faulting fresh ones
        self.rank, self.world_size = world()
        # Every rank holds the same generator and draws every rank's tasks (see the module doc), so a
        # checkpoint needs only rank 0's generator state.
        self.generator = torch.Generator(rows.label.device).manual_seed(config.seed)
        self.sampler = TaskSampler(
            rows, config.task_count * self.world_size, config.batch_size, config.sampling, self.generator
        )
        self.gradients = BatchedMetaGradients(model, features, config.inner_lr)
        self.dataset = features.fingerprint(rows)
        # fused: one kernel over all dense parameters (~1 ms a step on CPU, a third of the per-tensor loop's)
        self.dense_optimizer = torch.optim.Adam(model.dense_parameters().values(), lr=config.outer_lr, fused=True)
        self.table_optimizer = LazyAdam([t.weight for t in model.embeddings.tables()], lr=config.outer_lr)
        self.steps = 0  # meta-steps done
        self.history: list[float] = []
        self.pending: list[torch.Tensor] = []  # losses not yet read back: no device sync per step

    def step(self) -> torch.Tensor:
        """One meta-step; returns the real rows it used on all ranks (a device scalar)."""
        tasks = self.sampler.sample()
        with matmul_precision(self.config.matmul_precision):
            loss, grads = self.gradients(self.rows, self.my_tasks(tasks))
        if self.world_size > 1:
            loss, grads = self.average(loss, grads)
        for name, p in self.model.named_parameters():
            p.grad = grads[name]
        self.dense_optimizer.step()
        self.table_optimizer.step()
        self.pending.append(loss)
        self.steps += 1
        return 2 * tasks.weight.sum()

    def my_tasks(self, tasks: Tasks) -> Tasks:
        """This rank's slice of the step's tasks (all of them in one process)."""
        if self.world_size == 1:
            return tasks
        mine = slice(self.rank * self.config.task_count, (self.rank + 1) * self.config.task_count)
        return Tasks(tasks.campaign[mine], tasks.support[mine], tasks.query[mine], tasks.weight[mine])

    def average(
        self, loss: torch.Tensor, grads: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss and gradients over all ranks' tasks: each rank's are means over its equally many
        tasks, so their mean over the ranks is the mean over all tasks."""
        dense = [name for name, g in grads.items() if not g.is_sparse]
        sparse = [name for name, g in grads.items() if g.is_sparse]
        loss, *dense_grads = average_dense([loss, *(grads[name] for name in dense)])
        sparse_grads = average_sparse([grads[name] for name in sparse])
        return loss, dict(zip(dense + sparse, dense_grads + sparse_grads, strict=True))

    def loss_history(self) -> list[float]:
        if self.pending:
            self.history += torch.stack(self.pending).tolist()
            self.pending = []
        return self.history

    def save(self, uri: str) -> None:
        state = {
            "step": self.steps,
            "losses": torch.tensor(self.loss_history(), dtype=torch.float64),
            "config": self.config.to_dict(),
            "world_size": self.world_size,
            "dataset": self.dataset,
            "model": self.model.state_dict(),
            "dense_optimizer": self.dense_optimizer.state_dict(),
            "table_optimizer": self.table_optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        storage.write_bytes(uri, buffer.getvalue())  # atomic: a crash mid-write keeps the previous one

    def load(self, uri: str, total: int) -> None:
        """Resume from the checkpoint at `uri`; one of another run (dataset, configuration, network or
        number of ranks, or past this run's `total` steps) is refused with an InputError that says how to
        start fresh."""
        fresh = f"to start fresh, delete {uri} or pass another --checkpoint folder"
        try:
            state = read_tensors(uri)
        except InputError as error:
            raise InputError(f"cannot resume: {error}; {fresh}") from None
        if state.get("world_size", 1) != self.world_size:
            raise InputError(
                f"cannot resume {uri}: it was written by {state.get('world_size', 1)} process(es) and this run "
                f"has {self.world_size}; run with {state.get('world_size', 1)} (torchx -j 1x"
                f"{state.get('world_size', 1)}), or {fresh}"
            )
        config = {**_BEFORE_KEYS, **state["config"]}
        changed = [k for k in _RESUME_KEYS if config[k] != getattr(self.config, k)]
        ours = self.model.state_dict()
        if state["model"].keys() != ours.keys() or any(state["model"][k].shape != v.shape for k, v in ours.items()):
            changed.append("network (method or model config)")
        if state.get("dataset") != self.dataset:
            changed.append("dataset")
        if changed:
            raise InputError(f"cannot resume {uri}: it was trained with other {', '.join(changed)}; {fresh}")
        if state["step"] > total:  # its weights are not those of this run's `total` steps
            raise InputError(f"cannot resume {uri}: it has run {state['step']} steps, past the {total} of this run "
                             f"(--max-steps, --epochs); {fresh}")
        self.model.load_state_dict(state["model"])
        self.dense_optimizer.load_state_dict(state["dense_optimizer"])
        self.table_optimizer.load_state_dict(state["table_optimizer"])
        self.generator.set_state(state["generator"])
        self.steps, self.history, self.pending = state["step"], state["losses"].tolist(), []


def meta_train(
    model: HybridExpertsCritics,
    features: Features,
    rows: Rows,
    config: MetaTrainConfig | None = None,
    checkpoint_uri: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Meta-train `model` in place on `rows` (the training campaigns' stage-1 rows, sorted by campaign).

    With `checkpoint_uri` (a folder, local or gs://) a checkpoint is written every
    `config.checkpoint_every` steps (or `config.checkpoint_seconds`) and at the end; `resume=True`
    continues from it when one exists (and was written for the same dataset, configuration, network
    and number of ranks) and ends with the same parameters as an uninterrupted run.

    Under torchrun each rank calls this with the same arguments (`config.task_count` tasks per rank and
    step); rank 0 alone writes checkpoints and every rank resumes from the same one.
    """
    config = config or MetaTrainConfig()
    device = resolve_device(config.device)
    model.to(device)
    trainer = MetaTrainer(model, features.to(device), rows.to(device), config)
    if trainer.world_size > 1:
        broadcast_state(model)  # ranks seed the same init; this guards against any drift
    progress = progress and trainer.rank == 0
    checkpoint = storage.join(checkpoint_uri, CHECKPOINT_FILE) if checkpoint_uri else None
    total = config.total_steps(len(rows))
    if resume and checkpoint and storage.exists(checkpoint):
        trainer.load(checkpoint, total)
    start_step, used_rows = trainer.steps, torch.zeros((), device=device)
    started = saved = time.perf_counter()
    cpu_started = time.process_time()
    with tqdm(total=total, initial=start_step, disable=not progress, desc="meta-train", unit="step") as bar:
        while trainer.steps < total:
            used_rows += trainer.step()
            bar.update()
            if config.checkpoint_every:
                due = trainer.steps % config.checkpoint_every == 0
            else:  # rank 0 alone writes, so the clock of rank 0 alone decides
                due = time.perf_counter() - saved >= config.checkpoint_seconds
            if checkpoint and (due or trainer.steps == total) and trainer.rank == 0:
                trainer.save(checkpoint)
                saved = time.perf_counter()
            if trainer.steps % _PROGRESS_EVERY == 0 and progress:
                bar.set_postfix(query_loss=f"{trainer.loss_history()[-1]:.4f}")
    if trainer.world_size > 1:
        torch.distributed.barrier()  # no rank returns before rank 0 has written the last checkpoint
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    note_steps(trainer.steps - start_step, seconds, time.process_time() - cpu_started)  # checkpoint writes included
    rows_done = float(used_rows.item())
    return TrainResult(
        trainer.loss_history(), trainer.steps, seconds, rows_done / seconds if trainer.steps > start_step else 0.0
    )
