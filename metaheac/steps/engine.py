"""The engine's steps: train a method's general model, adapt it per test campaign, evaluate, expand."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from metaheac.adaptation import AdaptConfig
from metaheac.data.dataset import SCHEMA_FILE, load_campaign_frame, load_schema
from metaheac.data.errors import InputError, as_input_error
from metaheac.data.loading import load_features, load_rows
from metaheac.evaluation.intervals import table_intervals
from metaheac.evaluation.metrics import FOCUS_METHOD, compare, format_table
from metaheac.evaluation.report import kfp_classification, kfp_metrics, write_report
from metaheac.method_names import RECOMMENDED
from metaheac.methods import METHODS, load_model, method
from metaheac.model.config import ModelConfig
from metaheac.model.store import check_same_data, save_model
from metaheac.online.expand import (
    AudienceRequest,
    CampaignFields,
    ExpandConfig,
    SeedMinimum,
    expand,
    is_audience,
    load_campaign_vocab,
    write_audience,
)
from metaheac.online.model_registry import resolve_model
from metaheac.online.seed_sets import read_uids
from metaheac.runtime import storage
from metaheac.runtime.memory import check_fits, table_bytes
from metaheac.runtime.outputs import claim
from metaheac.runtime.phases import PhaseLog, phase, recording
from metaheac.steps.base import Artifact, Published, Resources, Step, arg
from metaheac.steps.request import (
    allow_small_seeds_arg,
    exclude_arg,
    exclusion_lists,
    min_seeds_arg,
    request_tiers,
    tiers_arg,
)
from metaheac.training.config import MatmulPrecision, MetaTrainConfig, resolve_device
from metaheac.training.distributed import process_group, world
from metaheac.training.joint import JointTrainConfig

log = logging.getLogger(__name__)

_META = MetaTrainConfig()
_MODEL = ModelConfig()
_ADAPT = AdaptConfig()
TEST_SPLITS = ("test_cold", "test_hot")
SCORES_FILE = "scores.parquet"
DATA_KEY = b"metaheac_data"  # scores.parquet's metadata: the model and the data it was adapted on
# The memory of a CPU train task whose dataset cannot be read when it is launched (a KFP task: its dataset
# is an artifact of the same run): room for the real Tencent data, about 11M users and 22M embedding
# parameters (about 4 GB by the estimate below), twice over.
CPU_TRAIN_MEMORY_GB = 8


def cpu_train_memory_gb(dataset: object) -> int:
    """The memory (GB) of a joint or from-scratch train task on this dataset: twice its tensors (int64, as
    loaded) plus the embedding tables with gradient and two Adam moments, plus 1 GB for torch itself;
    CPU_TRAIN_MEMORY_GB when the dataset is not yet readable."""
    if not isinstance(dataset, str) or not storage.exists(storage.join(dataset, SCHEMA_FILE)):
        return CPU_TRAIN_MEMORY_GB
    schema = load_schema(dataset)
    counts = schema.provenance.get("counts", {})
    rows = sum(n for name, n in counts.get("rows", {}).items() if not name.endswith("positives"))
    per_user = len(schema.user_single) + sum(schema.list_lengths) + len(schema.user_lists)  # ids + list lengths
    data = 8 * (counts.get("users", 0) * per_user + 3 * rows)
    fields = schema.user_single + schema.user_lists + schema.campaign_fields
    embeddings = 4 * 4 * _MODEL.embedding_dim * sum(f.vocab_size for f in fields)
    return max(2, math.ceil(2 * (data + embeddings) / 2**30) + 1)


def _print_phase(line: str) -> None:
    print(f"metaheac train: {line}", file=sys.stderr, flush=True)


@dataclass
class Train(Step):
    """Train one method's general model on the training campaigns (MetaHeac: meta-training, GPU)."""

    name: ClassVar[str] = "train"
    artifacts: ClassVar = {"dataset": Artifact("Dataset"), "output": Artifact("Model", output=True)}
    distributed: ClassVar = True
    resources: ClassVar = Resources(memory_gb=32, gpu=1)  # meta-training: the CUDA image on a GPU node

    @classmethod
    def resources_for(cls, arguments: Mapping[str, object]) -> Resources:
        """Only a meta-trained method (not told --device cpu) gets a GPU; the others train on CPU, with memory
        sized from the dataset (see `cpu_train_memory_gb`)."""
        name = arguments.get("method", cls.__dataclass_fields__["method"].default)
        # asked for the CPU: no GPU to request (nor TorchX to warn about); in a pipeline the device is a run-time
        # parameter, whose == builds a KFP condition, not a bool
        device = arguments.get("device")
        on_cpu = isinstance(device, str) and device == "cpu"
        if not on_cpu and (not isinstance(name, str) or method(name).training == "meta"):  # unknown yet: the most
            return cls.resources
        return Resources(cpu=4, memory_gb=cpu_train_memory_gb(arguments.get("dataset")))
    dataset: str = arg(help="canonical dataset URI (from `preprocess`)")
    output: str = arg(help="folder to write the general model into (model.pt + config.json)")
    method: str = arg(RECOMMENDED, help=f"one of: {', '.join(METHODS)}")
    epochs: int = arg(_META.epochs, help="passes over the training campaigns' seed rows", minimum=1)
    max_steps: int | None = arg(None, help="stop after this many steps (default: no cap)", minimum=1)
    task_count: int = arg(_META.task_count, help="campaigns per meta-step", minimum=1)
    batch_size: int = arg(_META.batch_size, help="rows per support / query / joint batch", minimum=1)
    embedding_dim: int = arg(_MODEL.embedding_dim, help="embedding size of every field", minimum=1)
    settings: str | None = arg(None, help="the method's own settings to change, as a JSON object of fields "
                               f"(e.g. {RECOMMENDED}'s RecommendedConfig: '{{\"residual_lr\": false, \"topics\": "
                               "{\"topics\": 16}}'); unknown fields are refused; saved in config.json")
    seed: int = arg(_META.seed, help="seeds the initialisation and the task sampling")
    device: str = arg("auto", help="auto (CUDA when present), cpu or cuda")
    matmul_precision: MatmulPrecision = arg(
        _META.matmul_precision, help="meta-training's float32 products: medium (bfloat16 operands and float32 "
        "sums on CPUs with AMX or AVX512-BF16: ~1.4x faster steps at the same quality, bench/README.md; TF32 on "
        "CUDA), high (TF32 on CUDA) or highest (float32, the paper's arithmetic)")
    checkpoint: str | None = arg(None, help="folder for checkpoints (default: OUTPUT/checkpoint); resumes from it")
    checkpoint_every: int | None = arg(
        None, help=f"meta-steps between checkpoints (default: every {_META.checkpoint_seconds:.0f} s)", minimum=1)
    overwrite: bool = arg(False, help="replace an existing output of another metaheac step")

    def run(self) -> dict:
        # Under torchrun rank 0 alone writes, so it alone claims the output.
        first = int(os.environ.get("RANK", "0")) == 0
        with as_input_error():  # an unknown name fails before the output is touched
            method(self.method)
        self.method_settings()  # and so do bad settings
        with claim(self.output, self.name, [self.dataset], self.overwrite) if first else contextlib.nullcontext():
            return self.train()

    def train(self) -> dict:
        # one line a phase on stderr (stdout is the result's JSON), by rank 0 alone
        printer = _print_phase if int(os.environ.get("RANK", "0")) == 0 else None
        with recording(printer) as phases:
            return self._train(phases)

    def _train(self, phases: PhaseLog) -> dict:
        started = time.perf_counter()
        spec = method(self.method)
        with phase("load data"):
            features = load_features(self.dataset)
            rows = load_rows(self.dataset, "train", 1)
        with process_group(resolve_device(self.device)) as device:
            rank, world_size = world()
            if world_size > 1 and spec.training != "meta":
                raise InputError(f"{self.method} trains in one process: only meta-training is data-parallel")
            # Under torchrun an epoch stays ceil(rows / batch_size) meta-steps, each of the global batch:
            # world_size * task_count tasks (every rank trains on task_count of them).
            with as_input_error():
                meta, joint, model_config = self.configs(device)
            settings = self.method_settings()
            needed = table_bytes(features.schema, model_config.embedding_dim)
            check_fits(f"{self.method} on {self.dataset}", needed, str(device))
            model = spec.train(
                features, rows, model_config, meta, joint, seed=self.seed, settings=settings,
                checkpoint_uri=storage.join(self.output, "checkpoint") if self.checkpoint is None else self.checkpoint,
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
                "phases": phases.to_list(),  # wall time and peak RSS of each phase
            }
            if rank == 0:  # meta-training's ranks end with the same parameters
                save_model(model, self.output, method=self.method, extra=info, settings=spec.settings_of(model))
        return info

    def method_settings(self) -> Any:
        """The method's own settings with --settings' fields changed (None: its defaults)."""
        if self.settings is None:
            return None
        with as_input_error("--settings: "):
            raw = json.loads(self.settings)
            if not isinstance(raw, dict):
                raise ValueError(f"expected a JSON object of fields, got {self.settings!r}")
            return method(self.method).parse_settings(raw)

    def configs(self, device: torch.device) -> tuple[MetaTrainConfig, JointTrainConfig, ModelConfig]:
        meta = dataclasses.replace(_META, epochs=self.epochs, max_steps=self.max_steps, task_count=self.task_count,
                                   batch_size=self.batch_size, seed=self.seed, device=str(device),
                                   checkpoint_every=self.checkpoint_every, matmul_precision=self.matmul_precision)
        joint = dataclasses.replace(JointTrainConfig(), epochs=self.epochs, max_steps=self.max_steps,
                                    batch_size=self.batch_size, seed=self.seed, device=str(device))
        return meta, joint, dataclasses.replace(_MODEL, embedding_dim=self.embedding_dim)


@dataclass
class Adapt(Step):
    """Adapt a general model to each test campaign of one shard (stage-1 seeds) and score its stage-2 rows."""

    name: ClassVar[str] = "adapt"
    artifacts: ClassVar = {"dataset": Artifact("Dataset"), "model": Artifact("Model"),
                           "output": Artifact("Dataset", output=True)}
    dataset: str = arg(help="canonical dataset URI")
    model: str = arg(help="general model: a folder (from `train`), a registry URI or latest (the model registry)")
    output: str = arg(help=f"folder to write {SCORES_FILE} (method, campaign, split, user, label, score)")
    shard: int = arg(0, help="which shard of the test campaigns to adapt (0-based)", minimum=0)
    shards: int = arg(1, help="how many shards the test campaigns are split into", minimum=1)
    epochs: int = arg(_ADAPT.epochs, help="passes over a campaign's seed rows", minimum=1)
    lr: float = arg(_ADAPT.lr, help="Adam learning rate of the adaptation", minimum=0, strict=True)
    seed: int = arg(_ADAPT.seed, help="seeds the shuffling of the seed rows")
    device: str = arg("auto", help="auto (CUDA when present), cpu or cuda")
    overwrite: bool = arg(False, help="replace an existing output of another metaheac step")

    def run(self) -> dict:
        if not 0 <= self.shard < self.shards:
            raise InputError(f"--shard {self.shard} is not in 0..{self.shards - 1} (--shards {self.shards})")
        with claim(self.output, self.name, [self.dataset, self.model], self.overwrite):
            return self.adapt()

    def adapt(self) -> dict:
        started = time.perf_counter()
        device = resolve_device(self.device)
        model_uri = resolve_model(self.model).uri
        model, info = load_model(model_uri, device=device)
        features = load_features(self.dataset).to(device)
        check_same_data(info, features.schema, model_uri, self.dataset)
        campaigns = load_campaign_frame(self.dataset)
        spec = method(info["method"])
        with as_input_error():
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
        table = pa.Table.from_pandas(scored, preserve_index=False)
        # the model's data, which `evaluate` compares with its --dataset
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), DATA_KEY: json.dumps(
            {"model": model_uri, "dataset": self.dataset, "schema": info["schema"]}).encode()})
        with storage.open_write(storage.join(self.output, SCORES_FILE)) as stream:
            pq.write_table(table, stream)
        return {"method": info["method"], "rows": len(scored), "campaigns": int(scored["campaign"].nunique()),
                "seconds": round(time.perf_counter() - started, 2)}


def check_scores_data(uris: list[str], dataset: str) -> None:
    """Refuse scores adapted with a model of other data than `dataset` (scores from before this check pass)."""
    schema = load_schema(dataset)
    for uri in [f for u in uris for f in storage.list_files(u) if f.endswith(".parquet")]:
        with storage.open_read(uri) as stream:
            recorded = (pq.read_schema(stream).metadata or {}).get(DATA_KEY)
        if recorded:
            source = json.loads(recorded)
            check_same_data(source, schema, source["model"], dataset)


def read_scores(uris: list[str]) -> dict[str, pd.DataFrame]:
    """Every scores file below the given folders, by method, in the paper's row order."""
    files = [f for uri in uris for f in storage.list_files(uri) if f.endswith(".parquet")]
    if not files:
        raise InputError(f"no scores (*.parquet) under {', '.join(uris)}: run `metaheac adapt` first")
    frames = []
    for uri in files:
        with storage.open_read(uri) as stream:
            frames.append(pq.read_table(stream).to_pandas())
    scored = pd.concat(frames, ignore_index=True)
    if scored.empty:
        raise InputError(f"no scored rows in {', '.join(files)}: did `metaheac adapt` find test campaigns?")
    order = [m for m in METHODS if m in set(scored["method"])] + sorted(set(scored["method"]) - set(METHODS))
    return {m: scored[scored["method"] == m].drop(columns="method").reset_index(drop=True) for m in order}


def empty_split_notes(results: Mapping[str, pd.DataFrame], cold_threshold: int | None) -> list[str]:
    """One line per test split with no scored campaign, saying why its columns are empty."""
    scored = {split for frame in results.values() for split in frame["split"].unique()}
    threshold = f" ({cold_threshold})" if cold_threshold is not None else ""
    why = {"test_cold": f"every test campaign has more seed positives than the cold threshold{threshold}",
           "test_hot": f"no test campaign has more seed positives than the cold threshold{threshold}"}
    return [f"{split.removeprefix('test_')}: no campaigns, {why[split]}; `metaheac preprocess --cold-threshold` "
            "sets it" for split in TEST_SPLITS if split not in scored]


@dataclass
class Evaluate(Step):
    """Compute the paper's metrics from adapted scores: metrics.json, table.txt, report.html and the KFP
    metrics payloads (kfp_metrics.json; kfp_classification.json for the recommended method, else the first)."""

    name: ClassVar[str] = "evaluate"
    artifacts: ClassVar = {"dataset": Artifact("Dataset"), "scores": Artifact("Dataset", many=True),
                           "output": Artifact("Artifact", output=True)}
    # also shown as KFP's own metric and HTML artifacts in the run's UI
    published: ClassVar = {"metrics": Published("Metrics", "kfp_metrics.json"),
                           "classification": Published("ClassificationMetrics", "kfp_classification.json"),
                           "report": Published("HTML", "report.html")}
    # cheap, and its report is the run's result: a recurring run shows its own report, not an earlier one
    cached: ClassVar = False
    scores: str = arg(help="comma-separated folders holding the scores written by `adapt`")
    output: str = arg(help="folder to write metrics.json, kfp_metrics.json, table.txt and report.html into")
    dataset: str | None = arg(None, help="the dataset URI, named in the report")
    title: str = arg("MetaHeac audience expansion: evaluation", help="the report's title")
    overwrite: bool = arg(False, help="replace an existing output of another metaheac step")

    def run(self) -> dict:
        inputs = [u for u in self.scores.split(",") if u] + ([self.dataset] if self.dataset else [])
        with claim(self.output, self.name, inputs, self.overwrite):
            return self.evaluate()

    def evaluate(self) -> dict:
        if self.dataset:
            check_scores_data([u for u in self.scores.split(",") if u], self.dataset)
        results = read_scores([u for u in self.scores.split(",") if u])
        summary = compare(results)
        threshold = load_schema(self.dataset).provenance.get("cold_threshold") if self.dataset else None
        table = "\n".join([format_table(summary, intervals=table_intervals(results, FOCUS_METHOD)),
                           *empty_split_notes(results, threshold)])
        context = {"dataset": self.dataset or "-", "scores": [u for u in self.scores.split(",") if u],
                   "methods": ", ".join(results), "rows": sum(len(f) for f in results.values())}
        storage.write_text(storage.join(self.output, "metrics.json"), pd.Series(summary).to_json(indent=2))
        storage.write_text(storage.join(self.output, "kfp_metrics.json"), json.dumps(kfp_metrics(summary)))
        focus = results.get(FOCUS_METHOD, next(iter(results.values())))
        storage.write_text(storage.join(self.output, "kfp_classification.json"), json.dumps(kfp_classification(focus)))
        storage.write_text(storage.join(self.output, "table.txt"), table + "\n")
        write_report(storage.join(self.output, "report.html"), results, summary, self.title, context)
        print(table)
        return {name.split(".")[0]: storage.join(self.output, name) for name in ("report.html", "metrics.json")}


def _ad_fields(text: str) -> CampaignFields:
    """name=value pairs, the values raw as in the campaigns table (integers or text)."""
    fields: CampaignFields = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if not (name.strip() and value.strip()):
            raise InputError(f"--ad-fields: expected name=value pairs like category=3,brand=acme, got {part!r}")
        fields[name.strip()] = value.strip()
    return fields


@dataclass
class Expand(Step):
    """Expand one campaign's seed set: adapt the general model to the seeds and write the top-N audience."""

    name: ClassVar[str] = "expand"
    # the seed and negative users stay URI parameters: they come from outside any pipeline
    artifacts: ClassVar = {"dataset": Artifact("Dataset"), "model": Artifact("Model"),
                           "output": Artifact("Dataset", output=True)}
    dataset: str = arg(help="canonical dataset URI: its users are the candidates")
    model: str = arg(help="general model: a folder (from `train`), a registry URI or latest (the model registry)")
    seeds: str = arg(help="seed users (positives): a text file with one uid a line, or Parquet with a `uid` column")
    output: str = arg(help="Parquet file to write the audience into (uid, score, rank), best first")
    aid: int | None = arg(None, help="an existing campaign's aid (or give --ad-fields for a new campaign)")
    ad_fields: str | None = arg(None, help="a new campaign's raw field values as in the campaigns table, e.g. "
                                "category=3,brand=acme")
    negatives: str | None = arg(None, help="known non-converting users (same formats); sampled from the users if "
                                "not given")
    top_n: int = arg(10_000, help="audience size, when no tiers are asked", minimum=1)
    tiers: str = tiers_arg()
    exclude: str = exclude_arg()
    min_seeds: int = min_seeds_arg()
    allow_small_seeds: bool = allow_small_seeds_arg()
    seed: int = arg(_ADAPT.seed, help="seeds the adaptation and the negative sampling")
    device: str = arg("auto", help="auto (CUDA when present), cpu or cuda")
    overwrite: bool = arg(False, help="replace an existing file at --output that is not an audience of `expand`")

    def run(self) -> dict:
        if (self.aid is None) == (self.ad_fields is None):
            raise InputError("give exactly one of --aid (an existing campaign) and --ad-fields (a new one)")
        inputs = [self.dataset, self.model, self.seeds, *filter(None, self.exclude.split(","))] + (
            [self.negatives] if self.negatives else [])
        # an audience file written by `expand` is ours to replace, as a step's own folder is
        with claim(self.output, self.name, inputs, self.overwrite or is_audience(self.output), is_file=True):
            return self.expand()

    def expand(self) -> dict:
        device = resolve_device(self.device)
        model_uri = resolve_model(self.model).uri
        model, info = load_model(model_uri, device=device)
        features = load_features(self.dataset).to(device)
        check_same_data(info, features.schema, model_uri, self.dataset)
        campaign: CampaignFields = {"aid": self.aid} if self.aid is not None else _ad_fields(self.ad_fields or "")
        spec = method(info["method"])
        tiers = request_tiers(self.tiers, len(features.users)) if self.tiers else None
        request = AudienceRequest(tiers, exclusion_lists(self.exclude, "exclude"),
                                  SeedMinimum(self.min_seeds, self.allow_small_seeds))
        try:
            audience = expand(
                model, features, campaign, read_uids(self.seeds),
                read_uids(self.negatives) if self.negatives is not None else None, self.top_n,
                ExpandConfig(adapt=spec.adapt_config(dataclasses.replace(_ADAPT, seed=self.seed))),
                load_campaign_vocab(self.dataset), spec.adapt_campaigns, request,
            )
        except ValueError as error:  # empty seed set, no known seed, N too large: the user's input
            raise InputError(str(error)) from None
        write_audience(audience, self.output)
        return {"output": self.output, "audience": len(audience), **audience.attrs.get("summary", {})}
