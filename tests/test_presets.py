"""The Tencent raw files and the official pickles are presets of the tables spec, read by the one builder:
their datasets are those the separate code paths wrote before (digests captured at commit d5a27f8, before
the builder existed), and the Tencent files turned into plain tables give the same dataset."""

import hashlib
import json
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from metaheac.data.config import FieldConfig, PreprocessConfig
from metaheac.data.errors import InputError
from metaheac.data.official import import_official
from metaheac.data.preprocess import preprocess_raw
from metaheac.data.tables import preprocess_tables
from tests.rawfiles import ADS, SAMPLE, STAGE1, STAGE2, USERS, write_raw


def content(folder: Path) -> dict:
    """Every table, the campaign vocabulary and the schema (less its provenance) of a local dataset."""
    out: dict = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.suffix == ".parquet":
            out[name] = pq.read_table(path).to_pydict()
        elif path.name == "schema.json":
            out[name] = {k: v for k, v in json.loads(path.read_text()).items() if k != "provenance"}
        elif path.name == "campaign_vocab.json":
            out[name] = json.loads(path.read_text())
    return out


def digest(folder: Path) -> str:
    return hashlib.sha256(json.dumps(content(folder), sort_keys=True).encode()).hexdigest()[:16]


SAME = "9d5ed274fdbafd07"  # the fixture's dataset, also when the bad rows below are skipped


@pytest.mark.parametrize(
    ("change", "config", "expected"),
    [
        ({}, {"cold_threshold": 1}, SAME),
        ({"newline": "\r\n"}, {"cold_threshold": 1}, SAME),
        ({}, {"cold_threshold": 1, "seed": 7, "test_fraction": 1.0}, "d207defd6b47c43c"),
        ({}, {"cold_threshold": 0, "test_fraction": 1.0}, "928bf82cfe9e14bb"),
        ({"stage1": [*STAGE1, "200,11,1", "200,12,1", "300,12,1"]}, {"cold_threshold": -1, "test_fraction": 1.0},
         "850ed2b0ebcb373f"),
        ({"stage1": [*STAGE1, "100,11,-1", "100,12,1", "100,12,1"]}, {"cold_threshold": 1}, "fac7a2411b5dedf9"),
        ({"users": [*USERS, "uid 11|age 2"]}, {"cold_threshold": 1, "on_error": "skip"}, SAME),
        ({"stage1": [*STAGE1, "999,11,1"]}, {"cold_threshold": 1, "on_error": "skip"}, SAME),
        ({"stage2": [*STAGE2, "100,77,1"]}, {"cold_threshold": 1, "on_error": "skip"}, SAME),
        ({"stage1": [*STAGE1[:5], "300,15,-1", "300,11,-1"]}, {"cold_threshold": 1, "on_error": "skip"},
         "b393fb42eefe35ba"),
    ],
)
def test_raw_preset_writes_the_dataset_the_raw_path_wrote(tmp_path, change, config, expected):
    raw = write_raw(tmp_path / "raw", **change)
    preprocess_raw(str(raw), str(tmp_path / "ds"), PreprocessConfig(**config), progress=False)
    assert digest(tmp_path / "ds") == expected


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"no real official sample at {SAMPLE}")
def test_official_preset_writes_the_dataset_the_official_path_wrote(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        provenance = import_official(str(SAMPLE), str(tmp_path / "ds"), PreprocessConfig(), allow_pickle=True)
    assert digest(tmp_path / "ds") == "8dc5a61d052fb1be"
    # distinct official users may share every feature: their rows stay, one each, as before
    assert provenance["problems"]["skipped"] == {"duplicate_pairs_kept": 7}


def _tencent_as_tables(folder: Path, fields: FieldConfig) -> Path:
    """The fixture's raw files as Parquet tables and a spec saying what the Tencent preset says."""
    folder.mkdir()
    users = [dict(part.split(" ", 1) for part in line.split("|")) for line in USERS]
    table = {"uid": [int(u["uid"]) for u in users]}
    table |= {n: [int(u[n]) if n in u else None for u in users] for n in fields.user_single}
    table |= {n: [[int(v) for v in u.get(n, "").split()] for u in users] for n in fields.user_lists}
    pq.write_table(pa.table(table), folder / "users.parquet")
    header, *ads = (line.split(",") for line in ADS)
    pq.write_table(pa.table({h: [int(a[i]) for a in ads] for i, h in enumerate(header)}), folder / "campaigns.parquet")
    events = [(*map(int, line.split(",")), stage) for stage, lines in ((1, STAGE1[1:]), (2, STAGE2)) for line in lines]
    pq.write_table(pa.table({"aid": [e[0] for e in events], "uid": [e[1] for e in events],
                             "label": [int(e[2] == 1) for e in events], "stage": [e[3] for e in events]}),
                   folder / "events.parquet")
    spec = {
        "users": {"table": "users.parquet", "id": "uid", "columns": {
            **{n: {"type": "categorical"} for n in fields.user_single},
            **{n: {"type": "list", "max_length": k} for n, k in fields.user_lists.items()}}},
        "campaigns": {"table": "campaigns.parquet", "id": "aid", "columns": fields.campaign_fields,
                      "hierarchy": fields.hierarchy},
        "events": {"table": "events.parquet", "user": "uid", "campaign": "aid",
                   "labels": {"kind": "binary", "column": "label"}},
        "stages": {"kind": "column", "column": "stage"},
        "split": {"kind": "random", "test_fraction": 0.5, "seed": 2020},
        "cold_threshold": 1,
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "spec.yaml"


def test_tencent_files_as_plain_tables_give_the_same_dataset(tmp_path):
    preprocess_raw(str(write_raw(tmp_path / "raw")), str(tmp_path / "raw-ds"), PreprocessConfig(cold_threshold=1),
                   progress=False)
    spec = _tencent_as_tables(tmp_path / "tables", FieldConfig())
    preprocess_tables(str(spec), str(tmp_path / "tables-ds"), progress=False)
    assert content(tmp_path / "tables-ds") == content(tmp_path / "raw-ds")


def test_duplicate_campaign_ids_are_one_line(tmp_path):
    raw = write_raw(tmp_path / "raw", ads=[*ADS, "100,1,2,3,4,5,6,7"])
    with pytest.raises(InputError, match=r"adFeature.csv: aid 100 appears more than once"):
        preprocess_raw(str(raw), str(tmp_path / "ds"), PreprocessConfig(), progress=False)
