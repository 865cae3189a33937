"""Scoring a whole user base for a few campaigns, at the scale of a real one (10M users), in bounded memory.

- `UserBase` reads the dataset's users.parquet one row group at a time: a shard is a contiguous block of
  row groups and never loads the rest; `take` streams the groups holding a few chosen users (the seeds),
  and keeps the shard's own groups decoded for scoring when asked (`keep`).
- Each campaign is scored by its adapted model's scorer (`AdaptedModel.scorer`: `model.scoring.CampaignScorer`
  for a network, `linear.head.LinearHeadScorer` for a linear head); scorers of one group score a batch
  together (`UserScorer.batched`: the recommended method's campaigns of one general model, `LinearHeads`).
- `score_shard` scores independent batches on worker threads (one torch thread each) while the next row
  group is decoded; `TopN` keeps a campaign's N best users over the batches; shards' tops merge into the
  global top N.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from metaheac.adaptation import Adapter, Trunks, adapt_campaigns
from metaheac.data.dataset import SCHEMA_FILE, USERS_FILE, fetch
from metaheac.data.loading import user_table
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import CampaignTable, Features, UserTable
from metaheac.model.network import Network
from metaheac.model.scoring import ScoreConfig, UserScorer
from metaheac.online.expand import (
    TOP_N_NAME,
    CampaignFields,
    CampaignVocab,
    ExpandConfig,
    SeedMinimum,
    adapt_to_seeds,
    audience_frame,
    campaign_field_ids,
    plan_seeds,
)
from metaheac.online.tiers import Tier
from metaheac.runtime.threads import one_thread_workers


class UserBase:
    """A dataset's users, read by Parquet row group (row i of the file is user index i)."""

    def __init__(self, dataset_uri: str) -> None:
        folder = fetch(dataset_uri, [SCHEMA_FILE, USERS_FILE])
        self.schema = DatasetSchema.from_json((folder / SCHEMA_FILE).read_text(), source=dataset_uri)
        self.path: Path = folder / USERS_FILE
        self.file = pq.ParquetFile(self.path)
        self._local = threading.local()  # a ParquetFile per thread: one is not safe to read from two at once
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # group g: [starts[g], starts[g+1])
        self._single = [f.name for f in self.schema.user_single]
        self._lists = [f.name for f in self.schema.user_lists]
        self._keep: range = range(0)
        self._kept: dict[int, UserTable] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def shard_groups(self, shard: int, shards: int) -> range:
        """Shard `shard` of `shards`: a contiguous block of row groups (as even as the groups allow)."""
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
        groups = self.file.num_row_groups
        return range(shard * groups // shards, (shard + 1) * groups // shards)

    def uids(self) -> np.ndarray:
        """Every user's raw uid (one int64 column: 80 MB at 10M users)."""
        return pq.read_table(self.path, columns=["uid"]).column("uid").to_numpy()

    def keep(self, groups: range) -> None:
        """Keep these row groups decoded from their first read (a `take`) until `batches` yields them: a
        shard's users are then decoded once, by its seeds' take, not again to be scored. Memory: about
        230 bytes a kept user at the Tencent sizes (2.3 GB for a shard of 10M)."""
        self._keep = groups

    def group(self, g: int, rows: np.ndarray | None = None) -> UserTable:
        """Row group g as tensors (only `rows`, positions within the group, when given)."""
        kept = self._kept.get(g)
        if kept is None and g in self._keep:
            kept = self._kept[g] = self._decode(g)
        if kept is None:
            return self._decode(g, rows)
        if rows is None:
            return kept
        picked = torch.from_numpy(rows)
        return UserTable(kept.uid[rows], kept.single[picked], kept.lists[picked])

    def _decode(self, g: int, rows: np.ndarray | None = None) -> UserTable:
        if not hasattr(self._local, "file"):
            self._local.file = pq.ParquetFile(self.path, memory_map=True)
        # one thread per group: groups are decoded in parallel (`take`) or beside scoring's threads, and
        # Arrow's own pool on top of them spent more time in the kernel than decoding
        table = self._local.file.read_row_group(g, columns=["uid", *self._single, *self._lists], use_threads=False)
        return user_table(table if rows is None else table.take(rows), self.schema)

    def batches(self, groups: range) -> Iterator[tuple[int, UserTable]]:
        """(index of the first user, its row group's users) for each group, one group in memory at a time
        (but those kept)."""
        for g in groups:
            kept = self._kept.pop(g, None)
            yield int(self.starts[g]), self._decode(g) if kept is None else kept

    def take(self, indexes: np.ndarray) -> UserTable:
        """The users at sorted, distinct `indexes` (at least one), reading only the row groups that hold them,
        on torch's thread count of threads (Arrow and NumPy release the GIL: seeds spread over a 10M-user
        base touch every row group)."""
        group_of = np.searchsorted(self.starts, indexes, side="right") - 1

        def part(g: int) -> UserTable:
            return self.group(g, indexes[group_of == g] - self.starts[g])

        with ThreadPoolExecutor(torch.get_num_threads()) as pool:
            parts = list(pool.map(part, np.unique(group_of).tolist()))
        return UserTable(
            np.concatenate([p.uid for p in parts]),
            torch.cat([p.single for p in parts]),
            torch.cat([p.lists for p in parts]),
        )


class TopN:
    """The N best (score, user index) pairs seen so far; ties keep no particular order."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._scores: list[torch.Tensor] = []
        self._index: list[torch.Tensor] = []
        self._held = 0

    def add(self, scores: torch.Tensor, index: torch.Tensor) -> None:
        if len(scores) > self.n:  # only a batch's own N best can make the top N
            scores, picked = torch.topk(scores, self.n)
            index = index[picked]
        self._scores.append(scores)
        self._index.append(index)
        self._held += len(scores)
        if self._held > 4 * self.n:  # bound the memory; reduce rarely
            self._reduce()

    def _reduce(self) -> None:
        scores, index = torch.cat(self._scores), torch.cat(self._index)
        if len(scores) > self.n:
            scores, picked = torch.topk(scores, self.n)
            index = index[picked]
        self._scores, self._index, self._held = [scores], [index], len(scores)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, user indexes), best first."""
        if not self._scores:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        self._reduce()
        scores, order = torch.sort(self._scores[0], descending=True, stable=True)
        return scores, self._index[0][order]



@dataclass
class CampaignRun:
    """One campaign scored over a user shard: its scorer, the users kept out of its audience and what it keeps."""

    scorer: UserScorer
    excluded: np.ndarray  # sorted user indexes: seeds, known negatives, exclusion lists (`SeedPlan.excluded`)
    top: TopN
    held_out: np.ndarray | None = None  # a quality estimate's run: the seeds it was adapted without


def holdout_key(name: str) -> str:
    """The run of campaign `name` adapted without its held-out seeds (a campaign's name holds no "/")."""
    return f"{name}/holdout"


def failed(error: Exception) -> dict:
    """A campaign's summary when its request cannot be served: the error on one line, and what was known of
    its seeds (`SeedRequestError.counts`)."""
    return {"status": "failed", "error": " ".join(str(error).split()), **getattr(error, "counts", {})}


@dataclass(frozen=True)
class CampaignRequest:
    """One campaign to expand: its ad fields (`expand.campaign_field_ids`), seed uids and negative uids (None:
    sampled from the non-seeds); its audience size (None: `prepare_campaigns`' top_n), the uid lists kept out
    of its audience ({name: uids}), and the share of its seeds held out for the quality estimate (0: none)."""

    campaign_fields: CampaignFields
    seed_uids: np.ndarray
    negative_uids: np.ndarray | None = None
    size: int | None = None
    size_name: str = TOP_N_NAME  # where the size was asked, named in its error
    exclusions: dict[str, np.ndarray] = field(default_factory=dict)
    holdout: float = 0.0


def prepare_campaigns(
    general_model: Network,
    base: UserBase,
    uid_index: pd.Index,
    campaigns: CampaignTable,
    requests: dict[str, CampaignRequest],
    top_n: int,
    config: ExpandConfig | None = None,
    score_config: ScoreConfig | None = None,
    vocab: CampaignVocab | None = None,
    adapt: Adapter = adapt_campaigns,
    minimum: SeedMinimum | None = None,
) -> tuple[dict[str, CampaignRun], dict[str, dict]]:
    """Adapt the general model to each campaign's seeds by the method's `adapt`. The seed and negative users
    of every campaign are read in one pass (`uid_index`: `base.uids()` as a pd.Index): a row group is
    decoded once for all campaigns, not once for each. Returns the runs to give `score_shard` and, for
    every request, a summary: status "ok" and what was used, or status "failed" and a one-line error for a
    request that cannot be served (ValueError), which fails that campaign alone.

    A request with a `holdout` share also gets a run under `holdout_key(name)`: the model adapted without
    that share of its seeds (drawn with the adaptation's seed), which keeps them among its candidates."""
    config = config or ExpandConfig()
    summaries: dict[str, dict] = {}
    plans = {}
    resolved = {}
    for name, request in requests.items():  # the campaign first: its error is the first one to fix
        try:
            resolved[name] = campaign_field_ids(base.schema, campaigns, request.campaign_fields, vocab)
            plans[name] = plan_seeds(uid_index, request.seed_uids, request.negative_uids, request.size or top_n,
                                     config, request.exclusions, minimum or SeedMinimum(),
                                     request.size_name)
        except ValueError as error:
            summaries[name] = failed(error)
    chosen = {name: np.union1d(plan.seeds, plan.negatives) for name, plan in plans.items()}
    runs: dict[str, CampaignRun] = {}
    trunks: Trunks = {}  # campaigns of one general network share its user side (the recommended method's)
    if chosen:
        every = np.unique(np.concatenate(list(chosen.values())))
        # torch.optim's first use imports torch._dynamo (~2 s of Python): do it while Arrow decodes the users
        warm = threading.Thread(target=importlib.import_module, args=("torch._dynamo",), daemon=True)
        warm.start()
        users = base.take(every)
        warm.join()
    for name, plan in plans.items():
        started = time.perf_counter()
        at = torch.from_numpy(np.searchsorted(every, chosen[name]))
        features = Features(base.schema, UserTable(users.uid[at.numpy()], users.single[at], users.lists[at]),
                            campaigns)

        def local(indexes: np.ndarray, name: str = name) -> np.ndarray:  # index in the campaign's users
            return np.asarray(np.searchsorted(chosen[name], indexes))

        ids, existing, unknown_fields = resolved[name]
        try:
            model = adapt_to_seeds(general_model, features, (ids, existing), local(plan.seeds), local(plan.negatives),
                                   config, adapt)
        except ValueError as error:
            summaries[name] = failed(error)
            continue
        size = requests[name].size or top_n
        runs[name] = CampaignRun(model.scorer(ids, score_config, trunks), plan.excluded, TopN(size))
        held = _held_out(len(plan.seeds), requests[name].holdout, config.adapt.seed)
        if len(held):
            kept = np.delete(plan.seeds, held)
            estimate = adapt_to_seeds(general_model, features, (ids, existing), local(kept), local(plan.negatives),
                                      config, adapt)
            held_out = plan.seeds[held]
            runs[holdout_key(name)] = CampaignRun(estimate.scorer(ids, score_config, trunks),
                                                  np.setdiff1d(plan.excluded, held_out), TopN(size), held_out)
        summaries[name] = {"status": "ok", **plan.summary, "unknown_campaign_fields": unknown_fields,
                           "held_out_seeds": len(held), "adapt_seconds": round(time.perf_counter() - started, 3)}
    return runs, {name: summaries[name] for name in requests}


def _held_out(seeds: int, share: float, seed: int) -> np.ndarray:
    """Positions of the seeds held out for the quality estimate (sorted; none when fewer than 2 seeds would
    stay on each side)."""
    count = round(share * seeds)
    if count < 2 or seeds - count < 2:
        return np.zeros(0, np.int64)
    return np.sort(np.random.default_rng(seed).choice(seeds, size=count, replace=False))


def prepare_campaign(
    general_model: Network,
    base: UserBase,
    uid_index: pd.Index,
    campaigns: CampaignTable,
    campaign_fields: CampaignFields,
    seed_uids: np.ndarray,
    top_n: int,
    config: ExpandConfig | None = None,
    score_config: ScoreConfig | None = None,
    vocab: CampaignVocab | None = None,
    negative_uids: np.ndarray | None = None,
    adapt: Adapter = adapt_campaigns,
) -> tuple[CampaignRun, dict]:
    """`prepare_campaigns` for one campaign: its run and summary; ValueError on a request that cannot be
    served."""
    runs, summaries = prepare_campaigns(general_model, base, uid_index, campaigns,
                                        {"": CampaignRequest(campaign_fields, seed_uids, negative_uids)}, top_n,
                                        config, score_config, vocab, adapt)
    if "" not in runs:
        raise ValueError(summaries[""]["error"])
    return runs[""], summaries[""]


def scorer_groups(runs: dict[str, CampaignRun]) -> list[tuple[list[str], Callable[[torch.Tensor, torch.Tensor],
                                                                                  torch.Tensor]]]:
    """The campaigns among `runs` whose scorers share a group (`UserScorer.group`: the recommended method's
    of one general network and topic model), each group with its scorer of a batch in one pass."""
    by_group: dict[Hashable, list[str]] = {}
    for name, run in runs.items():
        if run.scorer.group is not None:
            by_group.setdefault(run.scorer.group, []).append(name)
    return [(names, runs[names[0]].scorer.batched([runs[n].scorer for n in names])) for names in by_group.values()]


def score_shard(
    base: UserBase, runs: dict[str, CampaignRun], groups: range, batch_size: int = 4096, workers: int | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every campaign's top (scores, user indexes) among the users of `groups`, best first; its excluded users
    (seeds, known negatives) never appear. Each row group is read and decoded once for all campaigns, while
    the previous one is scored.

    Batches are scored by `workers` threads (default: torch's thread count), each running torch on one
    thread: on 2 cores, one batch's ops split over 2 threads keep them waiting on each other (~1.2x one
    thread); independent batches keep both busy (~1.9x). The tops are added in batch order."""
    if not runs:
        return {}
    together = scorer_groups(runs)
    grouped = {name for names, _ in together for name in names}
    alone = [name for name in runs if name not in grouped]

    def score(single: torch.Tensor, lists: torch.Tensor) -> list[torch.Tensor]:
        scores = {name: runs[name].scorer(single, lists).float() for name in alone}
        for names, heads in together:
            scores.update(zip(names, heads(single, lists).unbind(1), strict=True))
        return [scores[name] for name in runs]

    def keep(first: int, scores: list[torch.Tensor]) -> None:
        index = torch.arange(first, first + len(scores[0]))
        for run, batch in zip(runs.values(), scores, strict=True):
            excluded = run.excluded[(run.excluded >= first) & (run.excluded < first + len(batch))]
            if len(excluded):
                kept = torch.ones(len(batch), dtype=torch.bool)
                kept[torch.from_numpy(excluded - first)] = False
                run.top.add(batch[kept], index[kept])
            else:
                run.top.add(batch, index)

    with one_thread_workers(workers) as pool:
        torch.set_num_threads(1)  # this thread only adds to the tops
        # a group's batches are queued before the last group's results are collected, so the workers never
        # wait at a group's end; decoding the next group overlaps scoring this one
        pending: list[tuple[int, Future[list[torch.Tensor]]]] = []
        for start, users in base.batches(groups):
            queued = [
                (start + offset, pool.submit(score, users.single[offset : offset + batch_size],
                                             users.lists[offset : offset + batch_size]))
                for offset in range(0, len(users), batch_size)
            ]
            for first, scores in pending:
                keep(first, scores.result())
            pending = queued
        for first, scores in pending:
            keep(first, scores.result())
    return {name: run.top.result() for name, run in runs.items()}


def merge_audiences(parts: list[pd.DataFrame], top_n: int, tiers: list[Tier] | None = None) -> pd.DataFrame:
    """The global top N (`audience_frame`) of shards' tops (each a frame with uid and score): as each shard
    kept its own N best, the best N of their union are the best N of all users. With `tiers` (the largest
    being N), each user's smallest tier is its `tier`: exact across shards, as the ranks are."""
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"uid": [], "score": []})
    frame = frame.sort_values(["score", "uid"], ascending=[False, True], kind="stable").head(top_n)
    return audience_frame(frame["uid"].to_numpy(), frame["score"].to_numpy(), tiers)
