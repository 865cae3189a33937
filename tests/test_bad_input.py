"""Bad input through the CLI: exit 2 and one bounded line naming the file; compressed and BOM inputs
read as plain ones; conflicting labels merged and counted; a bug keeps its traceback (exit 1)."""

from __future__ import annotations

import bz2
import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rawfiles import ADS, STAGE1, write_raw

from metaheac.cli import main
from metaheac.data.config import PreprocessConfig
from metaheac.data.errors import InputError
from metaheac.data.preprocess import preprocess_raw
from metaheac.online.seed_sets import read_uids
from metaheac.steps.preprocess import Preprocess


def config(**changes: object) -> PreprocessConfig:
    return PreprocessConfig(cold_threshold=-1, **changes)  # type: ignore[arg-type]


def fails(argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> str:
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()  # progress bars may come first
    assert code == 2 and lines, lines
    assert lines[-1].startswith(f"metaheac {argv[0]}: error: ") and message in lines[-1], lines[-1]
    assert len(lines[-1]) < 600
    return lines[-1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad-input")
    preprocess_raw(str(write_raw(root / "raw")), str(root / "ds"), config(), progress=False)
    return root / "ds"


def test_compressed_and_bom_inputs_read_as_plain_ones(tmp_path: Path, dataset: Path) -> None:
    raw = write_raw(tmp_path / "raw")
    user_file = raw / "userFeature.data"
    user_file.write_bytes(gzip.compress(user_file.read_bytes()))  # gzip under the plain name
    train = raw / "train.csv"
    (raw / "train.csv.bz2").write_bytes(bz2.compress(b"\xef\xbb\xbf" + train.read_bytes()))  # and a BOM
    train.unlink()
    ads = raw / "adFeature.csv"
    ads.write_bytes(b"\xef\xbb\xbf" + ads.read_bytes())
    preprocess_raw(str(raw), str(tmp_path / "ds"), config(), progress=False)
    for name in ("users.parquet", "campaigns.parquet", "rows/split=train/stage=1/part-0.parquet"):
        assert pq.read_table(tmp_path / "ds" / name).equals(pq.read_table(dataset / name)), name


def test_corrupt_compressed_input_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write_raw(tmp_path / "raw")
    (raw / "userFeature.data").write_bytes(gzip.compress(b"uid 1|age 2\n" * 1000)[:60])
    fails(["preprocess", "--input", str(raw), "--output", str(tmp_path / "ds")], capsys,
          f"{raw}/userFeature.data: corrupt gzip data")


def test_conflicting_labels_are_kept_once_as_positive_and_counted(tmp_path: Path) -> None:
    # (100, 12) is negative then positive; (100, 11) is listed twice with one label.
    raw = write_raw(tmp_path / "raw", stage1=[*STAGE1, "100,12,1", "100,11,1"])
    provenance = preprocess_raw(str(raw), str(tmp_path / "ds"), config(), progress=False)
    skipped = provenance["problems"]["skipped"]
    assert (skipped["duplicate_pairs"], skipped["conflicting_labels"]) == (2, 1)
    campaigns = pd.read_parquet(tmp_path / "ds" / "campaigns.parquet")
    split = campaigns.set_index("aid").loc[100, "split"]
    rows = pd.read_parquet(tmp_path / "ds" / f"rows/split={split}/stage=1/part-0.parquet")
    campaign = int(campaigns.set_index("aid").loc[100, "campaign"])
    assert sorted(rows[rows["campaign"] == campaign]["label"]) == [1, 1]  # uids 11 and 12, once each


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"train.csv": ""}, "train.csv is empty: expected the header"),
        ({"test1_truth.csv": ""}, "test1_truth.csv is empty"),
        ({"adFeature.csv": "aid,advertiserId\n\xff\n"}, "adFeature.csv line 1: missing column(s)"),
        ({"adFeature.csv": "\n".join([*ADS[:3], "-1,2,3,3,4,6,6,7"])}, "adFeature.csv line 4: aid -1 is negative"),
        ({"userFeature.data": "uid 11|" + "x" * 2_000_000 + " 5\n"}, "userFeature.data line 1: unknown field name"),
    ],
)
def test_bad_raw_files_exit_2_in_one_bounded_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   files: dict[str, str], message: str) -> None:
    raw = write_raw(tmp_path / "raw")
    for name, text in files.items():
        (raw / name).write_text(text)
    fails(["preprocess", "--input", str(raw), "--output", str(tmp_path / "ds")], capsys, message)


def test_skipped_garbage_stays_small_in_the_provenance(tmp_path: Path) -> None:
    raw = write_raw(tmp_path / "raw")
    with open(raw / "userFeature.data", "a") as f:
        f.write("y" * 5_000_000 + "\n")
    preprocess_raw(str(raw), str(tmp_path / "ds"), config(on_error="skip"), progress=False)
    assert (tmp_path / "ds" / "schema.json").stat().st_size < 20_000
    examples = json.loads((tmp_path / "ds" / "schema.json").read_text())["provenance"]["problems"]["examples"]
    assert len(examples) == 1 and "(5,000,000 characters)" in examples[0]


def broken_copy(dataset: Path, folder: Path, schema: dict | None = None, text: bytes | None = None) -> Path:
    shutil.copytree(dataset, folder)
    if schema is not None:
        (folder / "schema.json").write_text(json.dumps(schema))
    if text is not None:
        (folder / "schema.json").write_bytes(text)
    return folder


def train(dataset: Path, tmp_path: Path) -> list[str]:
    return ["train", "--dataset", str(dataset), "--output", str(tmp_path / "model"), "--method", "LR",
            "--max-steps", "1", "--device", "cpu"]


def test_datasets_are_validated_on_load(tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = json.loads((dataset / "schema.json").read_text())

    def changed(key: str, index: int, **field: int) -> dict:
        copy = json.loads(json.dumps(schema))
        copy[key][index] |= field
        return copy

    interest = schema["user_lists"][0]
    cases = [
        (broken_copy(dataset, tmp_path / "a", text=b"\x00not json"), "a/schema.json: not JSON"),
        (broken_copy(dataset, tmp_path / "b", changed("user_lists", 0, vocab_size=2)),
         f"b/users.parquet: column {interest['name']} has id"),
        (broken_copy(dataset, tmp_path / "c", changed("user_lists", 0, length=interest["length"] + 1)),
         f"c/users.parquet: list field {interest['name']} holds {interest['length']} ids"),
        (broken_copy(dataset, tmp_path / "d", changed("user_single", 0, vocab_size=10**9)),
         "GiB of memory and cpu has"),
    ]
    for folder, message in cases:
        fails(train(folder, tmp_path), capsys, message)
    assert not (tmp_path / "model").exists()


def test_generate_refuses_what_memory_cannot_hold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(["generate", "--output", str(tmp_path / "g"), "--users", "10000000000"], capsys,
          "generating 10,000,000,000 users and about")
    assert not (tmp_path / "g").exists()


def test_evaluate_without_scored_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s").mkdir()
    empty = pd.DataFrame({"campaign": [], "user": [], "label": [], "score": [], "split": [], "method": []})
    empty.to_parquet(tmp_path / "s" / "scores.parquet")
    fails(["evaluate", "--scores", str(tmp_path / "s"), "--output", str(tmp_path / "e")], capsys, "no scored rows in")


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"12\n\x00\xff\xfe\n", "seeds.txt: not text (byte 4 is 0xff)"),
     (b"12\n99999999999999999999\n", "seeds.txt line 2: expected one integer uid below 2**63"),
     (b"\xef\xbb\xbfuid\n12\n", None)],
)
def test_seed_files(tmp_path: Path, content: bytes, message: str | None) -> None:
    (tmp_path / "seeds.txt").write_bytes(content)
    if message is None:
        assert read_uids(str(tmp_path / "seeds.txt")).tolist() == [12]
        return
    with pytest.raises(InputError, match=message.replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")):
        read_uids(str(tmp_path / "seeds.txt"))
    pq.write_table(pa.table({"user": [1]}), tmp_path / "s.parquet")
    with pytest.raises(InputError, match="s.parquet: no `uid` column"):
        read_uids(str(tmp_path / "s.parquet"))


def test_parquet_seed_uids_may_be_digits_as_text(tmp_path: Path) -> None:
    pq.write_table(pa.table({"uid": ["12", " 7"]}), tmp_path / "s.parquet")
    assert read_uids(str(tmp_path / "s.parquet")).tolist() == [12, 7]
    pq.write_table(pa.table({"uid": ["12", "u7"]}), tmp_path / "s.parquet")
    with pytest.raises(InputError, match="column `uid` holds text that is not an integer uid, e.g. 'u7'"):
        read_uids(str(tmp_path / "s.parquet"))
    pq.write_table(pa.table({"uid": [1.5]}), tmp_path / "s.parquet")
    with pytest.raises(InputError, match="column `uid` is double, expected integer uids"):
        read_uids(str(tmp_path / "s.parquet"))


def test_a_bug_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Preprocess) -> dict:
        raise ValueError("an internal bug")  # not an InputError: not the user's fault

    monkeypatch.setattr(Preprocess, "run", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["preprocess", "--input", str(tmp_path), "--output", str(tmp_path / "ds")])
