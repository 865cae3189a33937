"""Scoring a shard of the user base for a few campaigns. Each campaign is scored by its adapted model's scorer
(`AdaptedModel.scorer`: `model.scoring.CampaignScorer` for a network, `linear.head.LinearHeadScorer` for a
linear head); scorers of one group score a batch together (`UserScorer.batched`: the recommended method's
campaigns of one general model, `LinearHeads`). Batches are scored on worker threads (one torch thread each)
while the next row group is decoded."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future

import torch

from metaheac.online.campaigns import CampaignRun
from metaheac.online.user_base import UserBase
from metaheac.runtime.threads import one_thread_workers


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
