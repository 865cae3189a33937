"""The KFP DAG: its compiled IR (edges, artifact types, GPU request, caching) and a whole local run with kfp.local."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.spec import CPU_IMAGE
from metaheac.steps.registry import STEPS
from pipelines.cli import main
from pipelines.dag import DagOptions, pipeline_parameters
from tests.pipeline_helpers import params

METHODS = "MetaHeac,LR"


def compiled(tmp_path: Path, *options: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, platform spec) of `python -m pipelines compile <options>`."""
    path = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(path), *options]) == 0
    spec, *platform = yaml.safe_load_all(path.read_text())
    return spec, platform[0] if platform else {}


def producers(task: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Input artifact -> (producer task, its output) of a compiled task."""
    artifacts = task.get("inputs", {}).get("artifacts", {})
    return {
        name: (a["taskOutputArtifact"]["producerTask"], a["taskOutputArtifact"]["outputArtifactKey"])
        for name, a in artifacts.items()
    }


def test_dag_edges_and_artifact_types(tmp_path: Path) -> None:
    spec, _ = compiled(tmp_path, "--methods", METHODS, "--shards", "2")
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"generate", "preprocess", "train", "train-2", "adapt", "adapt-2", "adapt-3", "adapt-4",
                          "evaluate"}
    assert producers(tasks["preprocess"]) == {"input": ("generate", "output")}
    trains = {tasks[t]["inputs"]["parameters"]["method"]["runtimeValue"]["constant"]: t for t in ("train", "train-2")}
    assert set(trains) == set(METHODS.split(","))
    for train in trains.values():
        assert producers(tasks[train]) == {"dataset": ("preprocess", "output")}
    adapts = [t for t in tasks if t.startswith("adapt")]
    shards = {}
    for adapt in adapts:
        inputs = producers(tasks[adapt])
        assert inputs["dataset"] == ("preprocess", "output")
        assert inputs["model"][0] in trains.values()
        shard = tasks[adapt]["inputs"]["parameters"]["shard"]["runtimeValue"]["constant"]
        shards.setdefault(inputs["model"][0], set()).add(shard)
    assert all(s == {0, 1} for s in shards.values()) and len(shards) == 2  # every method, every shard
    assert set(producers(tasks["evaluate"]).values()) == {(a, "output") for a in adapts} | {("preprocess", "output")}

    def output_types(task: str) -> dict[str, str]:
        component = spec["components"][tasks[task]["componentRef"]["name"]]
        return {n: a["artifactType"]["schemaTitle"] for n, a in component["outputDefinitions"]["artifacts"].items()}

    assert output_types("generate") == {"output": "system.Dataset"}
    assert output_types("preprocess") == {"output": "system.Dataset"}
    assert output_types("train") == {"output": "system.Model"}
    assert output_types("adapt") == {"output": "system.Dataset"}
    assert output_types("evaluate") == {"output": "system.Artifact", "metrics": "system.Metrics",
                                        "classification": "system.ClassificationMetrics", "report": "system.HTML"}


def test_train_requests_a_gpu_on_the_node_pool(tmp_path: Path) -> None:
    spec, platform = compiled(tmp_path, "--methods", METHODS, "--gpu-node-selector",
                              "cloud.google.com/gke-accelerator=nvidia-tesla-a100", "--cuda-image", "reg/mh:cuda",
                              "--gpus", "2")
    executors = spec["deploymentSpec"]["executors"]
    tasks = spec["root"]["dag"]["tasks"]
    executor = {t: spec["components"][tasks[t]["componentRef"]["name"]]["executorLabel"] for t in tasks}
    for train in ("train", "train-2"):
        container = executors[executor[train]]["container"]
        accelerator = container["resources"]["accelerator"]
        assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "2")
        assert container["image"] == "reg/mh:cuda"
        kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][executor[train]]
        assert kubernetes["nodeSelector"] == {"labels": {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}}
        assert kubernetes["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    for task in ("preprocess", "adapt", "evaluate"):
        container = executors[executor[task]]["container"]
        assert "accelerator" not in container["resources"]
        assert container["resources"]["memoryRequest"] == STEPS[task].resources.memory_gb
        assert container["image"] == CPU_IMAGE
    assert set(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]) == {executor["train"],
                                                                                        executor["train-2"]}


def test_caching_flags(tmp_path: Path) -> None:
    def caching(*options: str) -> dict[str, bool]:
        tasks = compiled(tmp_path, *options)[0]["root"]["dag"]["tasks"]
        return {name: task.get("cachingOptions", {}).get("enableCache", False) for name, task in tasks.items()}

    assert caching() == {"generate": True, "preprocess": True, "train": True, "adapt": True, "adapt-2": True,
                         "evaluate": False}
    assert not any(caching("--no-cache").values())


def test_parameters_come_from_the_steps(tmp_path: Path) -> None:
    spec, _ = compiled(tmp_path)
    declared = spec["root"]["inputDefinitions"]["parameters"]
    expected = {p.name: p for p, _ in pipeline_parameters(DagOptions())}
    assert set(declared) == set(expected)
    for step in ("generate", "preprocess", "train", "adapt", "evaluate"):
        for argument in STEPS[step].parameters():
            name = f"{step}_{argument.name}"
            if name in declared and not argument.required:
                assert declared[name]["defaultValue"] == ("" if argument.optional else argument.default)
    assert "train_method" not in declared and "adapt_shard" not in declared  # set by the DAG itself


def test_imported_input_replaces_generate(tmp_path: Path) -> None:
    spec, _ = compiled(tmp_path, "--source", "input", "--shards", "1")
    tasks = spec["root"]["dag"]["tasks"]
    assert "generate" not in tasks
    (importer,) = [t for t in tasks if t.startswith("importer")]
    assert producers(tasks["preprocess"]) == {"input": (importer, "artifact")}
    assert spec["root"]["inputDefinitions"]["parameters"]["input_uri"]["parameterType"] == "STRING"


def test_bad_parameter_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run-local", "--output", str(tmp_path), "--param", "generate_userz=5"]) == 2
    assert "--param 'generate_userz=5': expected NAME=VALUE with NAME one of" in capsys.readouterr().err
    assert main(["run-local", "--output", str(tmp_path), "--param", "generate_users=many"]) == 2
    assert "--param generate_users: expected int, got 'many'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_whole_dag_runs_locally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = {p.name for p, _ in pipeline_parameters(DagOptions())}
    argv = ["run-local", "--output", str(tmp_path), "--methods", METHODS, "--shards", "2", *params(names)]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("run: ") and any(line.startswith("MetaHeac ") for line in out)  # the table
    run = Path(out[-1].removeprefix("run: "))
    assert run.parent.parent == tmp_path
    assert f"report: {run / 'evaluate' / 'output' / 'report.html'}" in out
    assert (run / "preprocess" / "output" / "_SUCCESS").exists()
    evaluate = run / "evaluate"
    assert (evaluate / "output" / "report.html").exists() and (evaluate / "output" / "metrics.json").exists()
    outputs = json.loads((evaluate / "executor_output.json").read_text())["artifacts"]
    metrics = outputs["metrics"]["artifacts"][0]["metadata"]
    assert {name.split("/")[1] for name in metrics} == set(METHODS.split(","))
    assert outputs["classification"]["artifacts"][0]["metadata"]["confidenceMetrics"]
    assert Path(outputs["report"]["artifacts"][0]["uri"]).read_text().startswith("<!DOCTYPE html>")

