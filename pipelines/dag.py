"""The KFP DAG: generate-or-import -> preprocess -> train (per method) -> adapt (per shard) -> evaluate.

One definition serves the cluster and `kfp.local`, which shapes it:
- Its shape is fixed at compile time (`DagOptions`): methods and campaign shards are Python loops, not
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
from kfp.dsl.graph_component import GraphComponent

from components.kfp_tasks import Cluster, task
from components.spec import CPU_IMAGE, CUDA_IMAGE, MAX_FAN_IN, GpuScheduling
from metaheac.method_names import RECOMMENDED
from metaheac.steps.registry import STEPS
from pipelines import expansion

PIPELINE_NAME = "metaheac"
INPUT_PARAMETER = "input_uri"
# Arguments the DAG sets itself besides artifacts; every other Step argument is a pipeline parameter.
_BOUND = {"train": {"method"}, "adapt": {"shard", "shards"}, "publish": {"run_id"}}
_STEPS = ("generate", "preprocess", "train", "adapt", "evaluate")


@dataclass(frozen=True)
class DagOptions:
    """What is fixed when the pipeline is compiled."""

    source: Literal["generate", "input"] = "generate"  # synthetic data, or import raw files from input_uri
    methods: tuple[str, ...] = (RECOMMENDED,)  # one train task each
    shards: int = 2  # adapt tasks per method, each adapting one shard of the test campaigns
    image: str = CPU_IMAGE
    cuda_image: str = CUDA_IMAGE
    gpu: GpuScheduling = GpuScheduling()
    name: str = PIPELINE_NAME
    caching: bool = True  # False: no task reuses a cached result, whatever its step allows
    publish: bool = False  # end with `publish`: the first method's model to the registry root parameter
    pipeline: Literal["train", "expand"] = "train"  # the expansion pipeline: pipelines/expansion.py
    campaign_groups: int = 1  # expand: tasks per user shard, each expanding every groups-th campaign

    def __post_init__(self) -> None:
        if not self.methods or self.shards < 1 or self.campaign_groups < 1:
            raise ValueError("a pipeline needs at least one method, one shard and one campaign group")
        tasks = self.shards * (self.campaign_groups if self.pipeline == "expand" else len(self.methods))
        if tasks > MAX_FAN_IN:
            raise ValueError(f"{tasks} tasks to merge is more than the {MAX_FAN_IN} a merge takes: use fewer shards")


def _stages(options: DagOptions) -> tuple[str, ...]:
    stages = _STEPS if options.source == "generate" else _STEPS[1:]
    return (*stages, "publish") if options.publish else stages


def pipeline_parameters(options: DagOptions) -> list[tuple[inspect.Parameter, str]]:
    """The pipeline's parameters and their help, generated from the Steps."""
    if options.pipeline == "expand":
        return expansion.expand_parameters()
    parameters = []
    if options.source == "input":
        parameters.append((inspect.Parameter(INPUT_PARAMETER, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                             annotation=str), "folder (gs://) of the raw files to import"))
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
    # Python wants parameters without defaults first; the order is otherwise irrelevant to KFP.
    return sorted(parameters, key=lambda p: p[0].default is not inspect.Parameter.empty)


def _arguments(step: str, params: dict[str, Any]) -> dict[str, Any]:
    prefix = f"{step}_"
    return {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}


def build_pipeline(options: DagOptions = DagOptions()) -> GraphComponent:
    """The pipeline for these options, ready for `kfp.compiler` or a local run."""
    cluster = Cluster(options.image, options.cuda_image, options.gpu)
    if options.pipeline == "expand":
        expand = expansion.expand_body(options, cluster)
        describe(expand, options.name, expansion.summary(options), expansion.expand_parameters())
        return dsl.pipeline(name=options.name)(expand)
    parameters = pipeline_parameters(options)
    names = [p.name for p, _ in parameters]

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

    source = "generated data" if options.source == "generate" else f"the raw files at {INPUT_PARAMETER}"
    summary = (
        f"MetaHeac audience expansion on {source}: preprocess, train {', '.join(options.methods)}, "
        f"adapt in {options.shards} shards per method, evaluate"
        + (f", publish {options.methods[0]} to the registry." if options.publish else ".")
    )
    describe(body, options.name, summary, parameters)
    return dsl.pipeline(name=options.name)(body)


def describe(
    body: Callable[..., None], name: str, summary: str, parameters: list[tuple[inspect.Parameter, str]]
) -> None:
    """Give the generated body the signature and docstring KFP reads the pipeline's interface from."""
    args = "\n".join(f"    {p.name}: {' '.join(text.split())}" for p, text in parameters)
    body.__doc__ = f"{summary}\n\nArgs:\n{args}\n"
    body.__signature__ = inspect.Signature([p for p, _ in parameters])  # type: ignore[attr-defined]
    body.__name__ = body.__qualname__ = name.replace("-", "_")
