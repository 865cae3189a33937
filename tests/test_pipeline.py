"""The KFP DAG: its compiled IR (edges, artifact types, GPU request, caching) and a whole local run with kfp.local."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from components.spec import CPU_IMAGE
from metaheac.steps.catalog import STEPS
from metaheac.steps.engine import CPU_TRAIN_MEMORY_GB
from pipelines.cli import main
from pipelines.dag import TrainingOptions
from tests.pipeline_helpers import compiled, params, producers

METHODS = "MetaHeac,LR"
CUDA_DIGEST = "reg/mh@sha256:" + "a" * 64  # a reference by digest is written as given
TASK_LINE = re.compile(r"^  (\S+) +(.+?) +\d+\.\d s  (ran|reused|failure)$")  # name, method, wall time, state


def test_dag_edges_and_artifact_types(tmp_path: Path) -> None:
    spec, _ = compiled(tmp_path, "--methods", METHODS, "--shards", "2")
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"generate", "preprocess", "train-metaheac", "train-lr", "adapt-metaheac-1of2",
                          "adapt-metaheac-2of2", "adapt-lr-1of2", "adapt-lr-2of2", "evaluate"}  # named by what they are
    assert producers(tasks["preprocess"]) == {"input": ("generate", "output")}
    trains = {tasks[t]["inputs"]["parameters"]["method"]["runtimeValue"]["constant"]: t
              for t in ("train-metaheac", "train-lr")}
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
    assert output_types("train-lr") == {"output": "system.Model"}
    assert output_types("adapt-lr-1of2") == {"output": "system.Dataset"}
    assert output_types("evaluate") == {"output": "system.Artifact", "metrics": "system.Metrics",
                                        "classification": "system.ClassificationMetrics", "report": "system.HTML"}


def test_only_meta_training_requests_a_gpu_on_the_node_pool(tmp_path: Path) -> None:
    spec, platform = compiled(tmp_path, "--methods", METHODS, "--gpu-node-selector",
                              "cloud.google.com/gke-accelerator=nvidia-tesla-a100", "--cuda-image", CUDA_DIGEST,
                              "--gpus", "2")
    executors = spec["deploymentSpec"]["executors"]
    tasks = spec["root"]["dag"]["tasks"]
    executor = {t: spec["components"][tasks[t]["componentRef"]["name"]]["executorLabel"] for t in tasks}
    method = {t: tasks[t]["inputs"]["parameters"]["method"]["runtimeValue"]["constant"]
              for t in tasks if t.startswith("train")}
    (meta,) = [t for t, m in method.items() if m == "MetaHeac"]
    (cpu,) = [t for t, m in method.items() if m == "LR"]
    container = executors[executor[meta]]["container"]
    accelerator = container["resources"]["accelerator"]
    assert (accelerator["resourceType"], accelerator["resourceCount"]) == ("nvidia.com/gpu", "2")
    assert container["image"] == CUDA_DIGEST
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert kubernetes[executor[meta]]["nodeSelector"] == {
        "labels": {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}}
    assert kubernetes[executor[meta]]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert set(kubernetes) == {executor[meta]}  # no other task goes to the GPU node pool
    cpu_train = executors[executor[cpu]]["container"]
    assert "accelerator" not in cpu_train["resources"] and cpu_train["image"] == CPU_IMAGE
    assert cpu_train["resources"]["memoryRequest"] == CPU_TRAIN_MEMORY_GB
    for task, step in (("preprocess", "preprocess"), ("adapt-lr-1of2", "adapt"), ("evaluate", "evaluate")):
        container = executors[executor[task]]["container"]
        assert "accelerator" not in container["resources"]
        assert container["resources"]["memoryRequest"] == STEPS[step].resources.memory_gb
        assert container["image"] == CPU_IMAGE
    gpu_tasks = [t for t in tasks if "accelerator" in executors[executor[t]]["container"]["resources"]]
    assert gpu_tasks == [meta]


def test_caching_flags(tmp_path: Path) -> None:
    def caching(*options: str) -> dict[str, bool]:
        tasks = compiled(tmp_path, *options)[0]["root"]["dag"]["tasks"]
        return {name: task.get("cachingOptions", {}).get("enableCache", False) for name, task in tasks.items()}

    assert caching() == {"generate": True, "preprocess": True, "train-metaheac-lr": True,  # the default method
                         "adapt-metaheac-lr-1of2": True, "adapt-metaheac-lr-2of2": True, "evaluate": False}
    assert not any(caching("--no-cache").values())


def test_parameters_come_from_the_steps(tmp_path: Path) -> None:
    spec, _ = compiled(tmp_path)
    declared = spec["root"]["inputDefinitions"]["parameters"]
    expected = {p.name: p for p, _ in TrainingOptions().parameters()}
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


def test_the_tables_folder_is_the_input_of_the_tables_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--source input` with `preprocess_source=tables`: the importer's artifact is the tables' folder, which the
    spec's relative paths are read in (here the shop example's, the spec beside the tables)."""
    shop = Path(__file__).resolve().parents[1] / "examples" / "shop"
    argv = ["run-local", "--output", str(tmp_path), "--source", "input", "--methods", "LR", "--shards", "1",
            f"--param=input_uri={shop}", "--param=preprocess_source=tables",
            f"--param=preprocess_spec={shop}/spec.yaml", "--param=adapt_epochs=1"]
    assert main(argv) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("run: "))
    schema = json.loads((run / "preprocess" / "output" / "schema.json").read_text())
    assert schema["hierarchy"] == ["category", "brand"]  # the shop's spec, not a Tencent preset
    assert (run / "evaluate" / "output" / "report.html").exists()


def test_bad_parameter_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run-local", "--output", str(tmp_path), "--param", "generate_userz=5"]) == 2
    assert "--param 'generate_userz=5': expected NAME=VALUE with NAME one of" in capsys.readouterr().err
    assert main(["run-local", "--output", str(tmp_path), "--param", "generate_users=many"]) == 2
    assert "--param generate_users: expected int, got 'many'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_each_pipeline_takes_only_its_own_shape_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = str(tmp_path / "p.yaml")
    assert main(["compile", "--pipeline", "expand", "--methods", "LR", "--output", output]) == 2
    assert "--methods is an option of --pipeline train, not of --pipeline expand" in capsys.readouterr().err
    assert main(["compile", "--campaign-groups", "2", "--output", output]) == 2
    assert "--campaign-groups is an option of --pipeline expand, not of --pipeline train" in capsys.readouterr().err
    assert main(["compile", "--pipeline", "expand", "--shards", "3", "--output", output]) == 0


def test_whole_dag_runs_locally_and_reuses_what_has_not_changed(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    names = {p.name for p, _ in TrainingOptions().parameters()}
    argv = ["run-local", "--output", str(tmp_path), "--methods", METHODS, "--shards", "2", *params(names)]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("run: ") and any(line.startswith("MetaHeac ") for line in out)  # the table
    assert sum(line.startswith("MetaHeac ") for line in out) == 1  # printed once
    widths = [len(line.replace(str(tmp_path), "TMP")) for line in out]  # pytest's tmp path length varies
    assert len(out) <= 40 and max(widths) < 200  # no executor inputs, no progress bars
    run = Path(out[-1].removeprefix("run: "))
    assert run.parent == tmp_path  # one level: <output>/<run>/<task>
    tasks = {m[1]: [m[1], m[2], m[3]] for m in map(TASK_LINE.match, out) if m}
    assert set(tasks) == {"generate", "preprocess", "train-metaheac", "train-lr", "adapt-metaheac-1of2",
                          "adapt-metaheac-2of2", "adapt-lr-1of2", "adapt-lr-2of2", "evaluate"}
    assert tasks["train-lr"][1] == "LR" and tasks["adapt-metaheac-1of2"][1] == "MetaHeac"
    assert tasks["generate"][1] == "-"
    assert all(t[-1] == "ran" for t in tasks.values())
    assert f"report: {run / 'evaluate' / 'output' / 'report.html'}" in out
    assert "Executing task" in (run / "logs" / "train-metaheac.log").read_text()  # kfp.local's output, per task
    assert (run / "preprocess" / "output" / "_SUCCESS").exists()
    evaluate = run / "evaluate"
    assert (evaluate / "output" / "report.html").exists() and (evaluate / "output" / "metrics.json").exists()
    outputs = json.loads((evaluate / "executor_output.json").read_text())["artifacts"]
    metrics = outputs["metrics"]["artifacts"][0]["metadata"]
    assert {name.split("/")[1] for name in metrics} == set(METHODS.split(","))
    assert outputs["classification"]["artifacts"][0]["metadata"]["confidenceMetrics"]
    assert Path(outputs["report"]["artifacts"][0]["uri"]).read_text().startswith("<!DOCTYPE html>")

    # Again, with one adapt argument changed: the unchanged steps are reused, adapt and evaluate run again.
    assert main([*argv, "--param=adapt_epochs=2"]) == 0
    again = capsys.readouterr().out.strip().splitlines()
    states = {m[1]: m[3] for m in map(TASK_LINE.match, again) if m}
    assert {t for t, state in states.items() if state == "reused"} == {"generate", "preprocess", "train-metaheac",
                                                                       "train-lr"}
    assert {t for t, state in states.items() if state == "ran"} == set(states) - {"generate", "preprocess",
                                                                                  "train-metaheac", "train-lr"}
    second = Path(again[-1].removeprefix("run: "))
    assert second != run and (second / "train-lr" / "output" / "config.json").exists()
    assert sum(line.startswith("MetaHeac ") for line in again) == 1
    assert any(line.startswith("report: ") for line in again)


def test_a_failed_task_names_its_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = {p.name for p, _ in TrainingOptions(shards=1).parameters()}
    argv = ["run-local", "--output", str(tmp_path), "--shards", "1", *params(names, preprocess_source="official")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    (error,) = captured.err.strip().splitlines()
    assert error.startswith("python -m pipelines: error: task preprocess failed: metaheac preprocess: error: ")
    log = Path(error.rsplit("(its log: ", 1)[1].rstrip(")"))
    assert log.name == "preprocess.log" and "Traceback" not in captured.out
    assert "metaheac preprocess: error: " in log.read_text()


class _Interrupted:
    """A pipeline that starts its first task, then is interrupted (Ctrl-C) as kfp.local runs it."""

    name = "interrupted"

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self) -> None:
        (self.root / f"{self.name}-2026-12-04").mkdir()
        print("Executing task 'train-metaheac'\nstep 1 of 9")  # kfp.local's output goes to the task logs
        raise KeyboardInterrupt


def test_an_interrupted_run_leaves_its_logs_in_the_run_folder(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.local import run_local

    with pytest.raises(KeyboardInterrupt):
        run_local(_Interrupted(tmp_path), {}, tmp_path)  # type: ignore[arg-type]
    log = tmp_path / "interrupted-2026-12-04" / "logs" / "train-metaheac.log"
    assert "step 1 of 9" in log.read_text() and not list(tmp_path.glob(".logs-*"))
    assert f"interrupted: the logs so far are in {log.parent}" in capsys.readouterr().out
