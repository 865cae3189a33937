"""Pipeline tasks from the components of kfp_components.py: image, resources, caching and the GPU node pool.

Each component is a lightweight Python component (`@dsl.component` semantics) whose base image is ours
and whose body runs the step's CLI. Not a container component: `kfp.local` runs only lightweight Python
components, even inside a DAG, and the same pipeline definition must serve the cluster and the local run.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfp import dsl
from kfp.dsl.python_component import PythonComponent

from components import kfp_components
from components.kfp_runtime import run_metaheac_step
from components.spec import CPU_IMAGE, CUDA_IMAGE, MAX_FAN_IN, GpuScheduling, image_for
from metaheac.steps.catalog import STEPS


@dataclass(frozen=True)
class Cluster:
    """Where tasks run: the images and the GPU node pool."""

    image: str = CPU_IMAGE
    cuda_image: str = CUDA_IMAGE
    gpu: GpuScheduling = GpuScheduling()


def _wired(function: Callable[..., None], unused: frozenset[str]) -> Callable[..., None]:
    """The component function with the numbered inputs a pipeline leaves unwired dropped from the signature
    KFP reads its interface from; the code (and the source shipped to the container) stays the file's."""
    if not unused:
        return function
    copy = types.FunctionType(function.__code__, function.__globals__, function.__name__, function.__defaults__)
    functools.update_wrapper(copy, function, updated=())
    signature = inspect.signature(function)
    copy.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name not in unused])
    return copy


@functools.cache
def component(step: str, image: str, fan_in: int = 1, name: str | None = None) -> PythonComponent:
    """The step's KFP component in `image`, with `fan_in` of the numbered inputs of a many-artifact argument;
    `name` (default: the step's) names its tasks, and so their folders in a local run."""
    if not 1 <= fan_in <= MAX_FAN_IN:
        raise ValueError(f"{step}: {fan_in} upstream tasks, at most {MAX_FAN_IN} (fewer methods or shards)")
    many = [name for name, artifact in STEPS[step].artifacts.items() if artifact.many]
    unused = frozenset(f"{name}_{i}" for name in many for i in range(fan_in, MAX_FAN_IN))
    made = dsl.component(
        _wired(getattr(kfp_components, step), unused),
        base_image=image,
        install_kfp_package=False,  # the image has kfp, pinned with the package
        additional_funcs=[run_metaheac_step],
    )
    if name is None:
        return made
    # The function (what the container runs) keeps the step's name; only the component's name changes.
    return PythonComponent(dataclasses.replace(made.component_spec, name=name), made.python_func)


def task(step: str, cluster: Cluster = Cluster(), caching: bool = True, name: str | None = None,
         **arguments: Any) -> dsl.PipelineTask:
    """Call inside a pipeline: the step's task, its resources set from the step's declaration. An argument
    that takes many artifacts is given as a list; the component gets one numbered input per element. `name`
    names the task (KFP lowercases it: `train-MetaHeac` is task `train-metaheac`)."""
    cls = STEPS[step]
    given: dict[str, Any] = {}
    fan_in = 1
    for argument, value in arguments.items():
        artifact = cls.artifacts.get(argument)
        if artifact and artifact.many:
            fan_in = len(value)
            given |= {f"{argument}_{i}": v for i, v in enumerate(value)}
        else:
            given[argument] = value
    resources = cls.resources_for(arguments)
    made = component(step, image_for(resources, cluster.image, cluster.cuda_image), fan_in, name)(**given)
    made.set_caching_options(cls.cached and caching)
    made.set_cpu_request(str(resources.cpu))
    # torch sizes its thread pool from the node's cores; a request alone sets no cgroup quota to read
    # (`metaheac.runtime.cpus` reads a limit), so the pod says how many threads it is given
    made.set_env_variable("OMP_NUM_THREADS", str(resources.cpu))
    made.set_memory_request(f"{resources.memory_gb}G").set_memory_limit(f"{resources.memory_gb}G")
    gpus = cluster.gpu.gpus(resources)
    if gpus:
        made.set_accelerator_type(cluster.gpu.accelerator).set_accelerator_limit(gpus)
        label, value = cluster.gpu.node_selector
        # The KubernetesExecutorConfig JSON that kfp-kubernetes' add_node_selector/add_toleration write.
        made.platform_config["kubernetes"] = {
            "nodeSelector": {"labels": {label: value}},
            "tolerations": [{"key": cluster.gpu.toleration, "operator": "Exists", "effect": "NoSchedule"}],
        }
    return made
