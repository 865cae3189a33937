"""What every component shares: the console script, the images, the GPU node pool, and a step's command.

A step's interface and shell facts (artifacts, published outputs, distributed, cached, resources) are
declared on its `metaheac.steps` class; nothing here repeats them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metaheac import __version__
from metaheac.steps.base import Resources
from metaheac.steps.catalog import STEPS

# The console script of setup.cfg: the containers' entrypoint and the command of every component.
CONSOLE_SCRIPT = "metaheac"
CLI_MODULE = "metaheac.cli"  # what the console script runs; torchrun launches it as `-m metaheac.cli`
# Images built from docker/Dockerfile (targets cpu and cuda); override for a registry, e.g.
# METAHEAC_IMAGE=europe-docker.pkg.dev/PROJECT/metaheac/metaheac:0.1.0
CPU_IMAGE = os.environ.get("METAHEAC_IMAGE", f"metaheac:{__version__}")
CUDA_IMAGE = os.environ.get("METAHEAC_CUDA_IMAGE", f"metaheac:{__version__}-cuda")
# Numbered inputs of an argument that takes many artifacts (evaluate's scores: methods x shards adapt tasks).
MAX_FAN_IN = 64


@dataclass(frozen=True)
class GpuScheduling:
    """How a GPU step lands on a GKE GPU node pool."""

    # The resource requested; on open-source KFP the accelerator type is the extended resource name.
    accelerator: str = "nvidia.com/gpu"
    # GKE labels GPU nodes with their accelerator; empty value = any GPU node.
    node_selector: tuple[str, str] = ("cloud.google.com/gke-accelerator", "nvidia-l4")
    # GKE taints GPU node pools with this key (effect NoSchedule) to keep other pods off them.
    toleration: str = "nvidia.com/gpu"
    # GPUs of a GPU task (None: the step's own); with more, a distributed step runs one process per GPU.
    count: int | None = None

    def gpus(self, resources: Resources) -> int:
        return (self.count or resources.gpu) if resources.gpu else 0


def pinned(image: str) -> str:
    """`image` by digest, the reference a compiled pipeline names: as given when it has one (NAME@sha256:...),
    else the tag's digest as the local docker or podman records it (after a push, or any podman build)."""
    if "@sha256:" in image:
        return image
    repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    for engine in filter(shutil.which, ("docker", "podman")):
        done = subprocess.run([engine, "image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}",
                               image], capture_output=True, text=True, timeout=120)
        digests = done.stdout.split() if done.returncode == 0 else []
        # podman names a local image localhost/NAME, docker a Docker Hub one docker.io/library/NAME
        same = [d for d in digests if d.split("@")[0] == repository or d.split("@")[0].endswith(f"/{repository}")]
        if same or digests:
            return (same or digests)[0]
    raise ValueError(f"image {image}: no digest for this tag here (build it with docker/build.sh and push it, "
                     "or give NAME@sha256:...)")


def image_for(resources: Resources, image: str = CPU_IMAGE, cuda_image: str = CUDA_IMAGE) -> str:
    """The CUDA image for a task that gets a GPU, else the CPU image."""
    return cuda_image if resources.gpu else image


def command(step: str, values: Mapping[str, Any]) -> list[str]:
    """The command line that runs the step with these argument values: the console script, then the step's
    own argv (the same `to_argv` the KFP components hand to the CLI in the container)."""
    return [CONSOLE_SCRIPT, *STEPS[step](**values).to_argv()]
