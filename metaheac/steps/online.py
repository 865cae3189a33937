"""The online stage's steps: publish a general model to the registry; expand every campaign of a seed-set
folder over one shard of the user base; merge the shards' tops into each campaign's audience."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from metaheac.adaptation import AdaptConfig
from metaheac.data.errors import InputError
from metaheac.data.loading import load_campaigns
from metaheac.evaluation.expansion import render
from metaheac.methods import load_model, method
from metaheac.model.scoring import ScoreConfig
from metaheac.model.store import check_same_data
from metaheac.online import refresh
from metaheac.online.campaigns import CampaignRequest, failed, holdout_key, prepare_campaigns
from metaheac.online.expand import TOP_N_NAME, ExpandConfig, SeedMinimum, load_campaign_vocab, write_audience
from metaheac.online.model_registry import (
    DEFAULT_NAME,
    ResolvedModel,
    dataset_fingerprint,
    latest,
    publish,
    resolve_model,
)
from metaheac.online.promotion import GateConfig, decide
from metaheac.online.seed_sets import file_digest, list_seed_sets
from metaheac.online.shard import mixes_stores, score_shard
from metaheac.online.tiers import Tier, jaccard, parse_tiers, recall_estimate
from metaheac.online.top_n import merge_audiences
from metaheac.online.user_base import UserBase
from metaheac.runtime import storage
from metaheac.runtime.outputs import claim
from metaheac.steps.base import Artifact, Published, Step, arg
from metaheac.steps.request import (
    allow_small_seeds_arg,
    exclude_arg,
    exclusion_lists,
    min_seeds_arg,
    request_tiers,
    tiers_arg,
)

STATUS_FILE = "status.json"  # a shard's: the model version and every campaign's status
HOLDOUT = "holdout"  # a shard's folder of quality-estimate runs: <campaign>.parquet, <campaign>-seeds.parquet
SUMMARY_FILES = ("summary.json", "kfp_metrics.json", "summary.html")
# a campaign of an expansion run: expanded, failed, its stored audience reused (nothing changed), or
# ineligible (its seeds fell below the minimum: its last audience kept, stale)
CAMPAIGN_STATUSES = ("ok", "failed", "reused", "ineligible")
_ADAPT = AdaptConfig()
_GATE = GateConfig()
# What a shard task spends on its campaigns' pre-multiplied tables, all together (ScoreConfig.project_mb):
# every field of one campaign at the Tencent sizes takes 0.73 GB; more campaigns project fewer fields each.
PROJECT_MB = 2048.0


@dataclass
class Publish(Step):
    """Publish a trained general model to the registry as a new version, then point LATEST at it if it passes
    the promotion gate (metaheac.online.promotion): its cold GAUC is not worse than LATEST's, on the same held-out
    campaigns of --dataset, by more than --tolerance (or --force)."""

    name: ClassVar[str] = "publish"
    artifacts: ClassVar = {"model": Artifact("Model"), "dataset": Artifact("Dataset"), "metrics": Artifact("Artifact"),
                           "output": Artifact("Artifact", output=True)}
    published: ClassVar = {"gate": Published("Metrics", "kfp_metrics.json")}
    cached: ClassVar = False  # a cached task would not publish this run's model
    model: str = arg(help="the model folder to publish (from `train`)")
    registry: str = arg(help="registry root (local or gs://): versions go to REGISTRY/NAME/VERSION")
    model_name: str = arg(DEFAULT_NAME, help="the model's name in the registry")
    dataset: str = arg("", help="the dataset it was trained on (its fingerprint is recorded)")
    metrics: str = arg("", help="an evaluate output folder: its kfp_metrics.json is recorded")
    run_id: str = arg("", help="the pipeline run that trained it")
    tolerance: float = arg(_GATE.tolerance, help="cold GAUC the model may lose against LATEST and still become "
                                                 "LATEST", minimum=0)
    force: bool = arg(False, help="make it LATEST whatever the gate says (both figures are still recorded)")
    output: str = arg("", help="folder to write the gate's decision into (gate.json, kfp_metrics.json)")

    def run(self) -> dict:
        if not self.output:
            return self.gate_and_publish()
        inputs = [uri for uri in (self.model, self.registry, self.dataset, self.metrics) if uri]
        with claim(self.output, self.name, inputs):  # the gate's folder: never one that is not ours
            return self.gate_and_publish()

    def gate_and_publish(self) -> dict:
        metrics = json.loads(storage.read_text(storage.join(self.metrics, "kfp_metrics.json"))) if self.metrics else {}
        load_model(self.model)  # the whole network rebuilt and its weights checked before any pointer moves
        champion = latest(self.registry, self.model_name)
        gate = decide(self.model, champion.uri if champion else None, self.dataset,
                      GateConfig(self.tolerance, self.force)) | {"champion_version": champion.version if champion
                                                                 else ""}
        published = publish(self.model, self.registry, self.model_name, self.dataset, metrics, self.run_id,
                            gate=gate)
        if self.output:
            with storage.publish_dir(self.output) as folder:
                (folder / "gate.json").write_text(json.dumps(gate | {"version": published.version}, indent=2))
                # KFP metrics are numbers: a figure not computed is left out
                (folder / "kfp_metrics.json").write_text(json.dumps(
                    {f"gate_{k}": float(gate[k]) for k in ("candidate", "champion", "tolerance", "promoted")
                     if gate[k] is not None}))
        # on stderr, as train's phases: a step's stdout is its one result line
        print(f"metaheac publish: {'promoted to LATEST' if gate['promoted'] else 'kept, not LATEST'}: {gate['reason']}",
              file=sys.stderr)
        return {"uri": published.uri, "version": published.version, "promoted": gate["promoted"]}


@dataclass
class ExpandShard(Step):
    """Adapt the general model to each campaign of a seed-set folder (one group of them) and keep each
    campaign's top N among one shard of the user base (read by row group); a bad seed set fails its
    campaign alone, in status.json."""

    name: ClassVar[str] = "expand_shard"
    # the model (a registry URI or latest) and the seed sets (a folder) come from outside the run
    artifacts: ClassVar = {"dataset": Artifact("Dataset"), "output": Artifact("Dataset", output=True)}
    # the seed-set folder and `latest` keep their URIs while what they hold changes
    cached: ClassVar = False
    dataset: str = arg(help="canonical dataset URI: its users are the candidates")
    model: str = arg(help="general model: a registry URI, latest, or a model folder (metaheac.online.model_registry)")
    seeds: str = arg(help="seed-set folder: <campaign>.json + <campaign>.txt|.parquet each (metaheac.online.seed_sets)")
    output: str = arg(help=f"folder to write {STATUS_FILE} and each campaign's shard top (<campaign>.parquet)")
    top_n: int = arg(10_000, help="audience size per campaign, when no tiers are asked", minimum=1)
    tiers: str = tiers_arg("; a seed set's manifest may name its own (\"tiers\")")
    exclude: str = exclude_arg()  # every campaign's; a manifest's "exclude" adds its own
    min_seeds: int = min_seeds_arg()
    allow_small_seeds: bool = allow_small_seeds_arg()
    holdout: float = arg(0.2, help="share of each seed set held out to estimate the tiers' recall (0: no estimate)",
                         minimum=0, maximum=0.5)
    shard: int = arg(0, help="which shard of the users (0-based): a contiguous block of row groups", minimum=0)
    shards: int = arg(1, help="how many shards the users are split into", minimum=1)
    group: int = arg(0, help="which group of the campaigns (0-based): every GROUPS-th by name", minimum=0)
    groups: int = arg(1, help="how many groups the campaigns are split into", minimum=1)
    audiences: str = arg("", help="stable audiences folder (metaheac.online.refresh): a campaign whose request (seeds, "
                                  "exclusions, tiers, model, users, by content) is unchanged since its audience was "
                                  "written there reuses it; one whose seeds fell below --min-seeds keeps it, stale")
    seed: int = arg(_ADAPT.seed, help="seeds the adaptation and the negative sampling")
    mixes: str = arg("", help="folder of the users' topic mixes (the recommended method's, "
                              "metaheac.online.user_mixes): read where stored for this topic model and these users' "
                              "ids, else inferred and stored there for later campaigns and runs; a stale entry is "
                              "recomputed")

    def run(self) -> dict:
        if not (0 <= self.shard < self.shards and 0 <= self.group < self.groups):
            raise InputError(f"--shard {self.shard} of {self.shards} or --group {self.group} of {self.groups} "
                             "is out of range (0-based)")
        started = time.perf_counter()
        resolved = resolve_model(self.model)
        with claim(self.output, self.name, [self.dataset, resolved.uri, self.seeds]):
            return self.expand(resolved, started)

    def expand(self, resolved: ResolvedModel, started: float) -> dict:
        model, info = load_model(resolved.uri)
        base = UserBase(self.dataset)
        check_same_data(info, base.schema, resolved.uri, self.dataset)
        campaigns, vocab = load_campaigns(self.dataset, base.schema), load_campaign_vocab(self.dataset)
        uid_index = pd.Index(base.uids())
        groups = base.shard_groups(self.shard, self.shards)
        base.keep(groups)  # the first campaign's seed read decodes the shard's users, scored once for all
        spec = method(info["method"])
        config = ExpandConfig(adapt=spec.adapt_config(dataclasses.replace(_ADAPT, seed=self.seed)))
        status: dict[str, dict] = {}
        requests = {}
        # without tiers, one of top_n users (checked per campaign against its candidates, as a size asked)
        default_tiers = request_tiers(self.tiers, len(base)) if self.tiers else [
            Tier(str(self.top_n), self.top_n)]
        suppressed = exclusion_lists(self.exclude, "global")
        # what every campaign's audience depends on beside its own seed set (metaheac.online.refresh)
        common = {"model": refresh.request_digest(info), "users": dataset_fingerprint(self.dataset),
                  "exclude": sorted(file_digest(name.partition(":")[2]) for name in suppressed),
                  "min_seeds": self.min_seeds, "allow_small_seeds": self.allow_small_seeds, "holdout": self.holdout,
                  "seed": self.seed}
        digests: dict[str, str] = {}
        minimum = SeedMinimum(self.min_seeds, self.allow_small_seeds)
        every_set = sorted(list_seed_sets(self.seeds), key=lambda s: s.campaign)
        if not every_set:  # a wrong folder, not a quiet hour: an empty run would look like a success
            raise InputError(f"{self.seeds}: no seed sets in this folder (a <campaign>.json beside its "
                             "<campaign>.txt or .parquet each; metaheac/online/seed_sets.py)")
        seed_sets = every_set[self.group :: self.groups]
        asked: dict[str, list[Tier]] = {}
        score_config = ScoreConfig(project_mb=PROJECT_MB / max(1, len(seed_sets)))
        for seed_set in seed_sets:
            name = seed_set.campaign
            try:
                own = seed_set.tiers()
                tiers = default_tiers if own is None else parse_tiers(own, len(base), f"{seed_set.manifest}: tiers")
                digests[name] = refresh.request_digest(
                    {**common, "seed_set": seed_set.content(), "tiers": [[t.label, t.size] for t in tiers]})
                if self.audiences and refresh.is_stored(self.audiences, name, digests[name]):
                    status[name] = {"status": "reused", "request": digests[name]}
                    continue
                exclusions = {f"campaign:{k}": v for k, v in seed_set.exclusions().items()}
                requests[name] = CampaignRequest(
                    seed_set.campaign_fields(), seed_set.seed_uids(), seed_set.negative_uids(), tiers[-1].size,
                    f"tier {tiers[-1].label} ({tiers[-1].size:,} users)" if own or self.tiers else
                    TOP_N_NAME, exclusions | suppressed, self.holdout)
                asked[name] = tiers
            except (ValueError, OSError) as error:  # this campaign's input: the others go on
                status[name] = failed(error)
        runs, prepared_status = prepare_campaigns(model, base, uid_index, campaigns, requests, self.top_n, config,
                                                  score_config, vocab, spec.adapt_campaigns, minimum)
        for name, entry in prepared_status.items():
            entry |= {"tiers": [[t.label, t.size] for t in asked[name]], "request": digests[name]}
            last = refresh.last_request(self.audiences, name) if self.audiences else None
            if entry.pop("below_minimum", False) and last:  # it fell below: its last audience is kept, stale
                entry |= {"status": "ineligible", "stale": True, "last_request": last}
        status = dict(sorted((status | prepared_status).items()))
        stores = mixes_stores(runs, self.mixes, [self.dataset, self.output, self.seeds]) if self.mixes else {}
        prepared = time.perf_counter()
        tops = score_shard(base, runs, groups, mixes=stores)
        uids = uid_index.to_numpy()
        with storage.publish_dir(self.output) as folder:
            (folder / HOLDOUT).mkdir()
            estimates = {holdout_key(name): name for name in requests}
            for name, (scores, index) in tops.items():  # an estimate's run: holdout/<campaign>.parquet
                target = folder / HOLDOUT / estimates[name] if name in estimates else folder / name
                pd.DataFrame({"uid": uids[index.numpy()], "score": scores.numpy()}).to_parquet(
                    f"{target}.parquet", index=False)
                held_out = runs[name].held_out
                if held_out is not None:
                    pd.DataFrame({"uid": uids[held_out]}).to_parquet(f"{target}-seeds.parquet", index=False)
            timings: dict[str, float | dict[str, int]] = {"adapt_seconds": round(prepared - started, 2),
                                                           "score_seconds": round(time.perf_counter() - prepared, 2)}
            if stores:  # row groups whose mixes were read, inferred and stored, found stale
                timings["mixes_groups"] = {k: sum(getattr(s, k) for s in stores.values())
                                           for k in ("read", "written", "stale")}
            (folder / STATUS_FILE).write_text(json.dumps(
                {"model": resolved.uri, "model_version": resolved.version, "shard": self.shard,
                 "campaigns": status, **timings}, indent=2, default=str))
        # campaigns scored, not their estimates' runs
        return {"campaigns": len(status), "scored": sum(run.held_out is None for run in runs.values()), **timings}


@dataclass
class MergeAudiences(Step):
    """Merge the shards' tops into each campaign's audience (uid, score, rank) and summarize the run:
    summary.json, kfp_metrics.json (KFP Metrics) and summary.html."""

    name: ClassVar[str] = "merge_audiences"
    artifacts: ClassVar = {"parts": Artifact("Dataset", many=True), "output": Artifact("Dataset", output=True)}
    published: ClassVar = {"metrics": Published("Metrics", "kfp_metrics.json"),
                           "report": Published("HTML", "summary.html")}
    cached: ClassVar = False
    parts: str = arg(help="comma-separated folders written by `expand_shard`")
    output: str = arg(help="folder to write audiences/<campaign>.parquet and the summary into")
    audiences: str = arg("", help="stable audiences folder (for refresh): each new audience is also written "
                                  "there; a reused or stale one is read from it")

    def run(self) -> dict:
        parts = [p for p in self.parts.split(",") if p]
        with claim(self.output, self.name, parts), storage.publish_dir(self.output) as folder:
            return self.merge(parts, folder)

    def merge(self, parts: list[str], folder: Path) -> dict:
        """Merge into the staging `folder` (published whole at the end: a kill keeps the last summary)."""
        statuses = [json.loads(storage.read_text(storage.join(p, STATUS_FILE))) for p in parts]
        versions = sorted({s["model_version"] for s in statuses})
        rows, audiences = [], {}
        for name in sorted({c for s in statuses for c in s["campaigns"]}):
            entries = [(p, s["campaigns"][name]) for p, s in zip(parts, statuses, strict=True)
                       if name in s["campaigns"]]
            failures = [e for _, e in entries if e["status"] == "failed"]
            first = entries[0][1]
            row = {"campaign": name, "status": first["status"], "seeds_used": first.get("seeds_used", 0),
                   "unknown_seed_uids": first.get("unknown_seed_uids", 0),
                   "excluded_users": sum(first.get("excluded", {}).values()), "audience": 0, "error": ""}
            if failures:
                row |= {"status": "failed", "error": failures[0]["error"]}
            elif len(versions) > 1:
                row |= {"status": "failed", "error": f"the shards used different model versions {versions}: rerun"}
            elif len({(e["status"], e.get("request")) for _, e in entries}) > 1:  # an audience stored meanwhile
                row |= {"status": "failed", "error": "the shards saw different requests or stored audiences: rerun"}
            elif first["status"] in ("reused", "ineligible") and not self.audiences:
                row |= {"status": "failed", "error": f"{first['status']} by expand_shard: pass --audiences as well"}
            elif first["status"] == "ok":
                tiers = [Tier(label, size) for label, size in first["tiers"]]
                audience = merge_audiences(_read_parts(entries, f"{name}.parquet"), tiers[-1].size, tiers)
                row |= {"audience": len(audience), "low_confidence": first["low_confidence"],
                        "excluded": first["excluded"], "held_out_seeds": first["held_out_seeds"],
                        **_estimate(entries, name, tiers, first), "request": first["request"]}
                if self.audiences:
                    refresh.store(self.audiences, name, first["request"], audience, row)
            else:  # reused, or ineligible and kept stale: the stored audience and its row
                request = first["request"] if first["status"] == "reused" else first["last_request"]
                audience, stored = refresh.load(self.audiences, name, request)
                tiers = [Tier(t["tier"], t["size"]) for t in stored["tiers"]]
                row = stored | {"status": first["status"], "request": request}
                if first["status"] == "ineligible":
                    row |= {k: first[k] for k in ("seeds_used", "unknown_seed_uids", "error", "stale")}
                else:
                    refresh.mark_last(self.audiences, name, request)
            if row["audience"]:
                (folder / "audiences").mkdir(exist_ok=True)
                write_audience(audience, str(folder / "audiences" / f"{name}.parquet"))
                audiences[name] = (audience["uid"].to_numpy(), tiers)
            rows.append(row)
        summary = {
            "model_version": versions[0] if len(versions) == 1 else versions,
            "campaigns": rows,
            "overlap": _overlap(audiences),
            "shard_seconds": [{k: s[k] for k in ("shard", "adapt_seconds", "score_seconds")} for s in statuses],
        }
        count = {k: sum(r["status"] == k for r in rows) for k in CAMPAIGN_STATUSES}
        metrics = {"campaigns": len(rows), **{f"campaigns_{k}": v for k, v in count.items()},
                   "campaigns_low_confidence": sum(bool(r.get("low_confidence")) for r in rows),
                   "campaigns_stale": sum(bool(r.get("stale")) for r in rows),
                   "seeds_known": sum(r["seeds_used"] for r in rows),
                   "seeds_unknown": sum(r["unknown_seed_uids"] for r in rows),
                   "excluded_users": sum(r["excluded_users"] for r in rows),
                   "audience_users": sum(r["audience"] for r in rows),
                   "score_seconds_max": max((s["score_seconds"] for s in statuses), default=0)}
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
        (folder / "kfp_metrics.json").write_text(json.dumps(metrics))
        (folder / "summary.html").write_text(render(summary, metrics))
        for row in rows:
            if row["status"] == "failed":
                print(f"campaign {row['campaign']}: failed: {row['error']}")
        return metrics


def _read_parts(entries: list[tuple[str, dict]], name: str) -> list[pd.DataFrame]:
    """The file `name` of every shard that holds the campaign."""
    frames = []
    for part, _ in entries:
        with storage.open_read(storage.join(part, name)) as stream:
            frames.append(pd.read_parquet(stream))
    return frames


def _estimate(entries: list[tuple[str, dict]], name: str, tiers: list[Tier], status: dict) -> dict:
    """The campaign's tiers with the recall of its held-out seeds (`tiers.recall_estimate`), and its reach
    curve: (size, recall) at each held-out seed found within the largest tier."""
    if not status["held_out_seeds"]:
        nan = float("nan")
        return {"tiers": [{"tier": t.label, "size": t.size, "held_out_recovered": 0, "recall": nan,
                           "recall_low": nan, "recall_high": nan, "lift": nan} for t in tiers], "reach": []}
    top = merge_audiences(_read_parts(entries, f"{HOLDOUT}/{name}.parquet"), tiers[-1].size)
    (held,) = _read_parts(entries[:1], f"{HOLDOUT}/{name}-seeds.parquet")
    ranks = np.sort(top.loc[top["uid"].isin(held["uid"]), "rank"].to_numpy())
    reach = [(int(r), (k + 1) / len(held)) for k, r in enumerate(ranks)]
    return {"tiers": recall_estimate(ranks, len(held), tiers, status["candidates"]), "reach": reach}


def _overlap(audiences: dict[str, tuple[np.ndarray, list[Tier]]]) -> dict[str, dict[str, float]]:
    """{tier label: {"a | b": Jaccard of the two audiences' users at that tier}} for the tiers both have."""
    overlap: dict[str, dict[str, float]] = {}
    names = sorted(audiences)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (uids_a, tiers_a), (uids_b, tiers_b) = audiences[a], audiences[b]
            sizes_b = {t.label: t.size for t in tiers_b}
            for tier in tiers_a:
                if tier.label in sizes_b:
                    overlap.setdefault(tier.label, {})[f"{a} | {b}"] = jaccard(uids_a[: tier.size],
                                                                              uids_b[: sizes_b[tier.label]])
    return overlap
