"""Audience expansion, the online use: adapt the general model to one campaign's seed users, score every
user of the dataset, and hand back the top-N users who are not seeds.

The campaign is an existing one (`{"aid": <raw ad id>}`) or a new one given by its ad fields: raw
values mapped through the dataset's campaign vocabulary (`campaign_vocab.json`), or field indexes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from metaheac.adaptation import AdaptConfig, AdaptedModel, Adapter, adapt_campaigns, score
from metaheac.data.dataset import CAMPAIGN_VOCAB_FILE
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import CampaignTable, Features, Rows
from metaheac.model.network import Network
from metaheac.online.tiers import Tier, tier_labels
from metaheac.runtime import storage

log = logging.getLogger(__name__)
AUDIENCE_KEY = b"metaheac.audience"  # Parquet metadata of an audience file written here (a file format mark: kept)

# {field name: {str(raw value): field index}} for every campaign field, beside schema.json.
CampaignVocab = dict[str, dict[str, int]]
# a campaign: {"aid": id} for an existing one, or its raw field values (integers or text, as in the
# campaigns table; plain field indexes for a dataset without a campaign vocabulary)
CampaignFields = dict[str, int | str]
TOP_N_NAME = "--top-n (parameter top_n)"  # the audience size's name in an error, when no tiers are asked


@dataclass(frozen=True)
class ExpandConfig:
    adapt: AdaptConfig = field(default_factory=AdaptConfig)  # its seed also seeds the negative sampling
    negatives_per_seed: float = 4.0  # users sampled as negatives per known seed, when none are given


def load_campaign_vocab(dataset_uri: str) -> CampaignVocab | None:
    """The dataset's raw -> index vocabulary of campaign fields, or None when it has none."""
    uri = storage.join(storage.published(dataset_uri), CAMPAIGN_VOCAB_FILE)
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def campaign_field_ids(
    schema: DatasetSchema, campaigns: CampaignTable, campaign_fields: CampaignFields, vocab: CampaignVocab | None = None
) -> tuple[torch.Tensor, int | None, list[str]]:
    """(field indexes [F_c], the campaign's index if it exists, fields that fell back to unknown (0)).
    ValueError when the campaign cannot be served: an aid it does not hold, fields it has not, or ad fields
    none of which it knows (all unknown: the adaptation would see no campaign at all)."""
    if "aid" in campaign_fields:
        if len(campaign_fields) > 1:
            raise ValueError("give a campaign either as {'aid': ...} or by its ad fields, not both")
        found = np.flatnonzero(campaigns.aid == campaign_fields["aid"])
        if not len(found):
            raise ValueError(f"aid {campaign_fields['aid']} is not a campaign of this dataset: give its ad fields")
        index = int(found[0])
        return campaigns.fields[index], index, []
    known = [f.name for f in schema.campaign_fields]
    extra = sorted(set(campaign_fields) - set(known))
    if extra:
        raise ValueError(f"unknown campaign fields {extra}: the dataset's are {known} (or 'aid')")
    ids, unknown = [], []
    for f in schema.campaign_fields:
        value = campaign_fields.get(f.name)
        code: int | None = None
        if vocab is not None and value is not None:
            code = vocab.get(f.name, {}).get(str(value))
        elif value is not None:
            if not (str(value).isdigit() and int(value) < f.vocab_size):
                raise ValueError(f"campaign field {f.name} index {value} is outside [0, {f.vocab_size}): "
                                 "pass field indexes")
            code = int(value)
        if not code:
            unknown.append(f.name)
        ids.append(code or 0)
    unseen = sorted(set(campaign_fields) & set(unknown))
    if len(unknown) == len(known):
        values = ", ".join(f"{name}={campaign_fields[name]}" for name in unseen)
        raise ValueError(f"no ad field of the campaign is known to this dataset ({values} unseen): give raw values "
                         "as in its campaigns table (adFeature.csv), or an existing campaign's aid")
    if unseen:
        log.warning("ad fields unseen in this dataset, treated as unknown: %s", ", ".join(unseen))
    return torch.tensor(ids, dtype=campaigns.fields.dtype), None, unknown


def _with_campaign(features: Features, ids: torch.Tensor) -> tuple[Features, int]:
    """Features with one more campaign (index returned), for a campaign the dataset does not hold."""
    c = features.campaigns
    campaigns = CampaignTable(
        np.append(c.aid, -1),
        torch.cat([c.fields, ids.to(c.fields.device)[None]]),
        np.append(c.split, ""),
        np.append(c.seed_positives, 0),
    )
    return Features(features.schema, features.users, campaigns), len(c)


def _user_indexes(index: pd.Index, uids: np.ndarray) -> tuple[np.ndarray, int]:
    """Distinct known users' indexes (sorted), and how many of the distinct uids are unknown."""
    positions = index.get_indexer(np.unique(np.asarray(uids, dtype=np.int64)))
    return np.sort(positions[positions >= 0]), int((positions < 0).sum())


@dataclass(frozen=True)
class SeedPlan:
    """The users a campaign adapts on (indexes into the user base) and what was dropped on the way."""

    seeds: np.ndarray  # sorted, distinct
    negatives: np.ndarray
    summary: dict
    suppressed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # exclusion lists' users

    @property
    def excluded(self) -> np.ndarray:
        """The users never in the audience (sorted): the seeds, the negatives when they were given (known
        non-converters), not when they were sampled, and the users of the exclusion lists."""
        known = np.union1d(self.seeds, self.negatives) if self.summary["negatives_given"] else self.seeds
        return np.union1d(known, self.suppressed)


class SeedRequestError(ValueError):
    """A seed request that cannot be served; `counts` says what was known of it (the summary's fields)."""

    def __init__(self, message: str, counts: dict) -> None:
        super().__init__(message)
        self.counts = counts


@dataclass(frozen=True)
class SeedMinimum:
    """The fewest known, distinct seed users a campaign is expanded from (Meta and Google: 100), and whether a
    campaign below it still runs, flagged low-confidence in its summary."""

    seeds: int = 0
    allow_small: bool = False


@dataclass(frozen=True)
class AudienceRequest:
    """What an advertiser asks of one audience beside its seeds: reach tiers (None: one of top_n users),
    uid lists kept out of it ({reason: uids}) and the seed minimum."""

    tiers: list[Tier] | None = None
    exclusions: dict[str, np.ndarray] = field(default_factory=dict)
    minimum: SeedMinimum = SeedMinimum()


def plan_seeds(
    uid_index: pd.Index,
    seed_uids: np.ndarray,
    negative_uids: np.ndarray | None,
    top_n: int,
    config: ExpandConfig,
    exclusions: dict[str, np.ndarray] | None = None,
    minimum: SeedMinimum = SeedMinimum(),
    size_name: str = TOP_N_NAME,
) -> SeedPlan:
    """Seeds and negatives as user indexes (`uid_index`: every user's uid, in user order); negatives are
    `negative_uids` when given (then kept out of the audience too), else users drawn (seeded) from the
    non-seeds. `exclusions` ({list name: uids}) are kept out of the audience before ranking, so `top_n` is
    met after them; the summary counts each excluded user under the first reason that removes it (seeds,
    known negatives, then the lists in order). SeedRequestError on a request that cannot be served (no seeds,
    none known, fewer than the minimum, top_n out of range: `size_name` names it)."""
    seeds, unknown_seeds = _user_indexes(uid_index, seed_uids)
    counts = {"seed_uids": int(len(np.unique(seed_uids))), "seeds_used": int(len(seeds)),
              "unknown_seed_uids": unknown_seeds}
    if len(seed_uids) == 0:
        raise SeedRequestError("empty seed set: pass at least one seed uid", counts)
    if not len(seeds):
        raise SeedRequestError(f"none of the {unknown_seeds} seed uids is a user of this dataset: check the uids or "
                               "preprocess their users", counts)
    if len(seeds) < minimum.seeds and not minimum.allow_small:
        raise SeedRequestError(f"{len(seeds)} known seed users (distinct, {unknown_seeds} unknown uids not counted), "
                               f"below the minimum of {minimum.seeds}: add seeds, or pass --allow-small-seeds to "
                               "expand it flagged low-confidence", counts | {"below_minimum": True})
    given = negative_uids is not None
    if negative_uids is not None:
        negatives, unknown_negatives = _user_indexes(uid_index, negative_uids)
        negatives = negatives[~np.isin(negatives, seeds, assume_unique=True)]  # a seed is a positive, whatever else
    removed = {"seeds": seeds, **({"known_negatives": negatives} if given else {})}
    removed |= {name: _user_indexes(uid_index, uids)[0] for name, uids in (exclusions or {}).items()}
    reasons, out = {}, np.zeros(0, np.int64)
    for reason, users in removed.items():
        reasons[reason] = int(len(users) - np.isin(users, out, assume_unique=True).sum())
        out = np.union1d(out, users)
    suppressed = np.setdiff1d(out, np.union1d(seeds, negatives) if given else seeds, assume_unique=True)
    candidates = len(uid_index) - len(out)
    if not 1 <= top_n <= candidates:
        raise SeedRequestError(f"{size_name} {top_n} is not in [1, {candidates}], the users that are neither seeds, "
                               "known negatives nor excluded: lower it", counts)
    if not given:
        unknown_negatives = 0
        count = min(round(config.negatives_per_seed * len(seeds)), len(uid_index) - len(seeds))
        rng = np.random.default_rng(config.adapt.seed)
        # draw among the non-seeds without materialising them: k-th non-seed = k + seeds at or below it
        picked = rng.choice(len(uid_index) - len(seeds), size=count, replace=False)
        negatives = picked + np.searchsorted(seeds - np.arange(len(seeds)), picked, side="right")
    summary = {
        **counts,
        "negatives_given": given,
        "negatives_used": int(len(negatives)),
        "unknown_negative_uids": unknown_negatives,
        "candidates": candidates,
        "excluded": reasons,
        "low_confidence": bool(len(seeds) < minimum.seeds),
    }
    return SeedPlan(seeds, negatives, summary, suppressed)


def adapt_to_seeds(
    general_model: Network,
    features: Features,
    campaign: tuple[torch.Tensor, int | None],
    seeds: np.ndarray,
    negatives: np.ndarray,
    config: ExpandConfig,
    adapt: Adapter = adapt_campaigns,
) -> AdaptedModel:
    """The model adapted to the campaign (its field ids and index if it exists, from `campaign_field_ids`) on
    these users of `features`; `adapt` is the method's adaptation (`Method.adapt_campaigns`), by default the
    official protocol."""
    ids, existing = campaign
    features, index = (features, existing) if existing is not None else _with_campaign(features, ids)
    user = torch.from_numpy(np.concatenate([seeds, negatives]).astype(np.int64))
    label = torch.cat([torch.ones(len(seeds)), torch.zeros(len(negatives))])
    seeds_rows = Rows(torch.full_like(user, index), user, label)
    ((_, model),) = adapt(general_model, features, {index: seeds_rows}, config.adapt)
    return model


def audience_frame(uids: np.ndarray, scores: np.ndarray, tiers: list[Tier] | None = None) -> pd.DataFrame:
    """An audience as every step writes it: uid, score, rank (from 1), best first (`scores` sorted); with
    `tiers`, each user's smallest tier (its label, e.g. "1%") as `tier`."""
    frame = pd.DataFrame({"uid": uids, "score": scores, "rank": np.arange(1, len(uids) + 1, dtype=np.int64)})
    if tiers:
        frame["tier"] = pd.Categorical(tier_labels(len(frame), tiers), categories=[t.label for t in tiers])
    return frame


def expand(
    general_model: Network,
    features: Features,
    campaign_fields: CampaignFields,
    seed_uids: np.ndarray,
    negative_uids: np.ndarray | None = None,
    top_n: int = 10_000,
    config: ExpandConfig | None = None,
    vocab: CampaignVocab | None = None,
    adapt: Adapter = adapt_campaigns,
    request: AudienceRequest | None = None,
) -> pd.DataFrame:
    """The top-N users for the campaign that are neither seeds, given negatives nor in the request's exclusion
    lists (`audience_frame`; with the request's tiers, N is the largest and each user gets its tier).

    Negatives are `negative_uids` when given, else users drawn (seeded) from the non-seeds. What was
    used and dropped (unknown uids, fields) is in `frame.attrs["summary"]`. Every user is in memory:
    `online.shard.score_shard` streams a user base too large for that.
    """
    config = config or ExpandConfig()
    ids, existing, unknown_fields = campaign_field_ids(features.schema, features.campaigns, campaign_fields, vocab)
    request = request or AudienceRequest()
    top_n, size_name = (request.tiers[-1].size, f"tier {request.tiers[-1].label}") if request.tiers else (
        top_n, TOP_N_NAME)
    plan = plan_seeds(pd.Index(features.users.uid), seed_uids, negative_uids, top_n, config, request.exclusions,
                      request.minimum, size_name)
    started = time.perf_counter()
    model = adapt_to_seeds(general_model, features, (ids, existing), plan.seeds, plan.negatives, config, adapt)
    adapted = time.perf_counter()
    features, campaign = _with_campaign(features, ids)
    scores = score(model, features, campaign, torch.arange(len(features.users)), config.adapt.score_batch_size)
    scored = time.perf_counter()
    excluded = torch.zeros(len(scores), dtype=torch.bool)
    excluded[torch.from_numpy(plan.excluded)] = True
    top = torch.topk(scores.float().cpu().masked_fill(excluded, -torch.inf), top_n)
    frame = audience_frame(features.users.uid[top.indices.numpy()], top.values.numpy(), request.tiers)
    frame.attrs["summary"] = {
        **plan.summary,
        "unknown_campaign_fields": unknown_fields,
        "adapt_seconds": round(adapted - started, 3),
        "score_seconds": round(scored - adapted, 3),
    }
    return frame


def write_audience(frame: pd.DataFrame, uri: str) -> None:
    """The audience as Parquet at `uri` (local or gs://), written atomically, marked as ours (`is_audience`)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with storage.open_write(uri) as f:
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), AUDIENCE_KEY: b"1"}), f)


def is_audience(uri: str) -> bool:
    """Whether `uri` is an audience file `write_audience` wrote: `expand` may replace it without --overwrite."""
    if not storage.is_file(uri):
        return False
    try:
        with storage.open_read(uri) as f:
            return AUDIENCE_KEY in (pq.read_schema(f).metadata or {})
    except pa.ArrowException:
        return False
