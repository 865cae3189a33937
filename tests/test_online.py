"""The online stage's steps through the CLI: the model registry (local and gs://), seed sets, shards merged."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from metaheac.cli import main
from metaheac.method_names import RECOMMENDED
from metaheac.methods import load_model
from metaheac.online.model_registry import POINTER_FILE, ROOT_ENV, publish, read_record, resolve_model
from metaheac.online.seed_sets import SeedSet, SeedSetError, list_seed_sets
from metaheac.runtime import storage
from metaheac.runtime.outputs import OutputError
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
    assert second.version != first.version and second.version.startswith("20300101T000000.000Z-")
    assert resolve_model("latest") == resolve_model(storage.join(root, "metaheac", "latest")) == second
    assert resolve_model(first.uri) == first  # a version, as it is
    network, info = load_model(resolve_model("latest").uri)
    assert info["method"] == RECOMMENDED
    with pytest.raises(OutputError, match="it exists, and it is never written over"):
        publish(str(model), root, now=pd.Timestamp("2030-01-01", tz="UTC").to_pydatetime())
    # the same model again within the second (kept by the gate, then forced): another version
    third = publish(str(model), root, now=pd.Timestamp("2030-01-01 00:00:00.5", tz="UTC").to_pydatetime())
    assert third.version.startswith("20300101T000000.500Z-") and third.version != second.version


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
    # The next run with nothing changed reuses what is written: only the failed campaign is tried again.
    again = {r["campaign"]: r["status"] for r in run("second")["campaigns"]}
    assert again == {"bad": "failed", "known": "reused", "new": "reused"}


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


def test_a_refresh_reruns_only_the_campaigns_whose_request_changed(trained, tmp_path) -> None:
    """By content: the same files rewritten or touched are reused; a seed file's, an exclusion list's or the
    tiers' change re-expands that campaign alone; seeds fallen below the minimum keep the last audience, stale.
    With --allow-small-seeds the campaign is expanded again, flagged low-confidence."""
    dataset, model = trained
    seeds, audiences = tmp_path / "seeds", tmp_path / "audiences"
    seed_sets(seeds, dataset)
    (seeds / "bad.json").unlink()
    users = pd.read_parquet(dataset / "users.parquet", columns=["uid"])["uid"].tolist()
    (seeds / "customers.txt").write_text("\n".join(map(str, users[500:520])))
    manifest = json.loads((seeds / "known.json").read_text())
    (seeds / "known.json").write_text(json.dumps({**manifest, "exclude": ["customers.txt"]}))
    runs = iter(range(100))

    def run(*extra: str) -> dict[str, dict]:
        out = tmp_path / f"run-{next(runs)}"
        assert main(["expand_shard", "--dataset", str(dataset), "--model", str(model), "--seeds", str(seeds),
                     "--output", str(out / "part"), "--top-n", "40", "--holdout", "0", "--audiences",
                     str(audiences), *extra]) == 0
        assert main(["merge_audiences", "--parts", str(out / "part"), "--output", str(out / "merged"),
                     "--audiences", str(audiences)]) == 0
        return {r["campaign"]: r for r in json.loads((out / "merged" / "summary.json").read_text())["campaigns"]}

    def audience(number: int, name: str) -> pd.DataFrame:
        return pd.read_parquet(tmp_path / f"run-{number}" / "merged" / "audiences" / f"{name}.parquet")

    def statuses(rows: dict[str, dict]) -> dict[str, str]:
        return {name: row["status"] for name, row in rows.items()}

    assert statuses(run()) == {"known": "ok", "new": "ok"}
    # the same bytes written again (a new mtime) and the manifest's keys reordered: nothing changed
    (seeds / "new.parquet").write_bytes((seeds / "new.parquet").read_bytes())
    (seeds / "known.json").write_text(json.dumps({"exclude": ["customers.txt"], **manifest}))
    second = run()
    assert statuses(second) == {"known": "reused", "new": "reused"}
    pd.testing.assert_frame_equal(audience(1, "known"), audience(0, "known"))
    assert second["known"]["excluded"] == {"seeds": 120, "campaign:customers.txt": 20}  # the stored row
    (seeds / "known.txt").write_text((seeds / "known.txt").read_text() + f"{users[130]}\n")  # one seed more
    assert statuses(run()) == {"known": "ok", "new": "reused"}
    assert not set(audience(2, "known")["uid"]) & {users[130]}
    (seeds / "customers.txt").write_text("\n".join(map(str, users[500:530])))  # the exclusion list grew
    rows = run()
    assert statuses(rows) == {"known": "ok", "new": "reused"}
    assert rows["known"]["excluded"]["campaign:customers.txt"] == 30
    manifest = json.loads((seeds / "new.json").read_text())
    (seeds / "new.json").write_text(json.dumps({**manifest, "tiers": ["1%", "40"]}))
    rows = run()
    assert statuses(rows) == {"known": "reused", "new": "ok"}
    assert audience(4, "new")["tier"].astype(str).tolist() == ["1%"] * 15 + ["40"] * 25
    # the seeds fall below the minimum: ineligible, its last audience kept and flagged stale
    (seeds / "known.txt").write_text("\n".join(map(str, users[:60])))
    rows = run()
    assert statuses(rows) == {"known": "ineligible", "new": "reused"}
    assert rows["known"]["stale"] is True and rows["known"]["seeds_used"] == 60
    assert "below the minimum of 100" in rows["known"]["error"] and rows["known"]["audience"] == 40
    pd.testing.assert_frame_equal(audience(5, "known"), audience(3, "known"))
    page = (tmp_path / "run-5" / "merged" / "summary.html").read_text()
    assert "ineligible: last audience, stale" in page and "known (stale)" in page
    metrics = json.loads((tmp_path / "run-5" / "merged" / "kfp_metrics.json").read_text())
    assert metrics["campaigns_ineligible"] == metrics["campaigns_stale"] == 1 and metrics["campaigns_reused"] == 1
    # --allow-small-seeds changes every request: both are expanded again, the small one low-confidence
    rows = run("--allow-small-seeds")
    assert statuses(rows) == {"known": "ok", "new": "ok"}
    assert rows["known"]["low_confidence"] is True and rows["new"]["low_confidence"] is False
    assert "stale" not in rows["known"] and len(audience(6, "known")) == 40
