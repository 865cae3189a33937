"""The components are generated from the Step classes: both shells show each step's interface as declared."""

from __future__ import annotations

import ast
import configparser
import inspect
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from components import torchx_components
from components.kfp_components import component_source, kfp_component
from components.spec import CLI_MODULE, CONSOLE_SCRIPT, CPU_IMAGE, CUDA_IMAGE, SPECS
from metaheac import __version__
from metaheac.steps.registry import STEPS
from tests.pipeline_helpers import ROOT

KFP_TYPES = {str: "String", int: "Integer", float: "Float", bool: "Boolean"}


def test_one_spec_per_step_running_the_console_script() -> None:
    assert set(SPECS) == set(STEPS)
    entry_points = configparser.ConfigParser()
    entry_points.read(ROOT / "setup.cfg")
    scripts = dict(
        line.split(" = ") for line in entry_points["options.entry_points"]["console_scripts"].strip().splitlines()
    )
    assert scripts[CONSOLE_SCRIPT] == f"{CLI_MODULE}:main"
    step = STEPS["preprocess"](input="raw", output="dataset")
    assert SPECS["preprocess"].command(input="raw", output="dataset") == [CONSOLE_SCRIPT, *step.to_argv()]


@pytest.mark.parametrize("name", sorted(STEPS))
def test_kfp_component_has_the_step_interface(name: str) -> None:
    spec = SPECS[name]
    component = kfp_component(spec).component_spec
    inputs, outputs = component.inputs or {}, component.outputs or {}
    assert component.description == " ".join(spec.step.__doc__.split())
    for argument in spec.parameters():
        given = inputs[argument.name]
        assert given.type == KFP_TYPES[argument.kind]
        assert given.optional == (not argument.required)
        if not argument.required:
            assert given.default == argument.default
        assert " ".join(argument.help.split()) in given.description
    artifact_inputs = set()
    for argument_name, artifact in spec.artifacts.items():
        name = f"{argument_name}_0" if artifact.many else argument_name  # numbered inputs, see below
        side = outputs if artifact.output else inputs
        assert side[name].type == f"{artifact.kind.schema_title}@{artifact.kind.schema_version}"
        artifact_inputs |= set() if artifact.output else {name}
    for published_name, extra in spec.published.items():
        assert outputs[published_name].type.startswith(extra.kind.schema_title)
    expected = {a.name for a in spec.parameters()} | artifact_inputs
    assert set(inputs) == expected
    assert set(outputs) == {n for n, a in spec.artifacts.items() if a.output} | set(spec.published)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_kfp_component_runs_the_step_in_our_image(name: str) -> None:
    spec = SPECS[name]
    container = kfp_component(spec).component_spec.implementation.container
    assert container.image == spec.container_image
    source = container.command[-1]  # KFP's launcher script gets the module source as its last argument
    ast.parse(source)
    assert "def run_metaheac_step(" in source
    assert f"run_metaheac_step({name!r}," in source
    assert "pip install" not in " ".join(container.command)  # the image already holds kfp and metaheac


def test_many_artifacts_become_numbered_inputs() -> None:
    inputs = kfp_component(SPECS["evaluate"], fan_in=3).component_spec.inputs
    assert {"scores_0", "scores_1", "scores_2"} <= set(inputs) and "scores" not in inputs
    assert "'scores': [scores_0, scores_1, scores_2]" in component_source(SPECS["evaluate"], fan_in=3)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_torchx_component_has_the_step_interface(name: str) -> None:
    spec, component = SPECS[name], getattr(torchx_components, name)
    parameters = inspect.signature(component).parameters
    launch = ["image", "j"] if spec.distributed else ["image"]
    assert list(parameters) == [a.name for a in spec.step.arguments()] + launch
    for argument in spec.step.arguments():
        parameter = parameters[argument.name]
        assert parameter.annotation is argument.kind
        assert parameter.default == (inspect.Parameter.empty if argument.required else argument.default)
        assert " ".join(argument.help.split()) in component.__doc__
    assert component.__doc__.startswith(spec.step.__doc__.strip())


def test_torchx_component_runs_the_step_cli() -> None:
    app = torchx_components.preprocess(input="gs://b/raw", output="gs://b/dataset", source="official", seed=7)
    (role,) = app.roles
    assert role.entrypoint == CONSOLE_SCRIPT
    step = STEPS["preprocess"](input="gs://b/raw", output="gs://b/dataset", source="official", seed=7)
    assert role.args == step.to_argv()
    assert role.image == SPECS["preprocess"].image
    assert role.resource.memMB == STEPS["preprocess"].memory_gb * 1024
    assert role.resource.cpu == STEPS["preprocess"].cpu


def test_torchx_component_checks_choices() -> None:
    with pytest.raises(ValueError, match="--source: 'pickle' is not one of raw, official"):
        torchx_components.preprocess(input="a", output="b", source="pickle")


def test_distributed_step_runs_under_torchrun() -> None:
    spec = SPECS["train"]
    arguments = {a.name: "x" for a in spec.step.arguments() if a.required}
    app = getattr(torchx_components, spec.name)(**arguments, j="1x2")
    (role,) = app.roles
    command = role.args[-1]
    assert command.startswith("torchrun ")
    assert "--nproc_per_node 2" in command
    assert f"-m {CLI_MODULE} {spec.name} " in command
    assert role.resource.gpu == spec.gpu


def test_every_step_has_a_torchx_placeholder() -> None:
    """TorchX lints the file's source: a step without its literal def could not be run with `torchx run`."""
    tree = ast.parse((ROOT / "components" / "torchx_components.py").read_text())
    placeholders = {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and not node.args.args}
    assert placeholders == set(STEPS), "one `def <step>() -> specs.AppDef: ...` line per step in torchx_components.py"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.read_text().splitlines()
                                         if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_image_runs_the_components_command_as_non_root() -> None:
    dockerfile = ROOT / "docker" / "Dockerfile"
    instructions = _instructions(dockerfile)
    (base,) = [args for op, args in instructions if op == "FROM"]
    assert base == "${BASE_IMAGE}@${BASE_DIGEST}", "the base is pinned by digest, through build args"
    build_args = dict(args.split("=", 1) for op, args in instructions if op == "ARG" and "=" in args)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", build_args["BASE_IMAGE"]), "its full tag"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", build_args["BASE_DIGEST"])
    assert f"# Tag: {build_args['BASE_IMAGE']}" in dockerfile.read_text()
    (entrypoint,) = [json.loads(args) for op, args in instructions if op == "ENTRYPOINT"]
    assert entrypoint == [CONSOLE_SCRIPT] == SPECS["preprocess"].command(input="a", output="b")[:1]
    (user,) = [args for op, args in instructions if op == "USER"]
    assert int(user) > 0
    installs = [args for op, args in instructions if op == "RUN" and "pip install" in args]
    assert all("-c constraints.txt" in args for args in installs)
    assert any(args.endswith("-c constraints.txt . && pip check") for args in installs)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


def test_build_script_tags_the_images_the_components_name(tmp_path: Path) -> None:
    fake = tmp_path / "docker"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n')
    fake.chmod(0o755)
    digest = "sha256:" + "ab" * 32  # given, as to rebuild a release; otherwise build.sh asks the registry
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "BASE_DIGEST": digest}
    subprocess.run([str(ROOT / "docker" / "build.sh")], env=env, check=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert all(f"--build-arg BASE_DIGEST={digest} " in call for call in calls)
    tags = [call.split(" -t ")[1].split()[0] for call in calls]
    assert tags == [f"metaheac:{__version__}", f"metaheac:{__version__}-cuda"]
    assert (CPU_IMAGE, CUDA_IMAGE) == tuple(tags) or "METAHEAC_IMAGE" in os.environ
    assert all(call.startswith("build -f docker/Dockerfile ") and call.endswith(" .") for call in calls)
