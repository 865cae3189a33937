"""The TorchX AppDef of a step run: what every function of torchx_components.py returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchx import specs
from torchx.components import dist
from torchx.schedulers import docker_scheduler

from components.spec import CLI_MODULE, command, image_for
from metaheac.steps.catalog import STEPS

TORCHRUN_MODULE = "components.torchrun"

# podman's Docker API reports a container that has exited but is not yet cleaned up as "stopped", a state
# TorchX 0.7's local_docker does not know (KeyError in its status poll): read it as still running, so the
# next poll sees "exited" and its exit code.
docker_scheduler.CONTAINER_STATE.setdefault("stopped", specs.AppState.RUNNING)


def app(step: str, given: Mapping[str, Any]) -> specs.AppDef:
    """`given`: a component's arguments (its `locals()`): the step's arguments, then `image`, `mounts` and,
    for a distributed step, `j`."""
    values = dict(given)
    image, mounts, j = values.pop("image"), values.pop("mounts"), values.pop("j", None)
    cls = STEPS[step]
    for argument in cls.arguments():
        value = values[argument.name]
        if argument.choices and value not in argument.choices:
            raise ValueError(f"--{argument.name}: {value!r} is not one of {', '.join(argument.choices)}")
    resources = cls.resources_for(values)
    argv = command(step, values)
    resource = {"cpu": resources.cpu, "gpu": resources.gpu, "memMB": resources.memory_gb * 1024}
    image = image or image_for(resources)
    if cls.distributed:
        # torchrun -m metaheac.cli <argv>: the console script's module, one process per rank
        app = dist.ddp(*argv[1:], m=CLI_MODULE, image=image, name=step, j=j or "1x1", mounts=mounts,
                        **resource)
        role = app.roles[0]
        role.name = step
        # torchrun through components/torchrun.py: the ranks' error is the last line, not its report
        assert role.args[0] == "-c" and role.args[1].startswith("torchrun "), role.args
        role.args[1] = f"python -m {TORCHRUN_MODULE} {role.args[1].removeprefix('torchrun ')}"
        # torchrun's own default (one thread a rank when several share a node), set so that it need not warn
        role.env.setdefault("OMP_NUM_THREADS", "1")
        return app
    role = specs.Role(name=step, image=image, entrypoint=argv[0], args=argv[1:], resource=specs.Resource(**resource),
                      mounts=specs.parse_mounts(mounts) if mounts else [])
    return specs.AppDef(name=step, roles=[role])
