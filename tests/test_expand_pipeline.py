"""The expansion pipeline: its compiled IR (fan-out, merge, CPU-only requests), a kfp.local run, a local
schedule that skips what is written; and the training pipeline's optional publish task."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from metaheac.cli import main as cli_main
from metaheac.online.model_registry import publish, read_record
from pipelines.cli import main
from pipelines.dag import TrainingOptions, pipeline_parameters
from tests.online_helpers import seed_sets
from tests.pipeline_helpers import compiled, params, producers


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


def test_expansion_runs_locally_with_tiers_exclusions_a_seed_minimum_and_estimates(
        trained, tmp_path: Path, capsys) -> None:
    dataset, model = trained
    version = publish(str(model), str(tmp_path / "models")).version
    argv = ["run-local", "--pipeline", "expand", "--shards", "2", "--output", str(tmp_path / "runs"),
            "--allow-failures", *arguments(dataset, tmp_path / "models", tmp_path)]
    users = pd.read_parquet(dataset / "users.parquet", columns=["uid"])["uid"].to_numpy()
    seeds = tmp_path / "seeds"
    # known: tiers of the run (1%, 2% of 1,500 users), its customers excluded; new: its own tiers; small: 60 seeds
    (seeds / "customers.txt").write_text("\n".join(map(str, users[500:520])))
    manifest = json.loads((seeds / "known.json").read_text())
    (seeds / "known.json").write_text(json.dumps({**manifest, "exclude": ["customers.txt"]}))
    manifest = json.loads((seeds / "new.json").read_text())
    (seeds / "new.json").write_text(json.dumps({**manifest, "tiers": ["1%", "40"]}))
    (seeds / "small.json").write_text((seeds / "known.json").read_text())
    (seeds / "small.txt").write_text("\n".join(map(str, [*users[600:660], *users[600:640]])))  # 60 distinct
    pd.DataFrame({"user_id": users[520:530]}).to_parquet(tmp_path / "optouts.parquet")
    argv += ["--param=tiers=1%,2%", f"--param=exclude={tmp_path / 'optouts.parquet'}#user_id"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    run = Path(out.strip().splitlines()[-1].removeprefix("run: "))
    assert re.search(r"^  bad +failed +\S*bad.txt line 2", out, re.MULTILINE)  # the console names it and why
    assert re.search(r"^  small +failed +60 known seed users .* below the minimum of 100", out, re.MULTILINE)
    assert "campaigns: 2 ok, 2 failed\n" in out
    merged = run / "merge-audiences" / "output"
    summary = json.loads((merged / "summary.json").read_text())
    assert summary["model_version"] == version
    rows = {r["campaign"]: r for r in summary["campaigns"]}
    assert {n: r["status"] for n, r in rows.items()} == {"bad": "failed", "known": "ok", "new": "ok",
                                                         "small": "failed"}
    assert sorted(p.name for p in (merged / "audiences").iterdir()) == ["known.parquet", "new.parquet"]
    # Tiers: one pass, nested, exact across the 2 user shards; each user's smallest tier.
    known = pd.read_parquet(merged / "audiences" / "known.parquet")
    assert len(known) == 30 and known["rank"].tolist() == list(range(1, 31))
    assert known["tier"].astype(str).tolist() == ["1%"] * 15 + ["2%"] * 15
    new = pd.read_parquet(merged / "audiences" / "new.parquet")
    assert len(new) == 40 and new["tier"].astype(str).tolist() == ["1%"] * 15 + ["40"] * 25
    # Exclusions: seeds, the campaign's customers and the global opt-outs are out, before ranking.
    known_seeds = set(users[:120])
    assert not set(known["uid"]) & (known_seeds | set(users[500:530]))
    assert not set(new["uid"]) & (set(users[200:310]) | set(users[520:530]))
    assert rows["known"]["excluded"] == {"seeds": 120, "campaign:customers.txt": 20,
                                         f"global:{tmp_path / 'optouts.parquet'}#user_id": 10}
    assert rows["known"]["low_confidence"] is False
    # Estimates: 20% of the seeds held out; each tier's recall with its interval, nested tiers recall more.
    assert rows["known"]["held_out_seeds"] == 24
    recalls = [t["recall"] for t in rows["known"]["tiers"]]
    assert [t["size"] for t in rows["known"]["tiers"]] == [15, 30] and recalls == sorted(recalls)
    assert rows["new"]["held_out_seeds"] == 22
    for row in (rows["known"], rows["new"]):
        for tier in row["tiers"]:
            assert 0 <= tier["recall_low"] <= tier["recall"] <= tier["recall_high"] <= 1
            assert tier["recall"] == tier["held_out_recovered"] / row["held_out_seeds"]
    assert all(size <= 30 for size, _ in rows["known"]["reach"])
    jaccard = len(set(known["uid"][:15]) & set(new["uid"][:15])) / len(set(known["uid"][:15]) | set(new["uid"][:15]))
    assert summary["overlap"] == {"1%": {"known | new": jaccard}}
    outputs = json.loads((run / "merge-audiences" / "executor_output.json").read_text())["artifacts"]
    metrics = outputs["metrics"]["artifacts"][0]["metadata"]
    assert metrics["campaigns_failed"] == 2 and metrics["audience_users"] == 70 and metrics["excluded_users"] > 0
    page = Path(outputs["report"]["artifacts"][0]["uri"]).read_text()
    assert "bad.txt line 2" in page and "Reach curve" in page and "<svg" in page and "Tier 1%" in page
    (stored,) = (tmp_path / "audiences" / "known").glob("*/audience.parquet")  # under its request's sha256
    pd.testing.assert_frame_equal(pd.read_parquet(stored), known)


def test_a_local_schedule_reuses_the_audiences_whose_request_did_not_change(trained, tmp_path: Path, capsys) -> None:
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
                        {"bad": "failed", "known": "reused", "new": "reused"}]


def test_training_pipeline_promotes_only_past_the_gate(trained, tmp_path: Path, capsys) -> None:
    """Under kfp.local: the first publish is promoted; the same model again is compared with LATEST on the same
    cold campaigns (equal figures: promoted at tolerance 0); a LATEST of other data cannot be compared, so a
    model published over it is kept but not promoted, unless --force."""
    registry = tmp_path / "models"
    names = {p.name for p, _ in pipeline_parameters(TrainingOptions(publish=True))}
    argv = ["run-local", "--publish", "--shards", "1", "--output", str(tmp_path / "runs"),
            *params(names, publish_registry=registry, publish_tolerance=0)]
    records = []
    for _ in range(2):
        assert main(argv) == 0
        run = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("run: "))
        latest_version = json.loads((registry / "metaheac" / "LATEST.json").read_text())["version"]
        records.append(read_record(str(registry / "metaheac" / latest_version))["promotion"])
        metrics = json.loads((run / "publish" / "executor_output.json").read_text())["artifacts"]["gate"]
        assert metrics["artifacts"][0]["metadata"]["gate_promoted"] == 1.0
    first, second = records
    assert first["promoted"] and first["champion"] is None and "first version" in first["reason"]
    assert second["promoted"] and second["champion"] == second["candidate"] == first["candidate"]
    assert 0 < second["candidate"] < 1 and second["tolerance"] == 0
    # A model of other data (the fixture's) cannot be adapted to LATEST's data: kept, LATEST unchanged.
    dataset, model = trained
    before = (registry / "metaheac" / "LATEST.json").read_text()
    assert cli_main(["publish", "--model", str(model), "--registry", str(registry), "--dataset", str(dataset),
                     "--output", str(tmp_path / "gate")]) == 0
    gate = json.loads((tmp_path / "gate" / "gate.json").read_text())
    assert not gate["promoted"] and "LATEST cannot be compared" in gate["reason"]
    assert (registry / "metaheac" / "LATEST.json").read_text() == before
    assert read_record(str(registry / "metaheac" / gate["version"]))["promotion"]["promoted"] is False
    assert cli_main(["publish", "--model", str(model), "--registry", str(registry), "--dataset", str(dataset),
                     "--force"]) == 0
    forced = json.loads((registry / "metaheac" / "LATEST.json").read_text())["version"]
    assert forced != json.loads(before)["version"] and read_record(str(registry / "metaheac" / forced))[
        "promotion"]["forced"] is True
