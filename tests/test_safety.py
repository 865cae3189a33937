"""No data lost, round two (issue 20): every writing step claims its output, a model is checked against its
sha256 and against the dataset it is used with, the registry creates versions once and keeps its
pointers in their folder, arguments are bounded, a full disk and a non-regular input are one line."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from metaheac.cli import main
from metaheac.data.errors import InputError
from metaheac.online.model_registry import POINTER_FILE, RECORD_FILE, publish, resolve_model
from metaheac.runtime.outputs import OutputError
from metaheac.steps.catalog import STEPS
from tests.online_helpers import seed_sets


def one_line(err: str) -> str:
    """The one error line a failed command printed last (above it only progress bars and logs)."""
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("metaheac "), err
    return line


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """raw -> dataset -> a 2-step MetaHeac model; a smaller dataset (other vocabularies); a rebuild of the
    first one (another split); a seed-set folder."""
    root = tmp_path_factory.mktemp("safety")
    for name, users, seed in (("raw", 1500, 3), ("raw-small", 400, 4)):
        assert main(["generate", "--output", str(root / name), "--users", str(users), "--campaigns", "12",
                     "--seed", str(seed)]) == 0
    for raw, dataset, split in (("raw", "ds", "1"), ("raw-small", "small", "1"), ("raw", "rebuilt", "2")):
        assert main(["preprocess", "--input", str(root / raw), "--output", str(root / dataset),
                     "--cold-threshold", "15", "--seed", split]) == 0
    assert main(["train", "--dataset", str(root / "ds"), "--output", str(root / "model"), "--method", "MetaHeac",
                 "--max-steps", "2", "--embedding-dim", "8", "--device", "cpu"]) == 0
    seed_sets(root / "seeds", root / "ds")
    (root / "seeds" / "bad.txt").unlink()  # every seed set good: a failure below is the step's, not a seed's
    (root / "seeds" / "bad.json").unlink()
    assert main(["expand_shard", "--dataset", str(root / "ds"), "--model", str(root / "model"), "--seeds",
                 str(root / "seeds"), "--output", str(root / "part"), "--top-n", "5"]) == 0
    return root


def inside(chain: Path) -> dict[str, list[str]]:
    """Every registered step's arguments, with its output inside one of its inputs (a step without
    inputs: a foreign folder, or a file in the way)."""
    ds, model, seeds, part = chain / "ds", chain / "model", chain / "seeds", chain / "part"
    return {
        "generate": ["--output", str(seeds)],
        "preprocess": ["--input", str(chain / "raw"), "--output", str(chain / "raw" / "ds")],
        "train": ["--dataset", str(ds), "--output", str(ds / "model"), "--max-steps", "1", "--device", "cpu"],
        "adapt": ["--dataset", str(ds), "--model", str(model), "--output", str(model / "scores"), "--device", "cpu"],
        "evaluate": ["--scores", str(part), "--output", str(part / "eval")],
        "expand": ["--dataset", str(ds), "--model", str(model), "--seeds", str(seeds / "known.txt"), "--aid", "1",
                   "--output", str(ds / "users.parquet"), "--overwrite", "--device", "cpu"],
        "demo": ["--output", str(ds / "users.parquet"), "--users", "300", "--campaigns", "6", "--methods", "LR"],
        "publish": ["--model", str(model), "--registry", str(model / "registry")],
        "expand_shard": ["--dataset", str(ds), "--model", str(model), "--seeds", str(seeds),
                         "--output", str(seeds / "out")],
        "merge_audiences": ["--parts", str(part), "--output", str(part / "merged")],
    }


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_step_refuses_an_output_inside_an_input(name: str, chain: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A new step must be added here: its output claimed (`outputs.claim`) before it writes."""
    argv = inside(chain)[name]
    before = {p: p.stat().st_mtime_ns for p in chain.rglob("*")}
    capsys.readouterr()
    assert main([name, *argv]) == 2
    assert "refusing to write" in one_line(capsys.readouterr().err)
    assert {p: p.stat().st_mtime_ns for p in chain.rglob("*")} == before  # nothing written, nothing lost


def test_expand_shard_merge_and_publish_never_replace_a_foreign_folder(chain: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    common = ["--dataset", str(chain / "ds"), "--model", str(chain / "model"), "--seeds", str(chain / "seeds")]
    assert main(["expand_shard", *common, "--output", str(foreign), "--top-n", "5"]) == 2
    assert main(["merge_audiences", "--parts", str(chain / "seeds"), "--output", str(foreign)]) == 2
    registry = tmp_path / "registry"
    assert main(["publish", "--model", str(chain / "model"), "--registry", str(registry), "--output",
                 str(foreign)]) == 2  # the gate's folder is claimed before anything is published
    assert capsys.readouterr().err.count("not written by metaheac") == 3
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert not registry.exists()


class Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def published_copy(chain: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(chain / "model", copy)
    return copy


@pytest.mark.parametrize("damage", ["truncated", "pickle", "flipped"])
def test_publish_refuses_a_damaged_model_and_leaves_latest(damage: str, chain: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    model, registry = published_copy(chain, tmp_path), tmp_path / "registry"
    assert main(["publish", "--model", str(model), "--registry", str(registry)]) == 0
    good = resolve_model(str(registry / "metaheac"))
    weights = model / "model.pt"
    data = bytearray(weights.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "pickle":  # a payload that would leave a file, were it ever unpickled
        data = bytearray(pickle.dumps({"weight": Payload(str(tmp_path / "pwned"))}))
    else:
        data[-400:-200] = bytes(b ^ 0xFF for b in data[-400:-200])
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["publish", "--model", str(model), "--registry", str(registry)]) == 2
    assert "its sha256" in one_line(capsys.readouterr().err)
    assert resolve_model(str(registry / "metaheac")) == good
    assert not (tmp_path / "pwned").exists()
    # a published version damaged in place is refused too, wherever it is loaded
    version = Path(good.uri) / "model.pt"
    version.write_bytes(bytes(data))
    assert main(["expand", "--dataset", str(chain / "ds"), "--model", str(registry / "metaheac"), "--seeds",
                 str(chain / "seeds" / "known.txt"), "--aid", "1", "--output", str(tmp_path / "a.parquet"),
                 "--device", "cpu"]) == 2
    assert "its sha256" in one_line(capsys.readouterr().err)


def test_concurrent_publishes_of_one_model_get_one_version_or_a_refusal(chain: Path, tmp_path: Path) -> None:
    registry = str(tmp_path / "registry")
    now = pd.Timestamp("2031-02-03 04:05:06", tz="UTC").to_pydatetime()
    start = threading.Barrier(4)
    results: dict[str, object] = {}

    def run(run_id: str) -> None:
        start.wait()
        try:
            results[run_id] = publish(str(chain / "model"), registry, run_id=run_id, now=now)
        except OutputError as error:
            results[run_id] = error

    threads = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [r for r, value in results.items() if not isinstance(value, OutputError)]
    assert len(won) == 1, results  # one version, the others refused in one line
    for value in results.values():
        assert not isinstance(value, OutputError) or "\n" not in str(value)
    version = Path(resolve_model(f"{registry}/metaheac").uri)
    assert version.name.startswith("20310203T040506.000Z-")
    assert json.loads((version / RECORD_FILE).read_text())["pipeline_run_id"] == won[0]


def test_killed_publish_debris_is_cleaned_by_the_next(chain: Path, tmp_path: Path) -> None:
    name = tmp_path / "registry" / "metaheac"
    name.mkdir(parents=True)
    staging = name / f".20200101T000000Z-deadbeef.{'a' * 32}.staging"
    staging.mkdir()
    (staging / "model.pt").write_bytes(b"x" * 1000)
    claimed = name / "20200101T000000Z-deadbeef"
    claimed.mkdir()
    (claimed / "_METAHEAC").write_text('{"step": "publish"}')
    version = publish(str(chain / "model"), str(tmp_path / "registry")).version
    assert sorted(p.name for p in name.iterdir()) == sorted([POINTER_FILE, version])


@pytest.mark.parametrize("pointer", ['{"version": "../../../model"}', '{"version": "a/b"}', "{", "[]", '{"v": 1}'])
def test_a_pointer_names_a_version_of_its_folder(pointer: str, chain: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    registry = tmp_path / "registry"
    publish(str(chain / "model"), str(registry))
    (registry / "metaheac" / POINTER_FILE).write_text(pointer)
    with pytest.raises(InputError, match="LATEST.json: expected"):
        resolve_model(str(registry / "metaheac"))
    assert main(["expand", "--dataset", str(chain / "ds"), "--model", str(registry / "metaheac"), "--seeds",
                 str(chain / "seeds" / "known.txt"), "--aid", "1", "--output", str(tmp_path / "a.parquet"),
                 "--device", "cpu"]) == 2
    assert "LATEST.json: expected" in one_line(capsys.readouterr().err)


def aid(chain: Path, dataset: str) -> str:
    return str(int(pd.read_parquet(chain / dataset / "campaigns.parquet")["aid"].iloc[0]))


def test_a_model_of_other_data_is_refused_by_every_step(chain: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    small, model = str(chain / "small"), str(chain / "model")
    seeds = str(chain / "seeds" / "known.txt")
    runs = {
        "adapt": ["--dataset", small, "--model", model, "--output", str(tmp_path / "s"), "--device", "cpu"],
        "expand": ["--dataset", small, "--model", model, "--seeds", seeds, "--aid", aid(chain, "small"),
                   "--output", str(tmp_path / "a.parquet"), "--device", "cpu"],
        "expand_shard": ["--dataset", small, "--model", model, "--seeds", str(chain / "seeds"),
                         "--output", str(tmp_path / "p")],
    }
    for name, argv in runs.items():
        capsys.readouterr()
        assert main([name, *argv]) == 2, name
        line = one_line(capsys.readouterr().err)
        assert f"the model {model}" in line and f"the dataset {small}" in line and "vocabulary" in line, line
    # scores adapted on the first dataset are not evaluated against the small one
    scores = str(tmp_path / "scores")
    assert main(["adapt", "--dataset", str(chain / "ds"), "--model", model, "--output", scores, "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--scores", scores, "--output", str(tmp_path / "e"), "--dataset", small]) == 2
    assert f"the dataset {small}" in one_line(capsys.readouterr().err)


def test_another_build_of_the_same_data_fits(chain: Path, tmp_path: Path) -> None:
    """Same raw files, another split: the same fields and vocabularies, so the model is used."""
    assert main(["expand", "--dataset", str(chain / "rebuilt"), "--model", str(chain / "model"), "--seeds",
                 str(chain / "seeds" / "known.txt"), "--aid", aid(chain, "rebuilt"), "--top-n", "10",
                 "--output", str(tmp_path / "a.parquet"), "--device", "cpu"]) == 0
    assert len(pd.read_parquet(tmp_path / "a.parquet")) == 10


PREPROCESS = ["preprocess", "--input", "r", "--output", "o"]


@pytest.mark.parametrize("argv,message", [
    ([*PREPROCESS, "--test-fraction", "2"], "--test-fraction 2.0: must be > 0 and < 1"),
    ([*PREPROCESS, "--test-fraction", "0"], "--test-fraction 0.0: must be > 0 and < 1"),
    ([*PREPROCESS, "--cold-threshold", "-5"], "--cold-threshold -5: must be >= -1"),
    (["train", "--dataset", "d", "--output", "o", "--max-steps", "-3"], "--max-steps -3: must be >= 1"),
    (["train", "--dataset", "d", "--output", "o", "--embedding-dim", "0"], "--embedding-dim 0: must be >= 1"),
    (["expand_shard", "--dataset", "d", "--model", "m", "--seeds", "s", "--output", "o", "--top-n", "0"],
     "--top-n 0: must be >= 1"),
    (["adapt", "--dataset", "d", "--model", "m", "--output", "o", "--lr", "0"], "--lr 0.0: must be > 0"),
])
def test_arguments_out_of_bounds_are_one_line(argv: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert one_line(capsys.readouterr().err) == f"metaheac {argv[0]}: error: {message}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dataset", str(chain / "ds"), "--output", str(tmp_path / "m"), "--device", "cuda"]) == 2
    assert "--device 'cuda': this machine has no CUDA" in one_line(capsys.readouterr().err)


def test_missing_seed_folder_and_escaping_negatives(chain: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--dataset", str(chain / "ds"), "--model", str(chain / "model"), "--top-n", "5"]
    assert main(["expand_shard", *common, "--seeds", str(tmp_path / "nope"), "--output", str(tmp_path / "p")]) == 2
    assert "nope: no such folder" in one_line(capsys.readouterr().err)
    seeds = tmp_path / "seeds"
    shutil.copytree(chain / "seeds", seeds)
    (seeds / "known.json").write_text(json.dumps({"aid": int(aid(chain, "ds")), "negatives": "../../seeds.txt"}))
    assert main(["expand_shard", *common, "--seeds", str(seeds), "--output", str(tmp_path / "p")]) == 0
    status = json.loads((tmp_path / "p" / "status.json").read_text())["campaigns"]
    assert status["known"]["status"] == "failed" and "must name a file beside it" in status["known"]["error"]


def test_config_without_its_model_key_is_one_line(chain: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    model = published_copy(chain, tmp_path)
    config = json.loads((model / "config.json").read_text())
    del config["model"]
    (model / "config.json").write_text(json.dumps(config))
    assert main(["publish", "--model", str(model), "--registry", str(tmp_path / "r")]) == 2
    assert "config.json: no 'model' key" in one_line(capsys.readouterr().err)


def test_a_retrained_folder_model_is_a_new_version(chain: Path, tmp_path: Path) -> None:
    """Audiences are kept per model version: a folder's version follows its weights, not its path."""
    model = published_copy(chain, tmp_path)
    first = resolve_model(str(model)).version
    assert main(["train", "--dataset", str(chain / "ds"), "--output", str(model), "--method", "MetaHeac",
                 "--max-steps", "1", "--embedding-dim", "8", "--device", "cpu"]) == 0
    assert first.startswith("sha256-") and resolve_model(str(model)).version not in (first, str(model))


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_non_regular_input_file_is_refused(kind: str, chain: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(chain / "raw", raw)
    (raw / "train.csv").unlink()
    if kind == "device":
        (raw / "train.csv").symlink_to("/dev/zero")
    else:
        os.mkfifo(raw / "train.csv")
    assert main(["preprocess", "--input", str(raw), "--output", str(tmp_path / "ds")]) == 2
    assert "train.csv: not a regular file" in one_line(capsys.readouterr().err)


def test_a_full_disk_is_one_line_and_keeps_the_old_output(chain: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """ENOSPC raised where the bytes are written (the real code path above it): named, old version kept."""
    model = published_copy(chain, tmp_path)
    before = (model / "model.pt").read_bytes()
    real = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if self.name == "model.pt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    assert main(["train", "--dataset", str(chain / "ds"), "--output", str(model), "--method", "MetaHeac",
                 "--max-steps", "1", "--embedding-dim", "8", "--device", "cpu"]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"metaheac train: error: cannot write {model}: No space left on device; free some space and rerun "
        "(what was there is intact)")
    assert (model / "model.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging left


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
def test_a_really_full_disk_during_preprocess(chain: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = subprocess.run([sys.executable, "-m", "metaheac.cli", "preprocess", "--input", str(chain / "raw"),
                                 "--output", str(disk / "ds")], capture_output=True, text=True)
        assert result.returncode == 2, result.stderr[-2000:]
        assert one_line(result.stderr) .startswith(f"metaheac preprocess: error: cannot write {disk / 'ds'}")
        assert sorted(p.name for p in disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)])
