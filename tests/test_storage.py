"""metaheac.runtime.storage against the local filesystem and a real GCS emulator, through the real client."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import start_emulator
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from metaheac.runtime import storage
from metaheac.runtime.storage import StorageError


@pytest.fixture(params=["local", "file", "gs", "fuse"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A folder URI in each accepted spelling; tests build URIs with f-strings to keep that spelling."""
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "file":
        return (tmp_path / "root").as_uri()
    bucket = request.getfixturevalue("gcs_bucket")
    return f"gs://{bucket}/root" if request.param == "gs" else f"/gcs/{bucket}/root"


@pytest.fixture
def http_log(gcs_server: str) -> Iterator[list[requests.Response]]:
    """Every HTTP response the module's cached client receives while the test runs."""
    session = storage._client()._http
    log: list[requests.Response] = []

    def record(response: requests.Response, *args: object, **kwargs: object) -> None:
        log.append(response)

    session.hooks["response"].append(record)
    yield log
    session.hooks["response"].remove(record)


def media_downloads(log: list[requests.Response]) -> list[requests.Response]:
    return [r for r in log if r.request.method == "GET" and "alt=media" in r.url]


def uploaded_names(log: list[requests.Response]) -> list[str]:
    return [r.json()["name"] for r in log if r.request.method == "POST" and "/upload/" in r.url]


def published_names(folder: str) -> list[str]:
    """The files of a published folder's current version, relative to it, without the marker."""
    current = storage.published(folder)
    return [u[len(current) + 1 :] for u in storage.list_files(current) if not u.endswith("/_SUCCESS")]


def raises_one_line(text: str) -> pytest.RaisesExc[StorageError]:
    """Expect a StorageError whose message is one line containing `text`."""
    return pytest.raises(StorageError, match=rf"^[^\n]*{re.escape(text)}[^\n]*$")


# --- URIs -----------------------------------------------------------------------------------------------


def test_normalize_spellings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("/gcs/bkt/a/b") == "gs://bkt/a/b"
    assert storage.normalize("gs://bkt/a/b/") == "gs://bkt/a/b"
    assert storage.normalize("gs://bkt/") == "gs://bkt"
    assert storage.normalize("file:///a/b%20c") == "/a/b c"
    assert storage.normalize("file://localhost/a") == "/a"
    assert storage.normalize("rel/x") == str(tmp_path / "rel" / "x")
    assert storage.normalize(tmp_path / "p") == str(tmp_path / "p")
    assert storage.is_gcs("gs://bkt/x") and storage.is_gcs("/gcs/bkt/x")
    assert not storage.is_gcs("/gcsx/bkt") and not storage.is_gcs("file:///gcs/bkt")


def test_join() -> None:
    assert storage.join("gs://bkt", "a", "b/c") == "gs://bkt/a/b/c"
    assert storage.join("/gcs/bkt/a/", "/b/") == "gs://bkt/a/b"
    assert storage.join("/x/y", "z") == "/x/y/z"
    assert storage.join("file:///x", "a/b") == "/x/a/b"
    assert storage.join("gs://bkt/a") == "gs://bkt/a"


@pytest.mark.parametrize(
    "uri",
    ["gs://", "gs:///x", "/gcs/", "gs://Upper_Case/x", "gs://ab/x", "s3://bkt/x", "file://host/x", "file:rel"],
)
def test_malformed_uri(uri: str) -> None:
    with pytest.raises(StorageError, match=rf"^(malformed|unsupported) URI '{re.escape(uri)}'[^\n]*$"):
        storage.read_bytes(uri)


def test_empty_uri_and_bucket_root() -> None:
    with raises_one_line("empty URI"):
        storage.normalize("")
    with raises_one_line("no object path in gs://some-bucket"):
        storage.write_text("gs://some-bucket", "x")


# --- every function, in every spelling ------------------------------------------------------------------


def test_bytes_and_text_round_trip(root: str) -> None:
    storage.write_bytes(f"{root}/a.bin", b"\x00\x01")
    assert storage.read_bytes(f"{root}/a.bin") == b"\x00\x01"
    storage.write_text(f"{root}/sub/t.txt", "héllo")
    storage.write_text(f"{root}/sub/t.txt", "héllo again")  # overwrite
    assert storage.read_text(f"{root}/sub/t.txt") == "héllo again"
    assert storage.exists(f"{root}/sub/t.txt") and storage.exists(f"{root}/sub")
    assert not storage.exists(f"{root}/nope") and not storage.exists(f"{root}/su")


def test_list_files_is_recursive_sorted_and_bounded_by_the_folder(root: str) -> None:
    for rel in ["b.txt", "a/z.txt", "a/b/c.txt", "ab.txt"]:
        storage.write_text(f"{root}/{rel}", rel)
    storage.write_text(f"{root}-sibling/x.txt", "not below root")
    expected = [storage.join(root, rel) for rel in ["a/b/c.txt", "a/z.txt", "ab.txt", "b.txt"]]
    assert storage.list_files(root) == expected
    assert storage.list_files(f"{root}/") == expected
    assert storage.list_files(f"{root}/a") == expected[:2]
    assert storage.list_files(f"{root}/missing") == []


def test_streams_round_trip(root: str) -> None:
    with storage.open_write(f"{root}/deep/s.bin") as f:
        for i in range(4):
            f.write(bytes([i]) * 1000)
    with storage.open_read(f"{root}/deep/s.bin") as f:
        assert f.seekable()
        f.seek(2500)
        assert f.read(3) == b"\x02\x02\x02"
        f.seek(-1, os.SEEK_END)
        assert f.read() == b"\x03"
        f.seek(0)
        assert len(f.read()) == 4000


def test_open_write_publishes_nothing_when_the_block_raises(root: str) -> None:
    storage.write_text(f"{root}/keep.txt", "old")
    for name in ["keep.txt", "new.txt"]:
        with pytest.raises(RuntimeError), storage.open_write(f"{root}/{name}") as f:
            f.write(b"half")
            assert storage.list_files(root) == [storage.join(root, "keep.txt")]  # the write isn't visible
            raise RuntimeError("writer crashed")
    assert storage.read_text(f"{root}/keep.txt") == "old"
    assert not storage.exists(f"{root}/new.txt")
    assert storage.list_files(root) == [storage.join(root, "keep.txt")]  # no temp file left behind


def test_download_and_upload(root: str, tmp_path: Path) -> None:
    local = tmp_path / "in.bin"
    local.write_bytes(b"payload")
    storage.upload(local, f"{root}/up/x.bin")
    storage.download(f"{root}/up/x.bin", tmp_path / "out" / "deeper" / "x.bin")
    assert (tmp_path / "out" / "deeper" / "x.bin").read_bytes() == b"payload"


def test_publish_dir_then_fetch_dir(root: str) -> None:
    with storage.publish_dir(f"{root}/out") as staging:
        assert list(staging.iterdir()) == []
        (staging / "m.txt").write_text("m")
        (staging / "sub").mkdir()
        (staging / "sub" / "n.txt").write_text("n")
        assert not storage.exists(f"{root}/out") and storage.list_files(root) == []  # nothing visible yet
    assert storage.is_complete(f"{root}/out")
    assert published_names(f"{root}/out") == ["m.txt", "sub/n.txt"]
    fetched = storage.fetch_dir(f"{root}/out")
    assert (fetched / "m.txt").read_text() == "m" and (fetched / "sub" / "n.txt").read_text() == "n"
    assert storage.fetch_dir(f"{root}/out", files=["sub/n.txt"]) == fetched


def test_publish_dir_replaces_an_earlier_publication(root: str) -> None:
    for names in (["a", "b"], ["b", "c"]):
        with storage.publish_dir(f"{root}/out") as staging:
            for name in names:
                (staging / name).write_text(f"{name}{len(names)}")
    assert published_names(f"{root}/out") == ["b", "c"]
    assert len(storage.list_files(f"{root}/out")) == 3  # the marker, b and c: nothing of the first one


def test_publish_dir_publishes_nothing_on_exception(root: str) -> None:
    with pytest.raises(RuntimeError), storage.publish_dir(f"{root}/out") as staging:
        (staging / "m.txt").write_text("m")
        raise RuntimeError("step crashed")
    assert not staging.exists()
    assert not storage.exists(f"{root}/out") and not storage.is_complete(f"{root}/out")
    assert storage.list_files(root) == []


def test_missing_file_errors(root: str, tmp_path: Path) -> None:
    missing = storage.join(root, "nope.bin")
    with raises_one_line(f"no such file: {missing}"):
        storage.read_bytes(f"{root}/nope.bin")
    with raises_one_line(f"no such file: {missing}"), storage.open_read(f"{root}/nope.bin"):
        pass
    with raises_one_line(f"no such file: {missing}"):
        storage.download(f"{root}/nope.bin", tmp_path / "x")
    storage.write_text(f"{root}/d/a.txt", "a")
    with raises_one_line(f"no such file: {storage.join(root, 'd', 'b.txt')}"):
        storage.fetch_dir(f"{root}/d", files=["a.txt", "b.txt"])
    with raises_one_line(f"no such folder: {storage.join(root, 'e')}"):
        storage.fetch_dir(f"{root}/e")
    assert not (tmp_path / "x").exists()


# --- GCS specifics --------------------------------------------------------------------------------------


def test_open_read_seeks_without_reading_the_whole_object(gcs_bucket: str, http_log: list[requests.Response]) -> None:
    data = os.urandom(4 << 20)
    storage.write_bytes(f"gs://{gcs_bucket}/big.bin", data)
    http_log.clear()
    with storage.open_read(f"gs://{gcs_bucket}/big.bin") as f:
        f.seek(len(data) - 100)
        assert f.read() == data[-100:]
    served = sum(int(r.headers["Content-Length"]) for r in media_downloads(http_log))
    assert 0 < served < 1000


def test_gcs_publish_writes_the_marker_last(gcs_bucket: str, http_log: list[requests.Response]) -> None:
    with storage.publish_dir(f"gs://{gcs_bucket}/out") as staging:
        for name in ["z", "a", "m"]:
            (staging / name).write_text(name)
    names = uploaded_names(http_log)
    version = storage.published(f"gs://{gcs_bucket}/out").split("/", 3)[3]
    assert names == [f"{version}/a", f"{version}/m", f"{version}/z", "out/_SUCCESS"]


def test_fetch_dir_downloads_only_what_changed(gcs_bucket: str, http_log: list[requests.Response]) -> None:
    uri = f"gs://{gcs_bucket}/model"
    with storage.publish_dir(uri) as staging:
        for name in ["w1", "w2", "w3"]:
            (staging / name).write_bytes(name.encode() * 1000)
    http_log.clear()
    local = storage.fetch_dir(uri)
    assert len(media_downloads(http_log)) == 4  # the marker (which names the version) and three files
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in local.iterdir()}

    http_log.clear()
    assert storage.fetch_dir(uri) == local
    assert len(media_downloads(http_log)) == 1  # the marker alone
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in local.iterdir()} == stamps

    with storage.publish_dir(uri) as staging:  # w1 changes, w2 stays, w3 is gone: pruned locally
        (staging / "w1").write_bytes(b"retrained" * 1000)
        (staging / "w2").write_bytes(b"w2" * 1000)
    (local / "w2").write_bytes(b"X" * 2000)  # same size, corrupted content: the checksum catches it
    version = storage.published(uri).split("/", 3)[3]
    http_log.clear()
    storage.fetch_dir(uri)
    fetched = sorted(r.url.split("/o/")[1].split("?")[0].replace("%2F", "/") for r in media_downloads(http_log))
    assert fetched == ["model/_SUCCESS", f"{version}/w1", f"{version}/w2"]
    assert sorted(p.name for p in local.iterdir()) == ["w1", "w2"]
    assert (local / "w1").read_bytes() == b"retrained" * 1000 and (local / "w2").read_bytes() == b"w2" * 1000


def test_fetch_dir_of_a_local_folder_is_that_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert storage.fetch_dir(tmp_path.as_uri(), files=["f"]) == tmp_path


def test_missing_bucket(gcs_server: str, tmp_path: Path) -> None:
    uri = "gs://no-such-bucket-here/x/y.txt"
    message = "bucket 'no-such-bucket-here' does not exist (gs://no-such-bucket-here/x/y.txt): create it"
    with raises_one_line(message):
        storage.read_text(uri)
    with raises_one_line(message):
        storage.write_text(uri, "x")
    with raises_one_line(message):
        storage.upload(Path(__file__), uri)
    with raises_one_line(message):
        storage.exists(uri)  # a misspelt bucket fails loudly rather than reading as "not there yet"
    with raises_one_line("bucket 'no-such-bucket-here' does not exist (gs://no-such-bucket-here/x)"):
        storage.list_files("gs://no-such-bucket-here/x")


def test_local_errors(tmp_path: Path) -> None:
    with raises_one_line(f"no such file: {tmp_path}/in.bin"):
        storage.upload(tmp_path / "in.bin", tmp_path / "out.bin")
    with raises_one_line(f"cannot read {tmp_path}: Is a directory"):
        storage.read_bytes(tmp_path)
    with raises_one_line("expected a local path, got gs://bkt/x"):
        storage.download(tmp_path, "gs://bkt/x")


def test_outage_mid_write_fails_fast_and_names_the_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    server, url = start_emulator()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    monkeypatch.setenv("METAHEAC_GCS_DEADLINE_S", "2")
    gcs.Client(project="local", credentials=AnonymousCredentials()).create_bucket("doomed")
    storage.write_text("gs://doomed/before.txt", "fine")  # the module's client now talks to this server

    started = time.monotonic()
    with raises_one_line("cannot reach Google Cloud Storage while writing gs://doomed/out.bin: ") as error:
        with storage.open_write("gs://doomed/out.bin") as f:
            f.write(b"x" * 1000)
            server.stop()
    assert "Connection refused" in str(error.value)
    assert time.monotonic() - started < 8
