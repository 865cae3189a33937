"""KFP components, one per step, generated from its Step class and `components/spec.py`.

Each is a lightweight Python component (`@dsl.component`) whose base image is our image and whose body
calls `run_metaheac_step` (kfp_runtime.py), which runs the step's own CLI. Not a container component:
`kfp.local` runs only lightweight Python components, even inside a DAG, and the same pipeline definition
must serve the cluster and the local run.

KFP reads a component's interface from its function's signature and ships the function's source into
the container, so the function is generated as source text from the Step (types, defaults, help as the
docstring) and registered in `linecache`, where `inspect.getsource` finds it. Artifact arguments become
`Input[...]`/`Output[...]` of the types in the spec; an argument taking many URIs becomes `fan_in`
numbered inputs, since a compile-time loop's outputs cannot be passed as one list.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable
from typing import Any

from kfp import dsl
from kfp.dsl.python_component import PythonComponent

from components.kfp_runtime import run_metaheac_step
from components.spec import ComponentSpec


def _doc(text: str) -> str:
    """Help text made safe inside a generated triple-quoted docstring."""
    return " ".join(text.split()).replace("\\", "\\\\").replace('"""', "'''")


def _artifact_names(spec: ComponentSpec, name: str, fan_in: int) -> list[str]:
    return [f"{name}_{i}" for i in range(fan_in)] if spec.artifacts[name].many else [name]


def component_source(spec: ComponentSpec, fan_in: int = 1) -> str:
    """The Python source of the step's component function (see the module docstring)."""
    helps = {a.name: a.help for a in spec.step.arguments()}
    required: list[str] = []
    optional: list[str] = []
    docs: list[str] = []
    values: list[str] = []
    for name, artifact in spec.artifacts.items():
        names = _artifact_names(spec, name, fan_in)
        direction = "Output" if artifact.output else "Input"
        required += [f"{n}: {direction}[{artifact.kind.__name__}]" for n in names]
        docs += [f"{n}: {_doc(helps[name])}" for n in names]
        values.append(f"{name!r}: [{', '.join(names)}]" if artifact.many else f"{name!r}: {name}")
    for argument in spec.parameters():
        declaration = f"{argument.name}: {argument.kind.__name__}"
        if argument.required:
            required.append(declaration)
        else:
            optional.append(f"{declaration} = {argument.default!r}")
        choices = f" (one of: {', '.join(argument.choices)})" if argument.choices else ""
        docs.append(f"{argument.name}: {_doc(argument.help)}{choices}")
        values.append(f"{argument.name!r}: {argument.name}")
    published = []
    for name, extra in spec.published.items():
        required.append(f"{name}: Output[{extra.kind.__name__}]")
        docs.append(f"{name}: {extra.kind.__name__} from {extra.file} of the step's output folder")
        published.append(f"{name!r}: ({name}, {extra.file!r})")
    indent = "\n" + " " * 8
    return (
        f"def {spec.name}({', '.join(required + optional)}):\n"
        f'    """{_doc(spec.step.__doc__ or spec.name)}\n\n    Args:{indent}{indent.join(docs)}\n    """\n'
        f"    run_metaheac_step({spec.name!r}, {{{', '.join(values)}}}, {{{', '.join(published)}}}, "
        f"{spec.distributed!r})\n"
    )


def kfp_component(spec: ComponentSpec, fan_in: int = 1) -> PythonComponent:
    """The step's KFP component, `fan_in` inputs for an argument that takes many artifacts."""
    source = component_source(spec, fan_in)
    filename = f"<metaheac kfp component {spec.name} fan_in={fan_in}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"Input": dsl.Input, "Output": dsl.Output, "run_metaheac_step": run_metaheac_step}
    kinds = [a.kind for a in spec.artifacts.values()] + [p.kind for p in spec.published.values()]
    namespace |= {kind.__name__: kind for kind in kinds}
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # our own source, generated above
    return dsl.component(
        namespace[spec.name],
        base_image=spec.container_image,
        install_kfp_package=False,  # the image has kfp, pinned with the package
        additional_funcs=[run_metaheac_step],
    )


def configure(task: dsl.PipelineTask, spec: ComponentSpec) -> dsl.PipelineTask:
    """Give a task its step's resources; a GPU step also its GKE node pool (node selector + toleration)."""
    task.set_cpu_request(str(spec.cpu))
    task.set_memory_request(f"{spec.memory_gb}G").set_memory_limit(f"{spec.memory_gb}G")
    if spec.gpu:
        gpu = spec.gpu_scheduling
        task.set_accelerator_type(gpu.accelerator).set_accelerator_limit(spec.gpu)
        label, value = gpu.node_selector
        # The KubernetesExecutorConfig JSON that kfp-kubernetes' add_node_selector/add_toleration write.
        task.platform_config["kubernetes"] = {
            "nodeSelector": {"labels": {label: value}},
            "tolerations": [{"key": gpu.toleration, "operator": "Exists", "effect": "NoSchedule"}],
        }
    return task


def kfp_step(spec: ComponentSpec) -> Callable[..., dsl.PipelineTask]:
    """Call inside a pipeline: makes the step's task, with its resources set. An argument that takes many
    artifacts is given as a list; the component gets one numbered input per element."""
    components: dict[int, PythonComponent] = {}

    def task(**arguments: Any) -> dsl.PipelineTask:
        given: dict[str, Any] = {}
        fan_in = 1
        for name, value in arguments.items():
            if name in spec.artifacts and spec.artifacts[name].many:
                fan_in = len(value)
                given |= dict(zip(_artifact_names(spec, name, fan_in), value, strict=True))
            else:
                given[name] = value
        if fan_in not in components:
            components[fan_in] = kfp_component(spec, fan_in)
        return configure(components[fan_in](**given), spec)

    return task
