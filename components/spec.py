"""One definition per step: what a cluster needs to run it, next to the interface its Step class declares.

A step's arguments (names, types, defaults, help, choices) are its `metaheac.steps` dataclass and nothing
here repeats them. This module adds only what the shells need on top: the image, the command, the
resources, and which arguments are artifacts that steps hand each other. Both the TorchX components
(`torchx_components.py`) and the KFP components (`kfp_components.py`) are generated from `SPECS`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kfp import dsl

from metaheac import __version__
from metaheac.steps.base import Argument, Step
from metaheac.steps.registry import STEPS

# The console script of setup.cfg: the containers' entrypoint and the command of every component.
CONSOLE_SCRIPT = "metaheac"
CLI_MODULE = "metaheac.cli"  # what the console script runs; torchrun launches it as `-m metaheac.cli`
# Images built from docker/Dockerfile (targets cpu and cuda); override for a registry, e.g.
# METAHEAC_IMAGE=europe-docker.pkg.dev/PROJECT/metaheac/metaheac:0.1.0
CPU_IMAGE = os.environ.get("METAHEAC_IMAGE", f"metaheac:{__version__}")
CUDA_IMAGE = os.environ.get("METAHEAC_CUDA_IMAGE", f"metaheac:{__version__}-cuda")


@dataclass(frozen=True)
class GpuScheduling:
    """How a GPU step lands on a GKE GPU node pool."""

    # The resource requested; on open-source KFP the accelerator type is the extended resource name.
    accelerator: str = "nvidia.com/gpu"
    # GKE labels GPU nodes with their accelerator; empty value = any GPU node.
    node_selector: tuple[str, str] = ("cloud.google.com/gke-accelerator", "nvidia-l4")
    # GKE taints GPU node pools with this key (effect NoSchedule) to keep other pods off them.
    toleration: str = "nvidia.com/gpu"
    # GPUs of a GPU task (None: the Step's own); with more, a distributed step runs one process per GPU.
    count: int | None = None


@dataclass(frozen=True)
class ArtifactArg:
    """A step argument that is the URI of an artifact another step reads or writes."""

    kind: type[dsl.Artifact]
    output: bool = False
    many: bool = False  # a comma-separated list of URIs, one per upstream task


@dataclass(frozen=True)
class Published:
    """An extra KFP output artifact filled after the step from a file of its output folder."""

    kind: type[dsl.Artifact]
    file: str


@dataclass(frozen=True)
class ComponentSpec:
    """A step as a component: its Step class (the interface) and what running it on a cluster takes."""

    step: type[Step]
    artifacts: Mapping[str, ArtifactArg] = field(default_factory=dict)
    published: Mapping[str, Published] = field(default_factory=dict)
    distributed: bool = False  # launched under torchrun: one process per GPU, gradients averaged
    image: str = CPU_IMAGE
    cuda_image: str = CUDA_IMAGE
    gpu_scheduling: GpuScheduling = GpuScheduling()

    def __post_init__(self) -> None:
        names = {a.name for a in self.step.arguments()}
        if set(self.artifacts) - names:
            raise ValueError(f"component {self.name}: {sorted(set(self.artifacts) - names)} are not Step arguments")
        if set(self.published) & names:
            raise ValueError(f"component {self.name}: outputs {sorted(set(self.published) & names)} clash with "
                             "Step arguments")

    @property
    def name(self) -> str:
        return self.step.name

    def command(self, **values: Any) -> list[str]:
        """The command line that runs the step with these argument values: the console script, then the
        Step's own argv (the same `to_argv` the KFP components hand to the CLI in the container)."""
        return [CONSOLE_SCRIPT, *self.step(**values).to_argv()]

    @property
    def cpu(self) -> int:
        return self.step.cpu

    @property
    def memory_gb(self) -> int:
        return self.step.memory_gb

    @property
    def gpu(self) -> int:
        return (self.gpu_scheduling.count or self.step.gpu) if self.step.gpu else 0

    @property
    def container_image(self) -> str:
        return self.cuda_image if self.gpu else self.image

    def parameters(self) -> list[Argument]:
        """The Step's arguments that are plain values, not artifacts."""
        return [a for a in self.step.arguments() if a.name not in self.artifacts]


# Which arguments of each step are artifacts, and their KFP types; every other argument is a parameter.
# A step missing here is a component whose arguments are all parameters (e.g. `demo`, which writes
# everything under its own --output folder).
_ARTIFACTS: dict[str, dict[str, ArtifactArg]] = {
    "generate": {"output": ArtifactArg(dsl.Dataset, output=True)},
    "preprocess": {"input": ArtifactArg(dsl.Dataset), "output": ArtifactArg(dsl.Dataset, output=True)},
    "train": {"dataset": ArtifactArg(dsl.Dataset), "output": ArtifactArg(dsl.Model, output=True)},
    "adapt": {
        "dataset": ArtifactArg(dsl.Dataset),
        "model": ArtifactArg(dsl.Model),
        "output": ArtifactArg(dsl.Dataset, output=True),
    },
    "evaluate": {
        "dataset": ArtifactArg(dsl.Dataset),
        "scores": ArtifactArg(dsl.Dataset, many=True),
        "output": ArtifactArg(dsl.Artifact, output=True),
    },
    # the seed and negative users stay URI parameters: they come from outside any pipeline
    "expand": {
        "dataset": ArtifactArg(dsl.Dataset),
        "model": ArtifactArg(dsl.Model),
        "output": ArtifactArg(dsl.Dataset, output=True),
    },
    "publish": {
        "model": ArtifactArg(dsl.Model),
        "dataset": ArtifactArg(dsl.Dataset),
        "metrics": ArtifactArg(dsl.Artifact),
    },
    # the model is a registry URI (or latest) and the seed sets a folder: both come from outside the run
    "expand_shard": {"dataset": ArtifactArg(dsl.Dataset), "output": ArtifactArg(dsl.Dataset, output=True)},
    "merge_audiences": {
        "parts": ArtifactArg(dsl.Dataset, many=True),
        "output": ArtifactArg(dsl.Dataset, output=True),
    },
}
# Evaluate's metrics and report, also shown as KFP's own metric and HTML artifacts in the run's UI.
_PUBLISHED: dict[str, dict[str, Published]] = {
    "evaluate": {
        "metrics": Published(dsl.Metrics, "kfp_metrics.json"),
        "classification": Published(dsl.ClassificationMetrics, "kfp_classification.json"),
        "report": Published(dsl.HTML, "report.html"),
    },
    "merge_audiences": {
        "metrics": Published(dsl.Metrics, "kfp_metrics.json"),
        "report": Published(dsl.HTML, "summary.html"),
    },
}
_DISTRIBUTED = {"train"}

SPECS: dict[str, ComponentSpec] = {
    name: ComponentSpec(
        step,
        artifacts=_ARTIFACTS.get(name, {}),
        published=_PUBLISHED.get(name, {}),
        distributed=name in _DISTRIBUTED,
    )
    for name, step in STEPS.items()
}
