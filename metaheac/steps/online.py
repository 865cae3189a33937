"""The online stage's steps: publish a general model to the registry; expand every campaign of a seed-set
folder over one shard of the user base; merge the shards' tops into each campaign's audience."""

from __future__ import annotations

import dataclasses
import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd

from metaheac import storage
from metaheac.adaptation import AdaptConfig
from metaheac.audience import (
    CampaignRequest,
    ScoreConfig,
    UserBase,
    failed,
    merge_audiences,
    prepare_campaigns,
    score_shard,
)
from metaheac.data.errors import InputError
from metaheac.data.loading import load_campaigns
from metaheac.evaluation.style import STYLE
from metaheac.expand import ExpandConfig, load_campaign_vocab, write_audience
from metaheac.methods import load_model, method
from metaheac.model.store import check_same_data
from metaheac.outputs import claim
from metaheac.registry import DEFAULT_NAME, ResolvedModel, publish, resolve_model
from metaheac.seedsets import list_seed_sets
from metaheac.steps.base import Artifact, Published, Step, arg

STATUS_FILE = "status.json"  # a shard's: the model version and every campaign's status
SUMMARY_FILES = ("summary.json", "kfp_metrics.json", "summary.html")
_ADAPT = AdaptConfig()
# What a shard task spends on its campaigns' pre-multiplied tables, all together (ScoreConfig.project_mb):
# every field of one campaign at the Tencent sizes takes 0.73 GB; more campaigns project fewer fields each.
PROJECT_MB = 2048.0


def audience_uri(folder: str, campaign: str, version: str) -> str:
    """Where a campaign's audience for one model version lives under a stable audiences folder."""
    return storage.join(folder, campaign, version.replace("/", "_").replace(":", "_"), "audience.parquet")


@dataclass
class Publish(Step):
    """Publish a trained general model to the registry as a new version, then point LATEST at it."""

    name: ClassVar[str] = "publish"
    artifacts: ClassVar = {"model": Artifact("Model"), "dataset": Artifact("Dataset"), "metrics": Artifact("Artifact")}
    cached: ClassVar = False  # a cached task would not publish this run's model
    model: str = arg(help="the model folder to publish (from `train`)")
    registry: str = arg(help="registry root (local or gs://): versions go to REGISTRY/NAME/VERSION")
    model_name: str = arg(DEFAULT_NAME, help="the model's name in the registry")
    dataset: str = arg("", help="the dataset it was trained on (its fingerprint is recorded)")
    metrics: str = arg("", help="an evaluate output folder: its kfp_metrics.json is recorded")
    run_id: str = arg("", help="the pipeline run that trained it")

    def run(self) -> dict:
        metrics = json.loads(storage.read_text(storage.join(self.metrics, "kfp_metrics.json"))) if self.metrics else {}
        load_model(self.model)  # the whole network rebuilt and its weights checked before any pointer moves
        published = publish(self.model, self.registry, self.model_name, self.dataset, metrics, self.run_id)
        return {"uri": published.uri, "version": published.version}


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
    model: str = arg(help="general model: a registry URI, latest, or a model folder (metaheac.registry)")
    seeds: str = arg(help="seed-set folder: <campaign>.json + <campaign>.txt|.parquet each (metaheac.seedsets)")
    output: str = arg(help=f"folder to write {STATUS_FILE} and each campaign's shard top (<campaign>.parquet)")
    top_n: int = arg(10_000, help="audience size per campaign", minimum=1)
    shard: int = arg(0, help="which shard of the users (0-based): a contiguous block of row groups", minimum=0)
    shards: int = arg(1, help="how many shards the users are split into", minimum=1)
    group: int = arg(0, help="which group of the campaigns (0-based): every GROUPS-th by name", minimum=0)
    groups: int = arg(1, help="how many groups the campaigns are split into", minimum=1)
    audiences: str = arg("", help="stable audiences folder: a campaign already written there for this model "
                                  "version is skipped")
    seed: int = arg(_ADAPT.seed, help="seeds the adaptation and the negative sampling")

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
        every_set = sorted(list_seed_sets(self.seeds), key=lambda s: s.campaign)
        if not every_set:  # a wrong folder, not a quiet hour: an empty run would look like a success
            raise InputError(f"{self.seeds}: no seed sets in this folder (a <campaign>.json beside its "
                             "<campaign>.txt or .parquet each; metaheac/seedsets.py)")
        seed_sets = every_set[self.group :: self.groups]
        score_config = ScoreConfig(project_mb=PROJECT_MB / max(1, len(seed_sets)))
        for seed_set in seed_sets:
            name = seed_set.campaign
            if self.audiences and storage.exists(audience_uri(self.audiences, name, resolved.version)):
                status[name] = {"status": "skipped"}
                continue
            try:
                requests[name] = CampaignRequest(seed_set.campaign_fields(), seed_set.seed_uids(),
                                                 seed_set.negative_uids())
            except (ValueError, OSError) as error:  # this campaign's input: the others go on
                status[name] = failed(error)
        runs, prepared_status = prepare_campaigns(model, base, uid_index, campaigns, requests, self.top_n, config,
                                                  score_config, vocab, spec.adapt_campaigns)
        status = dict(sorted((status | prepared_status).items()))
        prepared = time.perf_counter()
        tops = score_shard(base, runs, groups)
        uids = uid_index.to_numpy()
        with storage.publish_dir(self.output) as folder:
            for name, (scores, index) in tops.items():
                pd.DataFrame({"uid": uids[index.numpy()], "score": scores.numpy()}).to_parquet(
                    folder / f"{name}.parquet", index=False)
            timings = {"adapt_seconds": round(prepared - started, 2),
                       "score_seconds": round(time.perf_counter() - prepared, 2)}
            (folder / STATUS_FILE).write_text(json.dumps(
                {"model": resolved.uri, "model_version": resolved.version, "shard": self.shard,
                 "campaigns": status, **timings}, indent=2, default=str))
        return {"campaigns": len(status), "scored": len(runs), **timings}


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
    top_n: int = arg(10_000, help="audience size per campaign", minimum=1)
    audiences: str = arg("", help="stable audiences folder: each audience is also written there, per model version")

    def run(self) -> dict:
        parts = [p for p in self.parts.split(",") if p]
        with claim(self.output, self.name, parts), storage.publish_dir(self.output) as folder:
            return self.merge(parts, folder)

    def merge(self, parts: list[str], folder: Path) -> dict:
        """Merge into the staging `folder` (published whole at the end: a kill keeps the last summary)."""
        statuses = [json.loads(storage.read_text(storage.join(p, STATUS_FILE))) for p in parts]
        versions = sorted({s["model_version"] for s in statuses})
        rows = []
        for name in sorted({c for s in statuses for c in s["campaigns"]}):
            entries = [(p, s["campaigns"][name]) for p, s in zip(parts, statuses, strict=True)
                       if name in s["campaigns"]]
            failures = [e for _, e in entries if e["status"] == "failed"]
            first = entries[0][1]
            row = {"campaign": name, "status": first["status"], "seeds_used": first.get("seeds_used", 0),
                   "unknown_seed_uids": first.get("unknown_seed_uids", 0), "audience": 0, "error": ""}
            if failures:
                row |= {"status": "failed", "error": failures[0]["error"]}
            elif len(versions) > 1:
                row |= {"status": "failed", "error": f"the shards used different model versions {versions}: rerun"}
            elif first["status"] == "ok":
                frames = []
                for part, _ in entries:
                    with storage.open_read(storage.join(part, f"{name}.parquet")) as stream:
                        frames.append(pd.read_parquet(stream))
                audience = merge_audiences(frames, self.top_n)
                (folder / "audiences").mkdir(exist_ok=True)
                write_audience(audience, str(folder / "audiences" / f"{name}.parquet"))
                if self.audiences:
                    write_audience(audience, audience_uri(self.audiences, name, versions[0]))
                row["audience"] = len(audience)
            rows.append(row)
        summary = {
            "model_version": versions[0] if len(versions) == 1 else versions,
            "campaigns": rows,
            "shard_seconds": [{k: s[k] for k in ("shard", "adapt_seconds", "score_seconds")} for s in statuses],
        }
        count = {k: sum(r["status"] == k for r in rows) for k in ("ok", "failed", "skipped")}
        metrics = {"campaigns": len(rows), **{f"campaigns_{k}": v for k, v in count.items()},
                   "seeds_known": sum(r["seeds_used"] for r in rows),
                   "seeds_unknown": sum(r["unknown_seed_uids"] for r in rows),
                   "audience_users": sum(r["audience"] for r in rows),
                   "score_seconds_max": max((s["score_seconds"] for s in statuses), default=0)}
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
        (folder / "kfp_metrics.json").write_text(json.dumps(metrics))
        (folder / "summary.html").write_text(_html(summary, metrics))
        for row in rows:
            if row["status"] == "failed":
                print(f"campaign {row['campaign']}: failed: {row['error']}")
        return metrics


def _html(summary: dict, metrics: dict) -> str:
    """summary.html: the campaigns (failed ones in red, with their reason), then the run's totals."""
    columns = {"campaign": "Campaign", "status": "Status", "seeds_used": "Seeds used",
               "unknown_seed_uids": "Unknown seed uids", "audience": "Audience", "error": "Reason"}
    head = "".join(f"<th>{title}</th>" for title in columns.values())

    def cell(row: dict, column: str) -> str:
        value = row[column]
        kind = "num" if isinstance(value, int) else {"status": row["status"], "campaign": "name"}.get(column, "")
        text = f"{value:,}" if isinstance(value, int) else str(value)
        return f'<td class="{kind}">{html.escape(text)}</td>'

    body = "".join("<tr>" + "".join(cell(r, c) for c in columns) + "</tr>" for r in summary["campaigns"])
    totals = "".join(f'<tr><td>{html.escape(k.replace("_", " "))}</td><td class="num">{v:,}</td></tr>'
                     for k, v in metrics.items())
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Audience expansion</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>Audience expansion</h1>\n"
            f"<p class=\"note\">Model version {html.escape(str(summary['model_version']))}. Audiences: "
            f"audiences/&lt;campaign&gt;.parquet (uid, score, rank) beside this page.</p>\n<h2>Campaigns</h2>\n"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n<h2>Totals</h2>\n"
            f"<table class=\"context\"><tbody>{totals}</tbody></table>\n</body></html>\n")
