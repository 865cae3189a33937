"""The engine's steps: train a method's general model, adapt it per test campaign, evaluate, expand."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from metaheac import storage
from metaheac.adaptation import AdaptConfig
from metaheac.data.dataset import load_campaign_frame
from metaheac.data.errors import InputError
from metaheac.data.loading import load_features, load_rows
from metaheac.evaluation.intervals import table_intervals
from metaheac.evaluation.metrics import FOCUS_METHOD, compare, format_table
from metaheac.evaluation.report import kfp_classification, kfp_metrics, write_report
from metaheac.expand import ExpandConfig, expand, load_campaign_vocab, write_audience
from metaheac.methods import METHODS, load_model, method
from metaheac.model.config import ModelConfig
from metaheac.model.store import save_model
from metaheac.steps.base import Step, arg
from metaheac.training.config import MetaTrainConfig, resolve_device
from metaheac.training.distributed import process_group, world
from metaheac.training.joint import JointTrainConfig

log = logging.getLogger(__name__)

_META = MetaTrainConfig()
_MODEL = ModelConfig()
_ADAPT = AdaptConfig()
TEST_SPLITS = ("test_cold", "test_hot")
SCORES_FILE = "scores.parquet"


@dataclass
class Train(Step):
    """Train one method's general model on the training campaigns (MetaHeac: meta-training, GPU)."""

    name: ClassVar[str] = "train"
    gpu: ClassVar[int] = 1
    memory_gb: ClassVar[int] = 32
    dataset: str = arg(help="canonical dataset URI (from `preprocess`)")
    output: str = arg(help="folder to write the general model into (model.pt + config.json)")
    method: str = arg("MetaHeac+LR", help=f"one of: {', '.join(METHODS)}")
    epochs: int = arg(_META.epochs, help="passes over the training campaigns' seed rows")
    max_steps: int = arg(0, help="stop after this many steps (0: no cap)")
    task_count: int = arg(_META.task_count, help="campaigns per meta-step")
    batch_size: int = arg(_META.batch_size, help="rows per support / query / joint batch")
    embedding_dim: int = arg(_MODEL.embedding_dim, help="embedding size of every field")
    seed: int = arg(_META.seed, help="seeds the initialisation and the task sampling")
    device: str = arg("auto", help="auto (CUDA when present), cpu or cuda")
    checkpoint: str = arg("", help="folder for checkpoints (default: OUTPUT/checkpoint); resumes from it")

    def run(self) -> dict:
        started = time.perf_counter()
        spec = method(self.method)  # an unknown name fails before any loading
        features = load_features(self.dataset)
        rows = load_rows(self.dataset, "train", 1)
        with process_group(resolve_device(self.device)) as device:
            rank, world_size = world()
            if world_size > 1 and spec.training != "meta":
                raise InputError(f"{self.method} trains in one process: only meta-training is data-parallel")
            max_steps = self.max_steps or None
            # Under torchrun an epoch stays ceil(rows / batch_size) meta-steps, each of the global batch:
            # world_size * task_count tasks (every rank trains on task_count of them).
            meta = dataclasses.replace(_META, epochs=self.epochs, max_steps=max_steps, task_count=self.task_count,
                                       batch_size=self.batch_size, seed=self.seed, device=str(device))
            joint = dataclasses.replace(JointTrainConfig(), epochs=self.epochs, max_steps=max_steps,
                                        batch_size=self.batch_size, seed=self.seed, device=str(device))
            model_config = dataclasses.replace(_MODEL, embedding_dim=self.embedding_dim)
            model = spec.train(
                features, rows, model_config, meta, joint, seed=self.seed,
                checkpoint_uri=self.checkpoint or storage.join(self.output, "checkpoint"),
            )
            info = {
                "method": self.method,
                "step": dataclasses.asdict(self),
                "meta_config": meta.to_dict(),
                "joint_config": joint.to_dict(),
                "dataset": self.dataset,
                "seconds": round(time.perf_counter() - started, 2),
                "device": str(device),
                "world_size": world_size,
            }
            if rank == 0:  # meta-training's ranks end with the same parameters
                save_model(model, self.output, method=self.method, extra=info)
        return info


@dataclass
class Adapt(Step):
    """Adapt a general model to each test campaign of one shard (stage-1 seeds) and score its stage-2 rows."""

    name: ClassVar[str] = "adapt"
    dataset: str = arg(help="canonical dataset URI")
    model: str = arg(help="general model folder (from `train`)")
    output: str = arg(help=f"folder to write {SCORES_FILE} (method, campaign, split, user, label, score)")
    shard: int = arg(0, help="which shard of the test campaigns to adapt (0-based)")
    shards: int = arg(1, help="how many shards the test campaigns are split into")
    epochs: int = arg(_ADAPT.epochs, help="passes over a campaign's seed rows")
    lr: float = arg(_ADAPT.lr, help="Adam learning rate of the adaptation")
    seed: int = arg(_ADAPT.seed, help="seeds the shuffling of the seed rows")
    device: str = arg("auto", help="auto (CUDA when present), cpu or cuda")

    def run(self) -> dict:
        if not 0 <= self.shard < self.shards:
            raise InputError(f"--shard {self.shard} is not in 0..{self.shards - 1} (--shards {self.shards})")
        started = time.perf_counter()
        device = resolve_device(self.device)
        model, info = load_model(self.model, device=device)
        features = load_features(self.dataset).to(device)
        campaigns = load_campaign_frame(self.dataset)
        spec = method(info["method"])
        config = dataclasses.replace(_ADAPT, epochs=self.epochs, lr=self.lr, seed=self.seed)
        frames = []
        for split in TEST_SPLITS:
            chosen = sorted(campaigns.loc[campaigns["split"] == split, "campaign"])[self.shard :: self.shards]
            if not chosen:
                continue
            stage1 = load_rows(self.dataset, split, 1, chosen).to(device)
            stage2 = load_rows(self.dataset, split, 2, chosen).to(device)
            frame = spec.adapt_and_score(model, features, stage1, stage2, config)
            frames.append(frame.assign(split=split, method=info["method"]))
        scored = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["campaign", "user", "label", "score", "split", "method"])
        with storage.open_write(storage.join(self.output, SCORES_FILE)) as stream:
            pq.write_table(pa.Table.from_pandas(scored, preserve_index=False), stream)
        return {"method": info["method"], "rows": len(scored), "campaigns": int(scored["campaign"].nunique()),
                "seconds": round(time.perf_counter() - started, 2)}


def read_scores(uris: list[str]) -> dict[str, pd.DataFrame]:
    """Every scores file below the given folders, by method, in the paper's row order."""
    files = [f for uri in uris for f in storage.list_files(uri) if f.endswith(".parquet")]
    if not files:
        raise FileNotFoundError(f"no scores (*.parquet) under {', '.join(uris)}: run `metaheac adapt` first")
    frames = []
    for uri in files:
        with storage.open_read(uri) as stream:
            frames.append(pq.read_table(stream).to_pandas())
    scored = pd.concat(frames, ignore_index=True)
    order = [m for m in METHODS if m in set(scored["method"])] + sorted(set(scored["method"]) - set(METHODS))
    return {m: scored[scored["method"] == m].drop(columns="method").reset_index(drop=True) for m in order}


@dataclass
class Evaluate(Step):
    """Compute the paper's metrics from adapted scores: metrics.json, table.txt, report.html and the KFP
    metrics payloads (kfp_metrics.json; kfp_classification.json for the recommended method, else the first)."""

    name: ClassVar[str] = "evaluate"
    scores: str = arg(help="comma-separated folders holding the scores written by `adapt`")
    output: str = arg(help="folder to write metrics.json, kfp_metrics.json, table.txt and report.html into")
    dataset: str = arg("", help="the dataset URI, named in the report")
    title: str = arg("MetaHeac audience expansion: evaluation", help="the report's title")

    def run(self) -> dict:
        results = read_scores([u for u in self.scores.split(",") if u])
        summary = compare(results)
        table = format_table(summary, intervals=table_intervals(results, FOCUS_METHOD))
        context = {"dataset": self.dataset or "-", "scores": self.scores,
                   "methods": ", ".join(results), "rows": sum(len(f) for f in results.values())}
        storage.write_text(storage.join(self.output, "metrics.json"), pd.Series(summary).to_json(indent=2))
        storage.write_text(storage.join(self.output, "kfp_metrics.json"), json.dumps(kfp_metrics(summary)))
        focus = results.get(FOCUS_METHOD, next(iter(results.values())))
        storage.write_text(storage.join(self.output, "kfp_classification.json"), json.dumps(kfp_classification(focus)))
        storage.write_text(storage.join(self.output, "table.txt"), table + "\n")
        write_report(storage.join(self.output, "report.html"), results, summary, self.title, context)
        print(table)
        return {name.split(".")[0]: storage.join(self.output, name) for name in ("report.html", "metrics.json")}


def _read_uids(uri: str) -> np.ndarray:
    """uids from a Parquet file (column `uid`) or a text file with one uid a line."""
    if uri.endswith(".parquet"):
        with storage.open_read(uri) as stream:
            table = pq.read_table(stream)
        if "uid" not in table.column_names:
            raise InputError(f"{uri}: no `uid` column (columns: {', '.join(table.column_names)})")
        return table.column("uid").to_numpy().astype(np.int64)
    lines = [line.strip() for line in storage.read_text(uri).splitlines()]
    try:
        return np.array([int(line) for line in lines if line and line != "uid"], dtype=np.int64)
    except ValueError as error:
        raise InputError(f"{uri}: every line must be one integer uid ({error})") from None


def _ad_fields(text: str) -> dict[str, int]:
    fields = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if not value.strip().lstrip("-").isdigit():
            raise InputError(f"--ad-fields: expected name=integer pairs like advertiserId=12, got {part!r}")
        fields[name.strip()] = int(value)
    return fields


@dataclass
class Expand(Step):
    """Expand one campaign's seed set: adapt the general model to the seeds and write the top-N audience."""

    name: ClassVar[str] = "expand"
    dataset: str = arg(help="canonical dataset URI: its users are the candidates")
    model: str = arg(help="general model folder (from `train`)")
    seeds: str = arg(help="seed users (positives): a text file with one uid a line, or Parquet with a `uid` column")
    output: str = arg(help="Parquet file to write the audience into (uid, score), best first")
    aid: int = arg(-1, help="an existing campaign's aid (or give --ad-fields for a new campaign)")
    ad_fields: str = arg("", help="a new campaign's raw ad fields, e.g. advertiserId=12,adCategoryId=3,...")
    negatives: str = arg("", help="known non-converting users (same formats); sampled from the users if empty")
    top_n: int = arg(10_000, help="audience size")
    seed: int = arg(_ADAPT.seed, help="seeds the adaptation and the negative sampling")
    device: str = arg("auto", help="auto (CUDA when present), cpu or cuda")

    def run(self) -> dict:
        if (self.aid >= 0) == bool(self.ad_fields):
            raise InputError("give exactly one of --aid (an existing campaign) and --ad-fields (a new one)")
        device = resolve_device(self.device)
        model, info = load_model(self.model, device=device)
        features = load_features(self.dataset).to(device)
        campaign = {"aid": self.aid} if self.aid >= 0 else _ad_fields(self.ad_fields)
        try:
            audience = expand(
                model, features, campaign, _read_uids(self.seeds),
                _read_uids(self.negatives) if self.negatives else None, self.top_n,
                ExpandConfig(adapt=method(info["method"]).adapt_config(dataclasses.replace(_ADAPT, seed=self.seed))),
                load_campaign_vocab(self.dataset),
            )
        except ValueError as error:  # empty seed set, no known seed, N too large: the user's input
            raise InputError(str(error)) from None
        write_audience(audience, self.output)
        return {"output": self.output, "audience": len(audience), **audience.attrs.get("summary", {})}
