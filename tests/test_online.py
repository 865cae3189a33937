"""The online stage's steps through the CLI: the model registry (local and gs://), seed sets, shards merged."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from metaheac import storage
from metaheac.cli import main
from metaheac.method_names import RECOMMENDED
from metaheac.methods import load_model
from metaheac.outputs import OutputError
from metaheac.registry import POINTER_FILE, ROOT_ENV, publish, read_record, resolve_model
from metaheac.seedsets import SeedSet, SeedSetError, list_seed_sets
from tests.online_helpers import seed_sets


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_publish_versions_and_resolve_latest(trained, where, tmp_path, request, monkeypatch) -> None:
    dataset, model = trained
    root = str(tmp_path / "models") if where == "local" else f"gs://{request.getfixturevalue('gcs_bucket')}/models"
    first = publish(str(model), root, dataset=str(dataset), metrics={"auc": 0.7}, run_id="run-1")
    record = read_record(first.uri)
    assert record["method"] == RECOMMENDED and record["pipeline_run_id"] == "run-1"
    assert record["metrics"] == {"auc": 0.7} and len(record["dataset_fingerprint"]) == 64
    assert resolve_model(storage.join(root, "metaheac")) == first
    monkeypatch.setenv(ROOT_ENV, root)
    second = publish(str(model), root, run_id="run-2", now=pd.Timestamp("2030-01-01", tz="UTC").to_pydatetime())
    assert second.version != first.version and second.version.startswith("20300101T000000Z-")
    assert resolve_model("latest") == resolve_model(storage.join(root, "metaheac", "latest")) == second
    assert resolve_model(first.uri) == first  # a version, as it is
    network, info = load_model(resolve_model("latest").uri)
    assert info["method"] == RECOMMENDED
    with pytest.raises(OutputError, match="it exists, and it is never written over"):
        publish(str(model), root, now=pd.Timestamp("2030-01-01", tz="UTC").to_pydatetime())


def test_a_failed_publish_leaves_the_registry_as_it_was(trained, tmp_path) -> None:
    dataset, model = trained
    root = str(tmp_path / "models")
    published = publish(str(model), root)
    with pytest.raises(OSError):
        publish(str(dataset), root)  # not a model folder
    assert resolve_model(str(tmp_path / "models" / "metaheac")) == published
    assert sorted(p.name for p in (tmp_path / "models" / "metaheac").iterdir()) == sorted(
        [POINTER_FILE, published.version])


def test_model_arguments_that_resolve_to_nothing_fail_in_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    with pytest.raises(ValueError, match=f"needs \\${ROOT_ENV}"):
        resolve_model("latest")
    with pytest.raises(ValueError, match="neither a model folder"):
        resolve_model(str(tmp_path))


def test_shards_expand_every_campaign_and_a_bad_seed_set_fails_alone(trained, tmp_path) -> None:
    dataset, model = trained
    seed_sets(tmp_path / "seeds", dataset)
    audiences = tmp_path / "audiences"

    def run(out: str) -> dict:
        parts = []
        for shard in (0, 1):
            parts.append(str(tmp_path / out / f"part-{shard}"))
            assert main(["expand_shard", "--dataset", str(dataset), "--model", str(model), "--seeds",
                         str(tmp_path / "seeds"), "--output", parts[-1], "--top-n", "40", "--shard", str(shard),
                         "--shards", "2", "--audiences", str(audiences)]) == 0
        assert main(["merge_audiences", "--parts", ",".join(parts), "--output", str(tmp_path / out / "merged"),
                     "--audiences", str(audiences)]) == 0
        return json.loads((tmp_path / out / "merged" / "summary.json").read_text())

    summary = run("first")
    rows = {r["campaign"]: r for r in summary["campaigns"]}
    assert {n: r["status"] for n, r in rows.items()} == {"bad": "failed", "known": "ok", "new": "ok"}
    assert rows["bad"]["error"].endswith("bad.txt line 2: expected one integer uid below 2**63, got 'not-a-uid'")
    assert rows["known"]["seeds_used"] == 120 and rows["known"]["unknown_seed_uids"] == 1
    for name in ("known", "new"):
        audience = pd.read_parquet(tmp_path / "first" / "merged" / "audiences" / f"{name}.parquet")
        assert list(audience.columns) == ["uid", "score", "rank", "tier"] and len(audience) == 40
        assert audience["score"].is_monotonic_decreasing and audience["rank"].tolist() == list(range(1, 41))
    metrics = json.loads((tmp_path / "first" / "merged" / "kfp_metrics.json").read_text())
    assert metrics["campaigns_ok"] == 2 and metrics["campaigns_failed"] == 1 and metrics["audience_users"] == 80
    assert "not-a-uid" in (tmp_path / "first" / "merged" / "summary.html").read_text()
    # The next run with the same model skips what is written: only the failed campaign is tried again.
    again = {r["campaign"]: r["status"] for r in run("second")["campaigns"]}
    assert again == {"bad": "failed", "known": "skipped", "new": "skipped"}


@pytest.mark.parametrize("manifest,message", [
    ("{", "not JSON"),
    ("[1]", "expected a JSON object"),
    ('{"aid": 1, "ad_fields": {"advertiserId": 1}}', 'exactly one of "aid" and "ad_fields"'),
    ('{"aid": "x1"}', "aid must be an integer, got 'x1'"),
    ('{"ad_fields": {}}', '"ad_fields" must be an object'),
])
def test_bad_manifests_say_what_is_wrong_in_one_line(tmp_path, manifest: str, message: str) -> None:
    (tmp_path / "c.json").write_text(manifest)
    (seed_set,) = list_seed_sets(str(tmp_path))
    with pytest.raises(SeedSetError, match=message) as error:
        seed_set.campaign_fields()
    assert "\n" not in str(error.value) and str(tmp_path / "c.json") in str(error.value)


def test_a_manifest_without_its_seed_file_fails(tmp_path) -> None:
    seed_set = SeedSet("c", str(tmp_path / "c.json"))
    with pytest.raises(SeedSetError, match="no seed file beside it"):
        seed_set.seed_uids()
