"""The expansion pipeline: its compiled IR (fan-out, merge, CPU-only requests), a kfp.local run, a local
schedule that skips what is written; and the training pipeline's optional publish task."""

from __future__ import annotations

import json
import re
from pathlib import Path

from metaheac.registry import publish
from pipelines.cli import main
from tests.online_helpers import seed_sets
from tests.pipeline_helpers import compiled, producers


def test_compiled_expansion_fans_out_over_groups_and_shards_then_merges(tmp_path: Path) -> None:
    spec, platform = compiled(tmp_path, "--pipeline", "expand", "--shards", "3", "--campaign-groups", "2")
    tasks = spec["root"]["dag"]["tasks"]
    shards = [t for t in tasks if t.startswith("expand-shard")]
    (importer,) = [t for t in tasks if t.startswith("importer")]
    assert len(shards) == 6 and set(tasks) == {importer, *shards, "merge-audiences"}
    placed = set()
    for task in shards:
        assert producers(tasks[task]) == {"dataset": (importer, "artifact")}
        values = tasks[task]["inputs"]["parameters"]
        placed.add(tuple(values[k]["runtimeValue"]["constant"] for k in ("group", "groups", "shard", "shards")))
        assert values["model"]["componentInputParameter"] == "model"
        assert tasks[task].get("cachingOptions", {}).get("enableCache", False) is False
    assert placed == {(g, 2, s, 3) for g in range(2) for s in range(3)}
    assert set(producers(tasks["merge-audiences"]).values()) == {(t, "output") for t in shards}
    merge = spec["components"][tasks["merge-audiences"]["componentRef"]["name"]]
    assert {n: a["artifactType"]["schemaTitle"] for n, a in merge["outputDefinitions"]["artifacts"].items()} == {
        "output": "system.Dataset", "metrics": "system.Metrics", "report": "system.HTML"}
    executors = spec["deploymentSpec"]["executors"]
    for task in [*shards, "merge-audiences"]:  # CPU and memory only: no accelerator, no GPU node pool
        container = executors[spec["components"][tasks[task]["componentRef"]["name"]]["executorLabel"]]["container"]
        resources = container["resources"]
        assert "accelerator" not in resources and resources["cpuRequest"] >= 1 and resources["memoryRequest"] > 0
        # torch's threads: the CPU request, not the node's cores
        assert {"name": "OMP_NUM_THREADS", "value": str(int(resources["cpuRequest"]))} in container["env"]
    assert not platform  # no node selector, no toleration


def test_training_pipeline_publishes_last_only_when_asked(tmp_path: Path) -> None:
    tasks = compiled(tmp_path, "--publish")[0]["root"]["dag"]["tasks"]
    assert set(producers(tasks["publish"]).values()) == {("train-metaheac-lr", "output"), ("preprocess", "output"),
                                                         ("evaluate", "output")}
    assert tasks["publish"].get("cachingOptions", {}).get("enableCache", False) is False
    assert "publish" not in compiled(tmp_path)[0]["root"]["dag"]["tasks"]


def arguments(dataset: Path, root: Path, tmp_path: Path) -> list[str]:
    seed_sets(tmp_path / "seeds", dataset)
    return [f"--param=dataset_uri={dataset}", f"--param=model={root / 'metaheac'}", "--param=top_n=30",
            f"--param=seeds={tmp_path / 'seeds'}", f"--param=audiences={tmp_path / 'audiences'}"]


def test_expansion_runs_locally_and_a_bad_seed_set_fails_alone(trained, tmp_path: Path, capsys) -> None:  # noqa: F811
    dataset, model = trained
    version = publish(str(model), str(tmp_path / "models")).version
    argv = ["run-local", "--pipeline", "expand", "--shards", "2", "--output", str(tmp_path / "runs"),
            "--allow-failures", *arguments(dataset, tmp_path / "models", tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    run = Path(out.strip().splitlines()[-1].removeprefix("run: "))
    assert re.search(r"^  bad +failed +\S*bad.txt line 2", out, re.MULTILINE)  # the console names it and why
    assert "campaigns: 2 ok, 1 failed, 0 skipped" in out
    merged = run / "merge-audiences" / "output"
    summary = json.loads((merged / "summary.json").read_text())
    assert summary["model_version"] == version
    assert {r["campaign"]: r["status"] for r in summary["campaigns"]} == {"bad": "failed", "known": "ok", "new": "ok"}
    assert sorted(p.name for p in (merged / "audiences").iterdir()) == ["known.parquet", "new.parquet"]
    outputs = json.loads((run / "merge-audiences" / "executor_output.json").read_text())["artifacts"]
    metrics = outputs["metrics"]["artifacts"][0]["metadata"]
    assert metrics["campaigns_failed"] == 1 and metrics["audience_users"] == 60
    assert "bad.txt line 2" in Path(outputs["report"]["artifacts"][0]["uri"]).read_text()
    assert (tmp_path / "audiences" / "known" / version / "audience.parquet").exists()


def test_a_local_schedule_expands_only_what_is_not_written_yet(trained, tmp_path: Path, capsys) -> None:  # noqa: F811
    dataset, model = trained
    publish(str(model), str(tmp_path / "models"))
    argv = ["schedule", "create", "--local", "--pipeline", "expand", "--cron", "* * * * * *", "--max-runs", "2",
            "--shards", "2", "--output", str(tmp_path / "runs"), *arguments(dataset, tmp_path / "models", tmp_path)]
    assert main(argv) == 1  # a failed campaign fails its run, but not the schedule, nor the others' audiences
    captured = capsys.readouterr()
    assert "0 runs succeeded, 2 failed" in captured.out and "next run at " in captured.out
    assert "2 of 2 scheduled runs failed" in captured.err
    runs = sorted((tmp_path / "runs").iterdir())
    statuses = []
    for run in runs:
        (summary,) = run.glob("merge-audiences/output/summary.json")
        statuses.append({r["campaign"]: r["status"] for r in json.loads(summary.read_text())["campaigns"]})
    assert statuses == [{"bad": "failed", "known": "ok", "new": "ok"},
                        {"bad": "failed", "known": "skipped", "new": "skipped"}]
