"""TorchX components, one per metaheac step, generated from its Step class and `components/spec.py`.

    torchx run -s local_cwd components/torchx_components.py:preprocess --input raw/ --output dataset/
    torchx run -s local_cwd components/torchx_components.py:train --help
    torchx run -s local_cwd components/torchx_components.py:train -j 1x2 --dataset dataset/ --output model/

Run from the repository root with the venv's `bin` on PATH: `local_cwd` starts the console script (and
`torchrun` for data-parallel steps) from PATH. `-s kubernetes` runs the same AppDef in the image.

TorchX lints this file's source before loading it and accepts only components that appear as a literal
annotated `def NAME(...) -> AppDef`; so each step has a one-line placeholder at the end, which is
replaced at load time by the function generated from its Step (signature, docstring, defaults). The
placeholders carry no arguments: a step's interface is written only in its Step class.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from torchx import specs
from torchx.components import dist

try:
    from components.spec import CLI_MODULE, SPECS, ComponentSpec
except ModuleNotFoundError:  # torchx execs this file's source without its folder on sys.path
    sys.path.insert(0, os.getcwd())
    from components.spec import CLI_MODULE, SPECS, ComponentSpec

_IMAGE_HELP = "container image (local_cwd ignores it and runs the console script from PATH)"
_J_HELP = (
    "{nnodes}x{nproc_per_node}: torchrun processes, each sampling its own tasks, gradients averaged "
    "(on GPU hosts nproc_per_node must not exceed the GPUs)"
)


def _help(argument: Any) -> str:
    choices = f" (one of: {', '.join(argument.choices)})" if argument.choices else ""
    return " ".join(argument.help.split()) + choices


def _launch_parameters(spec: ComponentSpec) -> list[tuple[inspect.Parameter, str]]:
    """Parameters of the launch, not of the step: the image, and the process grid of a distributed step."""
    launch = [(inspect.Parameter("image", inspect.Parameter.KEYWORD_ONLY, default=spec.container_image,
                                 annotation=str), _IMAGE_HELP)]
    if spec.distributed:
        launch.append((inspect.Parameter("j", inspect.Parameter.KEYWORD_ONLY, default="1x1", annotation=str),
                       _J_HELP))
    return launch


def make_component(spec: ComponentSpec) -> Callable[..., specs.AppDef]:
    """The TorchX component of a step: a typed function returning an AppDef; its docstring is the CLI help."""
    arguments = spec.step.arguments()
    step_parameters = [
        (
            inspect.Parameter(
                a.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if a.required else a.default,
                annotation=a.kind,
            ),
            _help(a),
        )
        for a in arguments
    ]
    launch = _launch_parameters(spec)
    clash = {p.name for p, _ in launch} & {a.name for a in arguments}
    if clash:
        raise ValueError(f"step {spec.name}: arguments {sorted(clash)} clash with TorchX launch parameters")
    signature = inspect.Signature([p for p, _ in step_parameters + launch], return_annotation=specs.AppDef)

    def component(**given: Any) -> specs.AppDef:
        bound = signature.bind(**given)  # as a plain function would: defaults, missing and unknown names
        bound.apply_defaults()
        values = dict(bound.arguments)
        image, j = values.pop("image"), values.pop("j", None)
        for a in arguments:
            if a.choices and values[a.name] not in a.choices:
                raise ValueError(f"--{a.name}: {values[a.name]!r} is not one of {', '.join(a.choices)}")
        command = spec.command(**values)
        resource = {"cpu": spec.cpu, "gpu": spec.gpu, "memMB": spec.memory_gb * 1024}
        if spec.distributed:
            # torchrun -m metaheac.cli <argv>: the console script's module, one process per rank
            app = dist.ddp(*command[1:], m=CLI_MODULE, image=image, name=spec.name, j=j, **resource)
            app.roles[0].name = spec.name
            return app
        role = specs.Role(
            name=spec.name, image=image, entrypoint=command[0], args=command[1:], resource=specs.Resource(**resource)
        )
        return specs.AppDef(name=spec.name, roles=[role])

    doc = (spec.step.__doc__ or spec.name).strip()
    args_doc = "\n".join(f"    {p.name}: {text}" for p, text in step_parameters + launch)
    component.__name__ = component.__qualname__ = spec.name
    component.__doc__ = f"{doc}\n\nArgs:\n{args_doc}\n"
    component.__signature__ = signature
    component.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()} | {
        "return": specs.AppDef
    }
    return component


# Placeholders for TorchX's source linter (see the module docstring), one per step, replaced just below.
def generate() -> specs.AppDef: ...
def preprocess() -> specs.AppDef: ...
def train() -> specs.AppDef: ...
def adapt() -> specs.AppDef: ...
def evaluate() -> specs.AppDef: ...
def expand() -> specs.AppDef: ...
def demo() -> specs.AppDef: ...
def publish() -> specs.AppDef: ...
def expand_shard() -> specs.AppDef: ...
def merge_audiences() -> specs.AppDef: ...


for _name, _spec in SPECS.items():
    globals()[_name] = make_component(_spec)
