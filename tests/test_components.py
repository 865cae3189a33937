"""The components are generated from the Step classes into checked-in files: both shells show each step's
interface and shell facts as declared."""

from __future__ import annotations

import ast
import configparser
import inspect
import json
import os
import re
import subprocess
import traceback
from pathlib import Path

import filelock
import pytest

from components import generate, kfp_components, torchx_components
from components.kfp_tasks import component
from components.spec import CLI_MODULE, CONSOLE_SCRIPT, CPU_IMAGE, CUDA_IMAGE, MAX_FAN_IN, command
from metaheac import __version__
from metaheac.steps.catalog import STEPS
from tests.pipeline_helpers import BUILD_LOCK, ROOT

KFP_TYPES = {str: "String", int: "Integer", float: "Float", bool: "Boolean"}


def test_generated_components_are_current() -> None:
    assert generate.main(["--check"]) == 0, "run `python -m components.generate`"


def test_every_step_declares_facts_about_its_own_arguments() -> None:
    for step in STEPS.values():
        names = {a.name for a in step.arguments()}
        assert set(step.artifacts) <= names, step.name
        assert not set(step.published) & names, step.name


def test_one_component_per_step_running_the_console_script() -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read(ROOT / "setup.cfg")
    scripts = dict(
        line.split(" = ") for line in entry_points["options.entry_points"]["console_scripts"].strip().splitlines()
    )
    assert scripts[CONSOLE_SCRIPT] == f"{CLI_MODULE}:main"
    step = STEPS["preprocess"](input="raw", output="dataset")
    assert command("preprocess", {"input": "raw", "output": "dataset"}) == [CONSOLE_SCRIPT, *step.to_argv()]
    for module in (kfp_components, torchx_components):
        defined = {n.name for n in ast.parse(Path(module.__file__).read_text()).body if isinstance(n, ast.FunctionDef)}
        assert defined == set(STEPS), module.__name__


@pytest.mark.parametrize("name", sorted(STEPS))
def test_kfp_component_has_the_step_interface(name: str) -> None:
    step = STEPS[name]
    spec = component(name, CPU_IMAGE).component_spec
    inputs, outputs = spec.inputs or {}, spec.outputs or {}
    assert spec.description == " ".join(step.__doc__.split())
    for argument in step.parameters():
        given = inputs[argument.name]
        assert given.type == ("String" if argument.optional else KFP_TYPES[argument.kind])
        assert given.optional == (not argument.required)
        if not argument.required:
            assert given.default == argument.default
        assert " ".join(argument.help.split()) in given.description
    artifact_inputs = set()
    for argument_name, artifact in step.artifacts.items():
        name = f"{argument_name}_0" if artifact.many else argument_name  # numbered inputs, see below
        side = outputs if artifact.output else inputs
        assert side[name].type == f"system.{artifact.kind}@0.0.1"
        artifact_inputs |= set() if artifact.output else {name}
    for published_name, extra in step.published.items():
        assert outputs[published_name].type.startswith(f"system.{extra.kind}")
    expected = {a.name for a in step.parameters()} | artifact_inputs
    assert set(inputs) == expected
    assert set(outputs) == {n for n, a in step.artifacts.items() if a.output} | set(step.published)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_kfp_component_runs_the_step_in_our_image(name: str) -> None:
    container = component(name, "reg/metaheac:1").component_spec.implementation.container
    assert container.image == "reg/metaheac:1"
    source = container.command[-1]  # KFP's launcher script gets the module source as its last argument
    ast.parse(source)
    assert "def run_metaheac_step(" in source
    assert f"run_metaheac_step({name!r}, locals())" in source
    assert "pip install" not in " ".join(container.command)  # the image already holds kfp and metaheac


def test_many_artifacts_become_the_numbered_inputs_a_pipeline_wires() -> None:
    inputs = component("evaluate", CPU_IMAGE, fan_in=3).component_spec.inputs
    assert {"scores_0", "scores_1", "scores_2"} <= set(inputs) and not {"scores", "scores_3"} & set(inputs)
    assert {f"scores_{i}" for i in range(MAX_FAN_IN)} <= set(inspect.signature(kfp_components.evaluate).parameters)
    with pytest.raises(ValueError, match=f"at most {MAX_FAN_IN}"):
        component("evaluate", CPU_IMAGE, fan_in=MAX_FAN_IN + 1)


def test_a_component_traceback_points_at_its_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(step: str, values: dict) -> None:
        raise RuntimeError(step)

    monkeypatch.setattr(kfp_components, "run_metaheac_step", fail)  # the container's runtime, not here
    with pytest.raises(RuntimeError) as raised:
        kfp_components.generate(output=None)
    frames = traceback.extract_tb(raised.value.__traceback__)
    assert any(f.filename.endswith("components/kfp_components.py") and f.name == "generate" for f in frames)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_torchx_component_has_the_step_interface(name: str) -> None:
    step, component_function = STEPS[name], getattr(torchx_components, name)
    parameters = inspect.signature(component_function).parameters
    launch = ["image", "mounts", "j"] if step.distributed else ["image", "mounts"]
    assert list(parameters) == [a.name for a in step.arguments()] + launch
    for argument in step.arguments():
        parameter = parameters[argument.name]
        assert parameter.annotation == (argument.kind | None if argument.optional else argument.kind)
        assert parameter.default == (inspect.Parameter.empty if argument.required else argument.default)
        assert " ".join(argument.help.split()) in " ".join(component_function.__doc__.split())
    assert " ".join(component_function.__doc__.split()).startswith(" ".join(step.__doc__.split()))


def test_torchx_component_runs_the_step_cli() -> None:
    app = torchx_components.preprocess(input="gs://b/raw", output="gs://b/dataset", source="official", seed=7)
    (role,) = app.roles
    assert role.entrypoint == CONSOLE_SCRIPT
    step = STEPS["preprocess"](input="gs://b/raw", output="gs://b/dataset", source="official", seed=7)
    assert role.args == step.to_argv()
    assert role.image == CPU_IMAGE
    assert role.resource.memMB == STEPS["preprocess"].resources.memory_gb * 1024
    assert role.resource.cpu == STEPS["preprocess"].resources.cpu


def test_optional_arguments_are_left_out_unless_given() -> None:
    (role,) = torchx_components.expand(dataset="d", model="m", seeds="s.txt", output="a.parquet", aid=7).roles
    assert role.args[role.args.index("--aid") + 1] == "7" and "--ad-fields" not in role.args
    assert "--negatives" not in role.args


def test_torchx_train_gets_a_gpu_only_for_meta_training() -> None:
    (meta,) = torchx_components.train(dataset="d", output="o", method="MetaHeac").roles
    (joint,) = torchx_components.train(dataset="d", output="o", method="MMoE+pre-training").roles
    assert (meta.resource.gpu, meta.image) == (1, CUDA_IMAGE)
    assert (joint.resource.gpu, joint.image) == (0, CPU_IMAGE)
    (on_cpu,) = torchx_components.train(dataset="d", output="o", method="MetaHeac", device="cpu").roles
    assert (on_cpu.resource.gpu, on_cpu.image) == (0, CPU_IMAGE)  # asked for the CPU: no GPU to wait for


def test_torchx_component_checks_choices() -> None:
    with pytest.raises(ValueError, match="--source: 'pickle' is not one of raw, official"):
        torchx_components.preprocess(input="a", output="b", source="pickle")


def test_distributed_step_runs_under_torchrun() -> None:
    app = torchx_components.train(dataset="x", output="y", j="1x2")
    (role,) = app.roles
    command_line = role.args[-1]
    assert command_line.startswith("python -m components.torchrun ")  # torchrun, its error line last
    assert "--nproc_per_node 2" in command_line and role.env["OMP_NUM_THREADS"] == "1"
    assert f"-m {CLI_MODULE} train " in command_line
    assert role.resource.gpu == STEPS["train"].resources_for({"method": "MetaHeac"}).gpu


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.read_text().splitlines()
                                         if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_image_runs_the_components_command_as_non_root() -> None:
    instructions = _instructions(ROOT / "docker" / "Dockerfile")
    (base,) = [args for op, args in instructions if op == "FROM"]
    assert base == "${BASE}" and ("ARG", "BASE") in instructions, "no default: docker/build.sh names it exactly"
    # no ENTRYPOINT: the local runners give the whole command as the container's arguments
    assert not [args for op, args in instructions if op == "ENTRYPOINT"]
    (cmd,) = [json.loads(args) for op, args in instructions if op == "CMD"]
    assert cmd[:1] == [CONSOLE_SCRIPT] == command("preprocess", {"input": "a", "output": "b"})[:1]
    (user,) = [args for op, args in instructions if op == "USER"]
    assert int(user) > 0
    installs = [args for op, args in instructions if op == "RUN" and "pip install" in args]
    assert "-c constraints.txt" in installs[0] and "--no-deps" in installs[1]  # the dependencies, then the code
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


# A docker that records its calls and knows only the images it was asked to build.
FAKE_DOCKER = """#!/bin/sh
echo "$@" >> CALLS
eval last=\\${$#}
[ "$1 $2" != "image inspect" ] || grep -q -e "-t $last " -e "^tag .* $last\\$" CALLS
"""


def test_build_script_tags_the_images_the_components_name(tmp_path: Path) -> None:
    fake = tmp_path / "docker"
    fake.write_text(FAKE_DOCKER.replace("CALLS", str(tmp_path / "calls")))
    fake.chmod(0o755)
    base = "python:3.11.11-slim-bookworm@sha256:" + "ab" * 32  # given, as to rebuild a release
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "BASE": base, "ENGINE": "docker"}
    with filelock.FileLock(BUILD_LOCK):  # build.sh refills docker/wheels
        for variant in ([], ["--cuda"]):
            subprocess.run([str(ROOT / "docker" / "build.sh"), *variant], env=env, check=True, capture_output=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    builds = [call for call in calls if call.startswith("build ")]
    assert len(builds) == 2 and all(f"--build-arg BASE={base} " in call and call.endswith(" .") for call in builds)
    assert "TORCH_VARIANT=+cpu " in builds[0] and "TORCH_VARIANT= " in builds[1]
    tags = [call.split()[-1] for call in calls if call.startswith("tag ")]
    assert tags == [f"metaheac:{__version__}", f"metaheac:{__version__}-cuda"]
    assert (CPU_IMAGE, CUDA_IMAGE) == tuple(tags) or "METAHEAC_IMAGE" in os.environ
