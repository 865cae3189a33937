"""`metaheac preprocess --source tables`: a spec naming users, campaigns and events tables (CSV or Parquet)."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from metaheac.cli import main
from metaheac.data.dataset import load_campaign_frame, load_schema
from metaheac.data.errors import InputError
from metaheac.data.loading import load_features, load_rows
from metaheac.data.schema import SPLITS
from metaheac.data.spec import load_spec
from metaheac.data.tables import preprocess_tables
from metaheac.online.expand import load_campaign_vocab
from metaheac.runtime import storage

# Six users with a list column of movie ids (most recent first), four campaigns, labelled events.
USERS = {
    "uid": [1, 2, 3, 4, 5, 6],
    "gender": ["F", "M", "F", None, "M", "F"],
    "age": [18, 25, 33, 47, 60, 25],
    "liked": [[10, 11, 12], [11], [], [12, 13, 10, 14], [10], [13, 11]],
}
CAMPAIGNS = {"campaign": [100, 200, 300, 400], "genre": ["drama", "comedy", "drama", "horror"],
             "decade": ["1990", "1990", "1980", "1970"], "start": [5, 7, 30, 40]}
EVENTS = {
    "uid": [1, 2, 3, 4, 1, 5, 6, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6],
    "campaign": [100] * 6 + [200] * 6 + [300] * 6 + [400] * 6,
    "label": [1, 1, 0, 0, 1, 0] * 4,
    "time": list(range(24)),
}
SPEC = {
    "users": {"table": "users.parquet", "id": "uid", "columns": {  # a list first: the dataset holds single fields first
        "liked": {"type": "list", "max_length": 2, "keep": "first", "separator": " "},
        "gender": {"type": "categorical"},
        "age": {"type": "numeric", "buckets": 3},
    }},
    "campaigns": {"table": "campaigns.parquet", "id": "campaign", "columns": ["genre", "decade"],
                  "hierarchy": ["genre", "decade"], "start": "start"},
    "events": {"table": "events.parquet", "user": "uid", "campaign": "campaign", "time": "time",
               "labels": {"kind": "binary", "column": "label"}},
    "stages": {"kind": "random", "fraction": 0.5, "seed": 3},
    "split": {"kind": "random", "test_fraction": 0.5, "seed": 1},
    "cold_threshold": 1,
}


def write_tables(folder: Path, fmt: str = "parquet", users: dict | None = None, campaigns: dict | None = None,
                 events: dict | None = None, spec: dict | None = None) -> Path:
    """The tables as Parquet or CSV (CSV lists: ids joined by spaces) and the spec; returns the spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = json.loads(json.dumps(spec or SPEC))
    for name, table in (("users", users or USERS), ("campaigns", campaigns or CAMPAIGNS), ("events", events or EVENTS)):
        if fmt == "parquet":
            pq.write_table(pa.table(table), folder / f"{name}.parquet")
        else:
            header = list(table)
            lines = [",".join(header)]
            for row in zip(*table.values(), strict=True):
                lines.append(",".join(" ".join(map(str, v)) if isinstance(v, list) else "" if v is None else str(v)
                                      for v in row))
            (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
        spec[name]["table"] = f"{name}.{fmt}"
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "spec.yaml"


def content(uri: str) -> dict:
    """Everything the dataset holds but its provenance."""
    features = load_features(uri)
    rows = {f"{s}/{k}": {n: getattr(load_rows(uri, s, k), n).tolist() for n in ("campaign", "user", "label")}
            for s in SPLITS for k in (1, 2)}
    schema = load_schema(uri)
    schema.provenance = {}
    return {"users": features.users.uid.tolist(), "single": features.users.single.tolist(),
            "lists": features.users.lists.tolist(), "campaigns": load_campaign_frame(uri).to_dict("list"),
            "rows": rows, "schema": schema.to_json(),
            "vocab": load_campaign_vocab(uri)}


def test_parquet_and_csv_tables_make_the_same_dataset(tmp_path):
    made = {}
    for fmt in ("parquet", "csv"):
        provenance = preprocess_tables(str(write_tables(tmp_path / fmt, fmt)), str(tmp_path / f"ds-{fmt}"),
                                       progress=False)
        made[fmt] = content(str(tmp_path / f"ds-{fmt}"))
        assert provenance["counts"]["users"] == 6
    assert made["parquet"] == made["csv"]
    schema = load_schema(str(tmp_path / "ds-parquet"))
    assert schema.hierarchy == ["genre", "decade"]
    assert [(f.name, f.vocab_size, f.length) for f in schema.user_lists] == [("liked", 5, 2)]  # 10..13 seen + 0
    users = made["parquet"]
    # liked keeps each user's first two ids, indexed in order of first appearance; 14 is cut from user 4
    assert users["lists"] == [[1, 2], [2, 0], [0, 0], [3, 4], [1, 0], [4, 2]]
    # gender: first appearance, missing = 0; age: three quantile buckets of the six users
    assert [row[0] for row in users["single"]] == [1, 2, 1, 0, 2, 1]
    ages = [row[1] for row in users["single"]]
    assert ages == sorted(ages[:5]) + [ages[1]] and len(set(ages)) == 3 and min(ages) == 1
    campaigns = users["campaigns"]
    assert campaigns["aid"] == [100, 200, 300, 400]
    # (uid 1, campaign 100) and (uid 6, campaign 200) are listed twice: kept once, positive as either row is;
    # then half of each campaign's positives and of its negatives, rounded half up, are seeds
    assert campaigns["seed_positives"] == [1, 2, 2, 2]
    assert campaigns["stage1_rows"] == [3, 3, 4, 4] and campaigns["stage2_rows"] == [2, 2, 2, 2]
    assert campaigns["split"].count("train") == 2
    for split, positives in zip(campaigns["split"], campaigns["seed_positives"], strict=True):
        assert split == "train" or split == ("test_cold" if positives <= 1 else "test_hot")


def test_truncation_keeps_last_or_most_frequent_ids(tmp_path):
    kept = {}
    for keep in ("last", "most_frequent"):
        spec = json.loads(json.dumps(SPEC))
        spec["users"]["columns"]["liked"]["keep"] = keep
        path = write_tables(tmp_path / keep, spec=spec)
        preprocess_tables(str(path), str(tmp_path / f"ds-{keep}"), progress=False)
        kept[keep] = load_features(str(tmp_path / f"ds-{keep}")).users.lists.tolist()
    # last: user 1 keeps 11 12, user 4 keeps 10 14; codes by first appearance among the kept ids
    assert kept["last"] == [[1, 2], [1, 0], [0, 0], [3, 4], [3, 0], [5, 1]]
    # most frequent overall: 10 and 11 (3 users each) before 12 and 13 (2), then 14
    assert kept["most_frequent"] == [[1, 2], [2, 0], [0, 0], [1, 3], [1, 0], [2, 4]]


def test_sampled_negatives_and_time_split(tmp_path):
    spec = json.loads(json.dumps(SPEC))
    spec["events"]["labels"] = {"kind": "sampled", "ratio": 1, "seed": 5}
    spec["split"] = {"kind": "time", "cutoff": 10}
    spec["stages"] = {"kind": "time", "fraction": 0.5}
    positives = [i for i, label in enumerate(EVENTS["label"]) if label]
    events = {k: [v[i] for i in positives] for k, v in EVENTS.items() if k != "label"}
    preprocess_tables(str(write_tables(tmp_path / "t", events=events, spec=spec)), str(tmp_path / "ds"), progress=False)
    campaigns = load_campaign_frame(str(tmp_path / "ds"))
    # campaigns starting after the cutoff (300 at 30, 400 at 40) are the test campaigns
    assert dict(zip(campaigns["aid"], campaigns["split"] == "train", strict=True)) == {
        100: True, 200: True, 300: False, 400: False}
    converters = {c: {u for u, cc in zip(events["uid"], events["campaign"], strict=True) if cc == c}
                  for c in CAMPAIGNS["campaign"]}
    for split in SPLITS:
        for stage in (1, 2):
            rows = load_rows(str(tmp_path / "ds"), split, stage)
            uids = load_features(str(tmp_path / "ds")).users.uid[rows.user.numpy()]
            aids = campaigns["aid"].to_numpy()[rows.campaign.numpy()]
            for aid, uid, label in zip(aids, uids, rows.label.tolist(), strict=True):
                assert (uid in converters[aid]) == (label == 1)  # negatives are never converters
            assert rows.label.sum() * 2 == len(rows)  # one negative per positive
    # by time, a campaign's earliest converters are its seeds: campaign 100's are uid 1 (times 0 and 4), then 2
    train1 = load_rows(str(tmp_path / "ds"), "train", 1, campaigns=[0])
    seeds = load_features(str(tmp_path / "ds")).users.uid[train1.user[train1.label == 1].numpy()]
    assert seeds.tolist() == [1]


def test_cli_imports_tables_and_reads_the_hierarchy(tmp_path, capsys):
    spec = write_tables(tmp_path / "t", "csv")
    assert main(["preprocess", "--source", "tables", "--spec", str(spec), "--output", str(tmp_path / "ds"),
                 "--seed", "4"]) == 0
    assert load_schema(str(tmp_path / "ds")).provenance["spec"]["split"]["seed"] == 4
    assert main(["preprocess", "--source", "tables", "--output", str(tmp_path / "ds2")]) == 2
    assert "--source tables needs --spec" in capsys.readouterr().err


def _changed(table: dict, **columns) -> dict:
    return {**table, **columns}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users": {k: v for k, v in USERS.items() if k != "gender"}}, "users.parquet: no column 'gender'"),
        ({"events": {k: v for k, v in EVENTS.items() if k != "time"}}, "events.csv: no column 'time'"),
        ({"users": _changed(USERS, age=[18, 25, "old", 47, 60, 25])},
         "users.csv row 3: column 'age' holds 'old', expected a number"),
        ({"events": _changed(EVENTS, uid=["1", "2", "x", *map(str, EVENTS["uid"][3:])])},
         "events.csv row 3: column 'uid' holds 'x', expected an integer user id"),
        ({"events": _changed(EVENTS, label=[1, 1, 2, *EVENTS["label"][3:]])},
         "events.parquet row 3: column 'label' holds '2', expected a label 0 or 1"),
        ({"events": _changed(EVENTS, uid=[1, 2, 77, *EVENTS["uid"][3:]])},
         "events.parquet row 3: uid 77 is not in users.parquet"),
        ({"events": _changed(EVENTS, campaign=[100, 100, 999, *EVENTS["campaign"][3:]])},
         "events.parquet row 3: campaign 999 is not in campaigns.parquet"),
        ({"events": {k: v[:18] for k, v in EVENTS.items()}},
         "campaigns.parquet row 4: campaign campaign 400 has no events"),
        ({"spec": {**SPEC, "users": {**SPEC["users"], "columns": {
            **SPEC["users"]["columns"], "liked": {**SPEC["users"]["columns"]["liked"], "on_long": "fail"}}}}},
         "users.parquet row 1: column 'liked' has 3 ids, more than users.columns.liked.max_length = 2"),
        ({"users": _changed(USERS, uid=[1, 2, 3, 4, 5, 1])}, "users.parquet row 6: uid 1 appeared before"),
    ],
)
def test_bad_tables_fail_with_table_column_and_row(tmp_path, change, message):
    fmt = "csv" if ".csv" in message else "parquet"
    path = write_tables(tmp_path / "t", fmt, **change)
    with pytest.raises(InputError, match=message):
        preprocess_tables(str(path), str(tmp_path / "ds"), progress=False)
    assert not (tmp_path / "ds").exists()  # nothing published


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users": {"columns": {"age": {"type": "numeric", "buckets": "x"}}}},
         "spec.yaml: users.columns.age.buckets: expected an integer >= 2, got 'x'"),
        ({"users": {"columns": {"liked": {"type": "list"}}}}, "spec.yaml: users.columns.liked.max_length: missing"),
        ({"users": {"columns": {"age": {"type": "integer"}}}},
         "spec.yaml: users.columns.age.type: expected one of categorical, list, numeric, got 'integer'"),
        ({"campaigns": {"hierarchy": ["advertiser"]}},
         "spec.yaml: campaigns.hierarchy: 'advertiser' is not one of campaigns.columns"),
        ({"split": {"kind": "random", "test_fraction": 2}},
         r"spec.yaml: split.test_fraction: expected a number in \[0, 1\], got '2'"),
        ({"events": {"labels": {"kind": "sampled", "ratio": 0}}},
         "spec.yaml: events.labels.ratio: expected a number > 0"),
        ({"events": {"lables": {}}}, "spec.yaml: events.lables: unknown key"),
    ],
)
def test_spec_errors_name_the_key(tmp_path, change, message):
    spec = json.loads(json.dumps(SPEC))
    for section, values in change.items():
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(spec[section].get(key), dict) and key != "labels":
                spec[section][key] = {**spec[section][key], **value}
            else:
                spec[section][key] = value
    path = write_tables(tmp_path / "t", spec=spec)
    with pytest.raises(InputError, match=message):
        load_spec(str(path))


def test_csv_list_column_needs_a_separator(tmp_path):
    spec = json.loads(json.dumps(SPEC))
    del spec["users"]["columns"]["liked"]["separator"]
    with pytest.raises(InputError, match="users.columns.liked.separator: missing: a list column of a CSV table"):
        load_spec(str(write_tables(tmp_path / "t", "csv", spec=spec)))


def test_tables_on_gcs(tmp_path, gcs_bucket):
    spec = write_tables(tmp_path / "t")
    for path in spec.parent.iterdir():
        storage.upload(path, f"gs://{gcs_bucket}/t/{path.name}")
    preprocess_tables(f"gs://{gcs_bucket}/t/spec.yaml", f"gs://{gcs_bucket}/ds", progress=False)
    preprocess_tables(str(spec), str(tmp_path / "ds"), progress=False)
    assert content(f"gs://{gcs_bucket}/ds") == content(str(tmp_path / "ds"))


MOVIELENS = Path(__file__).resolve().parents[2] / "shared/data/movielens-100k"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples/movielens"


@pytest.mark.skipif(not MOVIELENS.exists(), reason=f"no MovieLens-100k at {MOVIELENS} (research use only)")
def test_movielens_example_imports(tmp_path):
    import subprocess
    import sys

    subprocess.run([sys.executable, str(EXAMPLE / "make_tables.py"), "--ratings", str(MOVIELENS), "--output",
                    str(tmp_path / "tables")], check=True, capture_output=True)
    tables = str(tmp_path / "tables")
    argv = ["preprocess", "--source", "tables", "--spec", str(EXAMPLE / "spec.yaml"), "--input", tables]
    assert main([*argv, "--output", str(tmp_path / "ds")]) == 0
    events = pq.read_table(tmp_path / "tables/events.parquet")
    campaigns = load_campaign_frame(str(tmp_path / "ds"))
    schema = load_schema(str(tmp_path / "ds"))
    assert schema.hierarchy == ["genre", "decade"]
    users = load_features(str(tmp_path / "ds")).users
    assert len(users) == pq.read_metadata(tmp_path / "tables/users.parquet").num_rows
    assert len(campaigns) == pq.read_metadata(tmp_path / "tables/campaigns.parquet").num_rows
    rows = [load_rows(str(tmp_path / "ds"), s, k) for s in SPLITS for k in (1, 2)]
    assert sum(len(r) for r in rows) == len(events)  # every (user, movie) event once, in one stage
    assert sum(int(r.label.sum()) for r in rows) == sum(events.column("label").to_pylist())
    # by time: the campaigns whose first rating is after the cutoff are the test campaigns
    spec = yaml.safe_load((EXAMPLE / "spec.yaml").read_text())
    starts = pq.read_table(tmp_path / "tables/campaigns.parquet").to_pydict()
    cutoff = sorted(starts["start"])[100]
    spec["split"] = {"kind": "time", "cutoff": cutoff}
    (tmp_path / "time.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main([*argv[:4], str(tmp_path / "time.yaml"), *argv[5:], "--output", str(tmp_path / "by-time")]) == 0
    by_time = load_campaign_frame(str(tmp_path / "by-time"))
    start = dict(zip(starts["campaign"], starts["start"], strict=True))
    assert all((s == "train") == (start[a] <= cutoff) for a, s in zip(by_time["aid"], by_time["split"], strict=True))


def test_gzip_csv_and_missing_campaign_attributes(tmp_path):
    import gzip

    campaigns = _changed(CAMPAIGNS, decade=["1990", None, "1980", "1970"])
    spec_path = write_tables(tmp_path / "t", "csv", campaigns=campaigns)
    events = tmp_path / "t/events.csv"
    (tmp_path / "t/events.csv.gz").write_bytes(gzip.compress(events.read_bytes()))
    events.unlink()
    spec = yaml.safe_load(spec_path.read_text())
    spec["events"]["table"] = "events.csv.gz"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    preprocess_tables(str(spec_path), str(tmp_path / "ds"), progress=False)
    decade = load_campaign_frame(str(tmp_path / "ds"))["decade"].tolist()
    assert decade == [3, 0, 2, 1]  # sorted values from 1, a missing one 0
