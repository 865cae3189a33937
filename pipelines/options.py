"""What every pipeline shares: the shell options fixed at compile time, the contract a pipeline's options
fulfil, and the one way a pipeline is built from them.

A pipeline (`pipelines/dag.py`: training; `pipelines/expansion.py`: expansion) is a frozen dataclass
extending `PipelineOptions` with the fields of its own shape, each declared with `option(default, help)`:
the CLI makes a flag of every such field (`--campaign-groups` for `campaign_groups`), so an optional
stage is one field and its wiring in the pipeline's module. Its pipeline parameters are the Step arguments
the pipeline does not set itself, generated from the Steps.
"""

from __future__ import annotations

import dataclasses
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from components.kfp_tasks import Cluster
from components.spec import CPU_IMAGE, CUDA_IMAGE, GpuScheduling

Parameters = list[tuple[inspect.Parameter, str]]  # each pipeline parameter with its help


def option(default: Any, help: str, parse: Callable[[str], Any] | None = None) -> Any:
    """A pipeline's own shape field: its default, its help, and how the CLI parses its flag's text (default:
    by the field's type)."""
    return dataclasses.field(default=default, metadata={"help": help, "parse": parse})


@dataclass(frozen=True)
class PipelineOptions(ABC):
    """The shell options every pipeline has: its name, the images, the GPU node pool and caching."""

    name: str = ""  # each pipeline gives its own default; on a server, versions are uploaded under it
    image: str = CPU_IMAGE
    cuda_image: str = CUDA_IMAGE
    gpu: GpuScheduling = GpuScheduling()
    caching: bool = True  # False: no task reuses a cached result, whatever its step allows

    @classmethod
    def own_fields(cls) -> list[dataclasses.Field]:
        """The fields of this pipeline's shape, beyond the shared ones."""
        shared = {f.name for f in dataclasses.fields(PipelineOptions)}
        return [f for f in dataclasses.fields(cls) if f.name not in shared]

    @property
    def cluster(self) -> Cluster:
        return Cluster(self.image, self.cuda_image, self.gpu)

    @abstractmethod
    def parameters(self) -> Parameters:
        """The pipeline's run-time parameters and their help, generated from the Steps."""

    @abstractmethod
    def summary(self) -> str:
        """One sentence: what a run of this pipeline does."""

    @abstractmethod
    def body(self) -> Callable[..., None]:
        """The pipeline function, taking the parameters positionally in `parameters()`' order."""


def ordered(parameters: Parameters) -> Parameters:
    """Python wants parameters without defaults first; the order is otherwise irrelevant to KFP."""
    return sorted(parameters, key=lambda p: p[0].default is not inspect.Parameter.empty)


def build_pipeline(options: PipelineOptions) -> GraphComponent:
    """The pipeline for these options, ready for `kfp.compiler` or a local run."""
    body, parameters = options.body(), options.parameters()
    # KFP reads the pipeline's interface from the function's signature and docstring.
    args = "\n".join(f"    {p.name}: {' '.join(text.split())}" for p, text in parameters)
    body.__doc__ = f"{options.summary()}\n\nArgs:\n{args}\n"
    body.__signature__ = inspect.Signature([p for p, _ in parameters])  # type: ignore[attr-defined]
    body.__name__ = body.__qualname__ = options.name.replace("-", "_")
    return dsl.pipeline(name=options.name)(body)
