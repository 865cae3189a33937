"""The KFP DAG: generate-or-import -> preprocess -> train (per method) -> adapt (per shard) -> evaluate.

One definition serves the cluster and `kfp.local`, which shapes it:
- Its shape is fixed at compile time (`DagOptions`): methods and campaign shards are Python loops, not
  `dsl.ParallelFor`, because kfp.local cannot gather a ParallelFor's outputs (`dsl.Collected` fails) and
  silently skips `dsl.If`; so generate-or-import is a compile-time choice too. On a cluster the loop's
  tasks still run in parallel: nothing orders them but their inputs.
- Every task is a lightweight Python component running our image (components/kfp_components.py):
  kfp.local refuses container components.
Pipeline parameters are the Step arguments the DAG does not set itself, named `<step>_<argument>`, with
the Step's type and default; artifacts go through the pipeline root (gs:// on a cluster).

Caching (KFP keys a task on its component and inputs; an input artifact is keyed by its URI):
- generate, preprocess, train: cached. Each is deterministic in its inputs and seeds, and training is
  the expensive part, so rerunning a pipeline after a failed later step redoes nothing.
- adapt: cached, for the same reason: a pure function of dataset, model and seed, and the fan-out.
- evaluate: not cached. It is cheap, and its report is the run's result; a recurring run should show
  its own report, not point at an earlier run's.
- An imported input is keyed by its URI, not its content: when new data lands under the same URI, submit
  with --no-cache or give every snapshot its own URI (e.g. gs://b/raw/[[ScheduledTime]] in a schedule).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from components.kfp_components import kfp_step
from components.spec import CPU_IMAGE, CUDA_IMAGE, SPECS, GpuScheduling

PIPELINE_NAME = "metaheac"
INPUT_PARAMETER = "input_uri"
# Arguments the DAG sets itself besides artifacts; every other Step argument is a pipeline parameter.
_BOUND = {"train": {"method"}, "adapt": {"shard", "shards"}}
_CACHED = {"generate": True, "preprocess": True, "train": True, "adapt": True, "evaluate": False}
_STEPS = ("generate", "preprocess", "train", "adapt", "evaluate")


@dataclass(frozen=True)
class DagOptions:
    """What is fixed when the pipeline is compiled."""

    source: Literal["generate", "input"] = "generate"  # synthetic data, or import raw files from input_uri
    methods: tuple[str, ...] = ("MetaHeac+LR",)  # one train task each: the recommended method
    shards: int = 2  # adapt tasks per method, each adapting one shard of the test campaigns
    image: str = CPU_IMAGE
    cuda_image: str = CUDA_IMAGE
    gpu: GpuScheduling = GpuScheduling()
    name: str = PIPELINE_NAME
    caching: bool = True  # False: no task reuses a cached result, whatever _CACHED says

    def __post_init__(self) -> None:
        if not self.methods or self.shards < 1:
            raise ValueError("a pipeline needs at least one method and one shard")


def _stages(options: DagOptions) -> tuple[str, ...]:
    return _STEPS if options.source == "generate" else _STEPS[1:]


def pipeline_parameters(options: DagOptions) -> list[tuple[inspect.Parameter, str]]:
    """The pipeline's parameters and their help, generated from the Steps."""
    parameters = []
    if options.source == "input":
        parameters.append((inspect.Parameter(INPUT_PARAMETER, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                             annotation=str), "folder (gs://) of the raw files to import"))
    for step in _stages(options):
        for argument in SPECS[step].parameters():
            if argument.name in _BOUND.get(step, ()):
                continue
            default = inspect.Parameter.empty if argument.required else argument.default
            parameter = inspect.Parameter(f"{step}_{argument.name}", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                          default=default, annotation=argument.kind)
            parameters.append((parameter, f"{step} --{argument.name.replace('_', '-')}: {argument.help}"))
    # Python wants parameters without defaults first; the order is otherwise irrelevant to KFP.
    return sorted(parameters, key=lambda p: p[0].default is not inspect.Parameter.empty)


def _arguments(step: str, params: dict[str, Any]) -> dict[str, Any]:
    prefix = f"{step}_"
    return {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}


def build_pipeline(options: DagOptions = DagOptions()) -> GraphComponent:
    """The pipeline for these options, ready for `kfp.compiler` or a local run."""
    specs = {
        name: dataclasses.replace(spec, image=options.image, cuda_image=options.cuda_image, gpu_scheduling=options.gpu)
        for name, spec in SPECS.items()
    }
    steps = {name: kfp_step(specs[name]) for name in _stages(options)}
    parameters = pipeline_parameters(options)
    names = [p.name for p, _ in parameters]

    def task(step: str, params: dict[str, Any], **bound: Any) -> dsl.PipelineTask:
        made = steps[step](**bound, **_arguments(step, params))
        return made.set_caching_options(_CACHED[step] and options.caching)

    def body(*values: Any) -> None:
        params = dict(zip(names, values, strict=True))
        if options.source == "generate":
            raw = task("generate", params).outputs["output"]
        else:
            raw = dsl.importer(artifact_uri=params[INPUT_PARAMETER], artifact_class=dsl.Dataset).output
        dataset = task("preprocess", params, input=raw).outputs["output"]
        scores = []
        for method in options.methods:
            model = task("train", params, dataset=dataset, method=method).set_display_name(f"train {method}")
            for shard in range(options.shards):
                adapt = task("adapt", params, dataset=dataset, model=model.outputs["output"], shard=shard,
                             shards=options.shards)
                adapt.set_display_name(f"adapt {method} {shard + 1}/{options.shards}")
                scores.append(adapt.outputs["output"])
        task("evaluate", params, dataset=dataset, scores=scores)

    _describe(body, options, parameters)
    return dsl.pipeline(name=options.name)(body)


def _describe(body: Callable[..., None], options: DagOptions, parameters: list[tuple[inspect.Parameter, str]]) -> None:
    """Give the generated body the signature and docstring KFP reads the pipeline's interface from."""
    source = "generated data" if options.source == "generate" else f"the raw files at {INPUT_PARAMETER}"
    summary = (
        f"MetaHeac audience expansion on {source}: preprocess, train {', '.join(options.methods)}, "
        f"adapt in {options.shards} shards per method, evaluate."
    )
    args = "\n".join(f"    {p.name}: {' '.join(text.split())}" for p, text in parameters)
    body.__doc__ = f"{summary}\n\nArgs:\n{args}\n"
    body.__signature__ = inspect.Signature([p for p, _ in parameters])  # type: ignore[attr-defined]
    body.__name__ = body.__qualname__ = options.name.replace("-", "_")
