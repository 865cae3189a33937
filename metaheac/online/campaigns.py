"""Campaigns prepared for scoring: each request's seed and negative users read in one pass over the user base,
the general model adapted to each (and, for the quality estimate, without its held-out seeds), and the
adapted model's scorer (`AdaptedModel.scorer`) with the users kept out of its audience."""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from metaheac.adaptation import Adapter, Trunks, adapt_campaigns
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
    campaign_field_ids,
    plan_seeds,
)
from metaheac.online.top_n import TopN
from metaheac.online.user_base import UserBase


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
