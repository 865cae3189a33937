"""Outputs never destroy what is not ours, one writer per output, republishing keeps the old version.

The CLI runs `generate` and `preprocess` (no torch) on tiny data; GCS is the real emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from rawfiles import write_raw

from metaheac.cli import main
from metaheac.runtime import outputs, storage
from metaheac.runtime.outputs import OutputError, claim


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    if code:  # a failure is one line (a success may show progress bars)
        assert len(err.splitlines()) == 1, err
    return code, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def preprocess(raw: Path | str, out: Path | str, *extra: str) -> list[str]:
    return ["preprocess", "--input", str(raw), "--output", str(out), "--cold-threshold", "-1", *extra]


def test_output_equal_to_or_above_an_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write_raw(tmp_path / "raw")
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    for out in (raw, tmp_path, Path("/")):
        code, err = run_cli(preprocess(raw, out), capsys)
        assert code == 2 and f"refusing to write {out}: it is (or holds) the input {raw}" in err
    assert snapshot(tmp_path) == before


def test_existing_file_and_foreign_folder_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write_raw(tmp_path / "raw")
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0")
    code, err = run_cli(preprocess(raw, target.as_uri(), "--overwrite"), capsys)
    assert code == 2 and f"refusing to write {target}: an existing file" in err
    assert target.read_text() == "root:x:0:0"
    foreign = tmp_path / "photos"
    (foreign / "2024").mkdir(parents=True)
    (foreign / "2024" / "a.jpg").write_bytes(b"jpeg")
    for extra in ([], ["--overwrite"]):
        code, err = run_cli(preprocess(raw, foreign, *extra), capsys)
        assert code == 2 and "an existing folder not written by metaheac (1 files" in err
    assert snapshot(foreign) == {"2024/a.jpg": b"jpeg"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd", "photos", "raw"]  # no lock, no staging


def test_same_step_reruns_another_needs_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, other = write_raw(tmp_path / "raw"), tmp_path / "generated"
    assert run_cli(["generate", "--output", str(other), "--users", "100", "--campaigns", "8"], capsys)[0] == 0
    dataset = tmp_path / "ds"
    assert run_cli(preprocess(raw, dataset), capsys)[0] == 0
    # A killed run's leftovers: a staging folder beside the output, a temp file inside it.
    staging = tmp_path / f".ds.{'a' * 32}.staging"
    staging.mkdir()
    (dataset / f".users.parquet.{'b' * 32}.tmp").write_bytes(b"half")
    assert run_cli(preprocess(raw, dataset), capsys)[0] == 0  # the same step again
    assert not staging.exists() and not list(dataset.glob(".*.tmp"))
    assert json.loads((dataset / storage.OWNER_MARKER).read_text()) == {"step": "preprocess"}

    generated = snapshot(other)
    code, err = run_cli(preprocess(raw, other), capsys)
    assert code == 2 and "holds the output of `generate`; pass --overwrite" in err
    assert snapshot(other) == generated
    assert run_cli(preprocess(raw, other, "--overwrite"), capsys)[0] == 0
    assert storage.is_complete(str(other)) and "userFeature.data" not in snapshot(other)


def test_a_failed_claim_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), claim(str(tmp_path / "new"), "train"):
        raise RuntimeError("the step failed before writing")
    assert sorted(os.listdir(tmp_path)) == []


def test_a_second_local_writer_is_refused_until_the_first_dies(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    raw, dataset = write_raw(tmp_path / "raw"), tmp_path / "ds"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from metaheac.runtime.outputs import claim\n"
         f"with claim({str(dataset)!r}, 'preprocess'):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        code, err = run_cli(preprocess(raw, dataset), capsys)
        assert code == 2 and f"{dataset} is being written by `preprocess` (pid {holder.pid} on " in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / ".ds.lock").exists()  # a killed holder leaves its lock file: it is taken over
    assert run_cli(preprocess(raw, dataset), capsys)[0] == 0
    assert not (tmp_path / ".ds.lock").exists()


# --- GCS ----------------------------------------------------------------------------------------------


def test_gcs_lease_is_exclusive_expires_and_is_created_with_a_precondition(
    gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = f"gs://{gcs_bucket}/models/m"
    lease = f"gs://{gcs_bucket}/models/.m.lock"
    log: list[requests.Response] = []
    session = storage._client()._http
    session.hooks["response"].append(lambda response, *a, **k: log.append(response))
    try:
        with claim(target, "train"):
            # The emulator ignores preconditions: the request must still carry one for real GCS.
            creates = [r.url for r in log if "/upload/" in r.url and r.json()["name"] == "models/.m.lock"]
            assert len(creates) == 1 and "ifGenerationMatch=0" in creates[0]
            with pytest.raises(OutputError, match=rf"^{target} is being written by `train` \(pid {os.getpid()} on "):
                with claim(target, "train"):
                    pass
        assert not storage.exists(lease)  # released
    finally:
        session.hooks["response"].pop()

    dead = {"step": "train", "pid": 1, "host": "gone", "since": 0, "expires": time.time() - 1}
    storage.write_text(lease, json.dumps(dead))
    with claim(target, "train"):  # an expired lease is taken over
        assert json.loads(storage.read_text(lease))["pid"] == os.getpid()
    monkeypatch.setenv(outputs.LEASE_ENV, "0.6")
    with claim(target, "train"):
        first = json.loads(storage.read_text(lease))["expires"]
        time.sleep(0.5)
        assert json.loads(storage.read_text(lease))["expires"] > first  # renewed while held


def test_gcs_foreign_folder_and_existing_object_are_refused(gcs_bucket: str) -> None:
    storage.write_text(f"gs://{gcs_bucket}/data/report.csv", "theirs")
    for target, message in ((f"gs://{gcs_bucket}/data", "an existing folder not written by metaheac"),
                            (f"gs://{gcs_bucket}/data/report.csv", "an existing file")):
        with pytest.raises(OutputError, match=message):
            with claim(target, "preprocess"):
                pass
    assert storage.list_files(f"gs://{gcs_bucket}/data") == [f"gs://{gcs_bucket}/data/report.csv"]


def test_dot_segments_are_refused_and_the_cache_stays_in_its_root(gcs_bucket: str) -> None:
    for uri in (f"gs://{gcs_bucket}/a/../b", f"/gcs/{gcs_bucket}/../other/x", f"gs://{gcs_bucket}/./x"):
        with pytest.raises(storage.StorageError, match="'.' and '..' segments are not allowed"):
            storage.read_bytes(uri)
    # Object names may hold '//' or '..' (real GCS allows both; the emulator refuses '..'): a cached copy
    # must not escape the cache.
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    bucket = gcs.Client(project="local", credentials=AnonymousCredentials()).bucket(gcs_bucket)
    bucket.blob("ds//tmp/escape.txt").upload_from_string(b"x")
    with pytest.raises(storage.StorageError, match="would land outside the cache"):
        storage.fetch_dir(f"gs://{gcs_bucket}/ds")
    root = Path(os.environ[storage.CACHE_ENV])
    with pytest.raises(storage.StorageError, match="would land outside the cache"):
        storage._inside(root / "b" / "ds", "../../../escape.txt", "gs://b/ds/../../../escape.txt")
    assert not list(root.rglob("escape.txt"))


@pytest.fixture
def emulator_process(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """How to start a separate, disk-backed gcp-storage-emulator process (it survives a restart)."""
    port = _free_port()
    command = [str(Path(sys.executable).with_name("gcp-storage-emulator")), "start", "--port", str(port), "-q"]
    env = {**os.environ, "STORAGE_BASE": str(tmp_path / "emulator")}
    return command, {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", **{k: env[k] for k in ("STORAGE_BASE",)}}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            requests.get(f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b", timeout=0.2)
            return process
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("the emulator did not start")


def test_republishing_survives_the_emulator_killed_mid_publish(
    emulator_process: tuple[list[str], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    command, env = emulator_process
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(storage.DEADLINE_ENV, "1")
    server = start(command, env)
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage as gcs

        gcs.Client(project="local", credentials=AnonymousCredentials()).create_bucket("republish")
        target = "gs://republish/ds"
        with storage.publish_dir(target) as staging:
            for name in "abc":
                (staging / name).write_text(f"old {name}")
        with pytest.raises(storage.StorageError, match="cannot reach Google Cloud Storage"):
            with storage.publish_dir(target) as staging:
                for name in "abcdefgh":
                    (staging / name).write_bytes(name.encode() * (1 << 20))
                original = storage._upload_file

                def upload_then_die(local: str, uri: str) -> None:
                    original(local, uri)
                    if uri.endswith("/c"):  # the new version is half uploaded: SIGKILL the server
                        server.send_signal(signal.SIGKILL)
                        server.wait()

                monkeypatch.setattr(storage, "_upload_file", upload_then_die)
        monkeypatch.undo()
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        server = start(command, env)  # the same disk
        assert storage.is_complete(target)
        folder = storage.fetch_dir(target)
        assert {p.name: p.read_text() for p in folder.iterdir()} == {n: f"old {n}" for n in "abc"}
        stale = storage.clean_stale(target)  # what the next claim of the folder does
        assert len(stale) == 3 and all("/_v/" in s for s in stale)
        with storage.publish_dir(target) as staging:
            (staging / "d").write_text("new d")
        assert {p.name: p.read_text() for p in storage.fetch_dir(target).iterdir()} == {"d": "new d"}
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
