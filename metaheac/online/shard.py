"""Scoring a shard of the user base for a few campaigns. Each campaign is scored by its adapted model's scorer
(`AdaptedModel.scorer`: `model.scoring.CampaignScorer` for a network, `linear.head.LinearHeadScorer` for a
linear head); scorers of one group score a batch together (`UserScorer.batched`: the recommended method's
campaigns of one general model, `LinearHeads`). Batches are scored on worker threads (one torch thread each)
while the next row group is decoded. The recommended method's users' topic mixes are read where stored with
the user base and inferred (then stored) where not (`online.user_mixes`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from concurrent.futures import Future

import torch

from metaheac.linear.head import LinearHeads, LinearHeadScorer
from metaheac.online.campaigns import CampaignRun
from metaheac.online.user_base import UserBase
from metaheac.online.user_mixes import StoredMixes, content_digest, mixes_folder
from metaheac.runtime.threads import one_thread_workers

log = logging.getLogger(__name__)


def scorer_groups(runs: dict[str, CampaignRun]) -> list[tuple[list[str], Callable[[torch.Tensor, torch.Tensor],
                                                                                  torch.Tensor]]]:
    """The campaigns among `runs` whose scorers share a group (`UserScorer.group`: the recommended method's
    of one general network and topic model), each group with its scorer of a batch in one pass."""
    by_group: dict[Hashable, list[str]] = {}
    for name, run in runs.items():
        if run.scorer.group is not None:
            by_group.setdefault(run.scorer.group, []).append(name)
    return [(names, runs[names[0]].scorer.batched([runs[n].scorer for n in names])) for names in by_group.values()]


def mixes_stores(runs: dict[str, CampaignRun], folder: str, inputs: list[str] | tuple[str, ...] = ()
                 ) -> dict[str, StoredMixes]:
    """{topic model digest: its `StoredMixes` in `folder`} for the topic models `runs`' heads weigh; the folder
    is checked (`user_mixes.mixes_folder`) whether they weigh any or not."""
    root = mixes_folder(folder, inputs)
    stores = {}
    for run in runs.values():
        topics = run.scorer.topics if isinstance(run.scorer, LinearHeadScorer) else None
        if topics is not None and topics.digest not in stores:
            stores[topics.digest] = StoredMixes(root, topics)
    if runs and not stores:
        log.warning("no campaign weighs users' topic mixes (the recommended method's): nothing stored in %s", root)
    return stores


def score_shard(
    base: UserBase, runs: dict[str, CampaignRun], groups: range, batch_size: int = 4096, workers: int | None = None,
    mixes: dict[str, StoredMixes] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every campaign's top (scores, user indexes) among the users of `groups`, best first; its excluded users
    (seeds, known negatives) never appear. Each row group is read and decoded once for all campaigns, while
    the previous one is scored.

    Batches are scored by `workers` threads (default: torch's thread count), each running torch on one
    thread: on 2 cores, one batch's ops split over 2 threads keep them waiting on each other (~1.2x one
    thread); independent batches keep both busy (~1.9x). The tops are added in batch order.

    `mixes` ({topic model digest: store}, `mixes_stores`): the topic mixes of a row group are read from its
    model's store when stored for these very ids, else inferred as the batches are scored and stored after
    the group; the scores are the same bits either way (mixes are inferred per batch of `batch_size`)."""
    if not runs:
        return {}
    stores = mixes or {}
    together = scorer_groups(runs)
    grouped = {name for names, _ in together for name in names}
    alone = [name for name in runs if name not in grouped]

    def score(single: torch.Tensor, lists: torch.Tensor, known: dict[str, torch.Tensor]
              ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        scores = {name: runs[name].scorer(single, lists).float() for name in alone}
        inferred: dict[str, torch.Tensor] = {}
        for names, heads in together:
            digest = heads.topics.digest if isinstance(heads, LinearHeads) and heads.topics is not None else None
            if digest in stores:
                assert isinstance(heads, LinearHeads) and digest is not None
                given = known.get(digest, inferred.get(digest))
                if given is None:
                    given = inferred[digest] = heads.user_mixes(single, lists)
                scores.update(zip(names, heads(single, lists, given).unbind(1), strict=True))
            else:
                scores.update(zip(names, heads(single, lists).unbind(1), strict=True))
        return [scores[name] for name in runs], inferred

    def store(group: int, users: str, parts: list[dict[str, torch.Tensor]]) -> None:
        """Store the group's mixes its batches inferred (those not read from the store)."""
        for digest in parts[0] if parts else {}:
            stores[digest].save(group, users, torch.cat([p[digest] for p in parts]))

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
        Pending = tuple[int, str, list[tuple[int, Future[tuple[list[torch.Tensor], dict[str, torch.Tensor]]]]]]
        pending: Pending | None = None

        def collect(done: Pending) -> None:
            group, users, batches = done
            parts = []
            for first, scored in batches:
                scores, inferred = scored.result()
                keep(first, scores)
                parts.append(inferred)
            store(group, users, parts)

        for group, (start, users) in zip(groups, base.batches(groups), strict=True):
            content = content_digest(users) if stores else ""
            known = {digest: mix for digest, s in stores.items()
                     if (mix := s.load(group, content, len(users))) is not None}
            queued = [
                (start + offset, pool.submit(score, users.single[offset : offset + batch_size],
                                             users.lists[offset : offset + batch_size],
                                             {d: mix[offset : offset + batch_size] for d, mix in known.items()}))
                for offset in range(0, len(users), batch_size)
            ]
            if pending is not None:
                collect(pending)
            pending = (group, content, queued)
        if pending is not None:
            collect(pending)
    return {name: run.top.result() for name, run in runs.items()}
