"""The KFP DAG: generate-or-import -> preprocess -> train (per method) -> adapt (per shard) -> evaluate.

One definition serves the cluster and `kfp.local`, which shapes it:
- Its shape is fixed at compile time (`TrainingOptions`): methods and campaign shards are Python loops, not
  `dsl.ParallelFor`, because kfp.local cannot gather a ParallelFor's outputs (`dsl.Collected` fails) and
  silently skips `dsl.If`; so generate-or-import is a compile-time choice too. On a cluster the loop's
  tasks still run in parallel: nothing orders them but their inputs.
- Every task is a lightweight Python component running our image (components/kfp_components.py):
  kfp.local refuses container components.
Pipeline parameters are the Step arguments the DAG does not set itself, named `<step>_<argument>`, with
the Step's type and default (an optional argument is a string, "" when not given: kfp.local cannot default
a pipeline input to None); artifacts go through the pipeline root (gs:// on a cluster).

Caching (KFP keys a task on its component and inputs; an input artifact is keyed by its URI): each step
declares whether it may be cached (`Step.cached`). Every step but evaluate is deterministic in its inputs
and seeds, so rerunning a pipeline after a failed later step redoes nothing; evaluate is cheap and its
report is the run's result. An imported input is keyed by its URI, not its content: when new data lands
under the same URI, submit with --no-cache or give every snapshot its own URI (e.g.
gs://b/raw/[[ScheduledTime]] in a schedule).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from kfp import dsl

from components.kfp_tasks import task
from components.spec import MAX_FAN_IN
from metaheac.method_names import RECOMMENDED, parse_methods
from metaheac.steps.catalog import STEPS
from pipelines.options import Parameters, PipelineOptions, option, ordered

PIPELINE_NAME = "metaheac"
INPUT_PARAMETER = "input_uri"
# Arguments the DAG sets itself besides artifacts; every other Step argument is a pipeline parameter.
_BOUND = {"train": {"method"}, "adapt": {"shard", "shards"}, "publish": {"run_id"}}
_STEPS = ("generate", "preprocess", "train", "adapt", "evaluate")


@dataclass(frozen=True)
class TrainingOptions(PipelineOptions):
    """The training pipeline's shape: its source, its methods, its adapt shards and its optional stages."""

    name: str = PIPELINE_NAME
    source: Literal["generate", "input"] = option(
        "generate", "generate synthetic data, or import the input_uri parameter's folder: the raw files, the "
        "official pickles or an advertiser's tables (preprocess_source, preprocess_spec)")
    methods: tuple[str, ...] = option((RECOMMENDED,), "comma-separated methods (or all), one train task each",
                                      parse=lambda text: tuple(parse_methods(text)))
    shards: int = option(2, "adapt tasks per method, each adapting one shard of the test campaigns")
    publish: bool = option(False, "end with `publish`, the first method's model to the publish_registry root")

    def __post_init__(self) -> None:
        if not self.methods or self.shards < 1:
            raise ValueError("a training pipeline needs at least one method and one shard")
        if self.shards * len(self.methods) > MAX_FAN_IN:
            raise ValueError(f"{self.shards * len(self.methods)} adapt tasks is more than the {MAX_FAN_IN} "
                             "evaluate takes: use fewer shards")

    def parameters(self) -> Parameters:
        return pipeline_parameters(self)

    def summary(self) -> str:
        source = "generated data" if self.source == "generate" else f"the data at {INPUT_PARAMETER}"
        return (f"MetaHeac audience expansion on {source}: preprocess, train {', '.join(self.methods)}, "
                f"adapt in {self.shards} shards per method, evaluate"
                + (f", publish {self.methods[0]} to the registry." if self.publish else "."))

    def body(self) -> Callable[..., None]:
        return training_body(self)


def _stages(options: TrainingOptions) -> tuple[str, ...]:
    stages = _STEPS if options.source == "generate" else _STEPS[1:]
    return (*stages, "publish") if options.publish else stages


def pipeline_parameters(options: TrainingOptions) -> Parameters:
    """The pipeline's parameters and their help, generated from the Steps."""
    parameters = []
    if options.source == "input":
        parameters.append((inspect.Parameter(INPUT_PARAMETER, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                             annotation=str), "folder (gs://) to import: the raw Tencent files, the "
                           "official pickles, or the tables a preprocess_spec names (preprocess_source)"))
    for step in _stages(options):
        for argument in STEPS[step].parameters():
            if argument.name in _BOUND.get(step, ()):
                continue
            default = inspect.Parameter.empty if argument.required else argument.default
            kind, text = argument.kind, f"{step} {argument.flag}: {argument.help}"
            if argument.optional:
                default, kind, text = "", str, f"{text} (empty: not given)"
            parameter = inspect.Parameter(f"{step}_{argument.name}", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                          default=default, annotation=kind)
            parameters.append((parameter, text))
    return ordered(parameters)


def _arguments(step: str, params: dict[str, Any]) -> dict[str, Any]:
    prefix = f"{step}_"
    return {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}


def training_body(options: TrainingOptions) -> Callable[..., None]:
    """The pipeline function (its signature is set by `options.build_pipeline`)."""
    cluster = options.cluster
    names = [p.name for p, _ in pipeline_parameters(options)]

    def step(name: str, params: dict[str, Any], label: str | None = None, **bound: Any) -> dsl.PipelineTask:
        return task(name, cluster, options.caching, label, **bound, **_arguments(name, params))

    def body(*values: Any) -> None:
        params = dict(zip(names, values, strict=True))
        if options.source == "generate":
            raw = step("generate", params).outputs["output"]
        else:
            raw = dsl.importer(artifact_uri=params[INPUT_PARAMETER], artifact_class=dsl.Dataset).output
        dataset = step("preprocess", params, input=raw).outputs["output"]
        scores, trained = [], []
        for method in options.methods:
            model = step("train", params, f"train-{method}", dataset=dataset, method=method)
            model.set_display_name(f"train {method}")
            trained.append(model)
            for shard in range(options.shards):
                adapt = step("adapt", params, f"adapt-{method}-{shard + 1}of{options.shards}", dataset=dataset,
                             model=model.outputs["output"], shard=shard, shards=options.shards)
                adapt.set_display_name(f"adapt {method} {shard + 1}/{options.shards}")
                scores.append(adapt.outputs["output"])
        evaluation = step("evaluate", params, dataset=dataset, scores=scores)
        if options.publish:
            step("publish", params, model=trained[0].outputs["output"], dataset=dataset,
                 metrics=evaluation.outputs["output"], run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)

    return body
