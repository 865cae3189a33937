"""Read and write local paths and ``gs://`` URIs through one small API.

Every pipeline step does its I/O here, so a step never cares where its inputs live. Inside a KFP step
a bucket is also mounted at ``/gcs/BUCKET`` (Cloud Storage FUSE); such paths are treated as ``gs://``
URIs so that writes keep the guarantees below, which FUSE does not give. ``file://`` URIs are local.

Guarantees: a written file appears whole or not at all (local: temp file then rename; GCS: one upload);
a published folder carries a ``_SUCCESS`` marker written after everything else, and republishing keeps
the previous version readable until the new one is complete (local: an atomic exchange of folders;
GCS: files go under a fresh ``_v/ID/`` prefix and ``_SUCCESS``, written last, points at it); every
failure is a ``StorageError`` whose message is one line naming the URI (a full disk included); only
regular files are read (a device or FIFO would never end).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import mimetypes
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

import google_crc32c
import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs
from google.cloud.storage.retry import DEFAULT_RETRY

SUCCESS_MARKER = "_SUCCESS"
# Marks a folder as an output of this project's step (JSON {"step": name}); see `metaheac.runtime.outputs`.
OWNER_MARKER = "_METAHEAC"
VERSIONS = "_v"  # GCS publications live under TARGET/_v/ID/, the one named by TARGET/_SUCCESS is current
# How long one GCS call may keep retrying; the client's own default is 120 s, too long to notice an outage.
DEFAULT_DEADLINE_S = 60.0
DEADLINE_ENV = "METAHEAC_GCS_DEADLINE_S"
CACHE_ENV = "METAHEAC_CACHE"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"

_GS = "gs://"
_FUSE = "/gcs/"
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_UNREACHABLE = (
    api_exceptions.RetryError,
    api_exceptions.ServerError,
    api_exceptions.TooManyRequests,
    requests.exceptions.RequestException,
    auth_exceptions.TransportError,
)
_CHUNK = 1 << 20
# Names of this module's in-flight temp files and staging folders (see _replacing and _publish_local).
_IN_FLIGHT = re.compile(r"\..+\.[0-9a-f]{32}\.(tmp|staging|staging\.old)")
_IN_FLIGHT_OF = re.compile(r"\.(.+)\.[0-9a-f]{32}\.(?:tmp|staging|staging\.old)")  # group 1: the output


class StorageError(OSError):
    """A storage operation failed; the message is one line naming the URI and what to do."""


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> object: ...
    def digest(self) -> bytes: ...


def is_gcs(uri: str | os.PathLike[str]) -> bool:
    return os.fspath(uri).startswith((_GS, _FUSE))


def normalize(uri: str | os.PathLike[str]) -> str:
    """'/gcs/b/x' -> 'gs://b/x' (no trailing '/'); 'file:///a' -> '/a'; a local path -> absolute path."""
    given = os.fspath(uri)
    if not given:
        raise StorageError("empty URI: pass a local path, file://, gs:// or /gcs/ URI")
    text = _GS + given[len(_FUSE) :] if given.startswith(_FUSE) else given
    if text.startswith(_GS):
        bucket, _, path = text[len(_GS) :].partition("/")
        if not _BUCKET_NAME.fullmatch(bucket):
            raise StorageError(f"malformed URI {given[:200]!r}: expected gs://BUCKET/PATH with a valid bucket name")
        path = path.rstrip("/")
        if any(part in (".", "..") for part in path.split("/")):
            raise StorageError(f"malformed URI {given[:200]!r}: '.' and '..' segments are not allowed in gs:// paths")
        return f"{_GS}{bucket}/{path}" if path else f"{_GS}{bucket}"
    if text.startswith("file:"):
        return _file_uri_path(text)
    if "://" in text:
        raise StorageError(f"unsupported URI {given[:200]!r}: use a local path, file://, gs:// or /gcs/")
    return os.path.abspath(text)


def join(uri: str | os.PathLike[str], *parts: str) -> str:
    """Append relative parts to a normalized URI; leading and trailing '/' of each part are ignored."""
    base = normalize(uri)
    rel = "/".join(p.strip("/") for p in parts if p.strip("/"))
    if not rel:
        return base
    return f"{base}/{rel}" if is_gcs(base) else os.path.join(base, rel)


def exists(uri: str | os.PathLike[str]) -> bool:
    """Whether a file, or a folder with at least one file, lives at `uri`."""
    target = normalize(uri)
    if not is_gcs(target):
        return os.path.exists(target)
    if is_file(target):
        return True
    bucket, path = _split(target)
    with _gcs_errors(target, "checking"):
        return next(iter(_list_blobs(bucket, path, max_results=1)), None) is not None


def is_file(uri: str | os.PathLike[str]) -> bool:
    """Whether a file (not a folder) lives at `uri`."""
    target = normalize(uri)
    if not is_gcs(target):
        return os.path.isfile(target)
    bucket, path = _split(target)
    with _gcs_errors(target, "checking"):
        return bool(path) and _client().bucket(bucket).blob(path).exists(**_call_options())


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    source = normalize(uri)
    if not is_gcs(source):
        with _local_errors(source, "read"):
            _check_regular(source)
            return Path(source).read_bytes()
    with _gcs_errors(source, "reading"):
        return _blob(source).download_as_bytes(**_call_options())


def read_text(uri: str | os.PathLike[str]) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str | os.PathLike[str], data: bytes) -> None:
    with open_write(uri) as f:
        f.write(data)


def write_text(uri: str | os.PathLike[str], text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def remove(uri: str | os.PathLike[str]) -> None:
    """Delete a file (a missing one is fine); locally, its folder too when that is left empty."""
    target = normalize(uri)
    if is_gcs(target):
        _delete(target)
        return
    with _local_errors(target, "delete"), contextlib.suppress(FileNotFoundError):
        os.remove(target)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(target))


def list_files(prefix: str | os.PathLike[str]) -> list[str]:
    """Every file below the folder `prefix`, recursively, as sorted full URIs ([] for a missing folder)."""
    folder = normalize(prefix)
    if not is_gcs(folder):
        return sorted(str(p) for p in _local_files(Path(folder)))
    bucket, path = _split(folder)
    with _gcs_errors(folder, "listing"):
        names = [b.name for b in _list_blobs(bucket, path)]
    # Names ending in '/' are folder placeholders made by the console, not files.
    return sorted(f"{_GS}{bucket}/{name}" for name in names if not name.endswith("/"))


@contextlib.contextmanager
def open_read(uri: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A seekable binary stream; on GCS it fetches ranges as they are read, never the whole object."""
    source = normalize(uri)
    if not is_gcs(source):
        with _local_errors(source, "read"):
            _check_regular(source)
            f = open(source, "rb")  # closed below, outside the error mapping
        with f:
            yield f
        return
    # Read failures inside the block can only come from this stream, so they are mapped too.
    with _gcs_errors(source, "reading"):
        blob = _blob(source)
        # Fails fast on a missing object and pins the generation, so an overwrite can't mix versions.
        blob.reload(**_call_options())
        with blob.open("rb", **_call_options()) as f:
            yield f


@contextlib.contextmanager
def open_write(uri: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary stream whose content lands at `uri` only if the block exits without an exception."""
    target = normalize(uri)
    if not is_gcs(target):
        with _disk_full(target), _replacing(target) as tmp:
            with _local_errors(target, "write"):
                f = open(tmp, "x+b")  # closed below, outside the error mapping
            with f:
                yield f
        return
    _split_object(target)  # a bad URI fails before the caller writes anything
    with _disk_full(target), tempfile.TemporaryDirectory(prefix="metaheac-upload-") as tmp_dir:
        tmp = os.path.join(tmp_dir, "data")
        with open(tmp, "x+b") as f:
            yield f
        _upload_file(tmp, target)


def download(uri: str | os.PathLike[str], local_path: str | os.PathLike[str]) -> None:
    """Copy `uri` to a local file, atomically; GCS downloads are checked against the object's checksum."""
    source, dest = normalize(uri), _local_path(local_path)
    if not is_gcs(source):
        with _replacing(dest) as tmp, _local_errors(source, "copy"):
            _check_regular(source)
            shutil.copyfile(source, tmp)
        return
    with _replacing(dest) as tmp, _gcs_errors(source, "reading"):
        _blob(source).download_to_filename(tmp, **_call_options())


def upload(local_path: str | os.PathLike[str], uri: str | os.PathLike[str]) -> None:
    """Copy a local file to `uri`, atomically."""
    source, dest = _local_path(local_path), normalize(uri)
    if not os.path.isfile(source):
        raise StorageError(f"no such file: {source}")
    if is_gcs(dest):
        _upload_file(source, dest)
        return
    with _replacing(dest) as tmp, _local_errors(source, "copy"):
        shutil.copyfile(source, tmp)


@contextlib.contextmanager
def publish_dir(uri: str | os.PathLike[str]) -> Iterator[Path]:
    """An empty local staging folder whose files are published under `uri` if the block succeeds.

    The ``_SUCCESS`` marker is written last and files of an earlier publication are replaced, so a reader
    that checks `is_complete` and reads through `fetch_dir` (or `published`) never sees a partial or mixed
    folder, and a crash at any point leaves the earlier publication readable. On an exception nothing
    is published.
    """
    target = normalize(uri)
    if not is_gcs(target):
        with _disk_full(target), _publish_local(target) as staging:
            yield staging
        return
    _split_object(target)  # refuse a bucket root: publishing replaces everything below the target
    with _disk_full(target), tempfile.TemporaryDirectory(prefix="metaheac-publish-") as staging:
        yield Path(staging)
        _publish_gcs(Path(staging), target)


def is_complete(dir_uri: str | os.PathLike[str]) -> bool:
    """Whether the folder was fully published (its ``_SUCCESS`` marker exists)."""
    return exists(join(dir_uri, SUCCESS_MARKER))


def published(dir_uri: str | os.PathLike[str]) -> str:
    """The folder holding the current files of a published folder: on GCS the version ``_SUCCESS`` names
    (the folder itself for one published before versions, or never published); locally the folder."""
    folder = normalize(dir_uri)
    if not is_gcs(folder) or not is_complete(folder):
        return folder
    with contextlib.suppress(ValueError, AttributeError):  # an empty marker: published before versions
        version = json.loads(read_bytes(join(folder, SUCCESS_MARKER)))["version"]
        if re.fullmatch(r"[0-9a-f]{32}", version):
            return join(folder, VERSIONS, version)
    return folder


def clean_stale(dir_uri: str | os.PathLike[str]) -> list[str]:
    """Remove what killed writes of this folder left behind: local temp files and staging folders, GCS
    versions that were never made current. Call it only while holding the folder's lock."""
    target = normalize(dir_uri)
    if is_gcs(target):
        current = published(target)
        stale = [u for u in list_files(join(target, VERSIONS)) if not u.startswith(current + "/")]
        for uri in stale:
            _delete(uri)
        return stale
    parent, name = os.path.split(target)
    stale = [os.path.join(parent, n) for n in _listdir(parent) if _IN_FLIGHT.fullmatch(n) and n.startswith(f".{name}.")]
    if os.path.isdir(target):
        stale += [str(p) for p in Path(target).rglob(".*.tmp") if _IN_FLIGHT.fullmatch(p.name)]
    for path in stale:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return stale


def abandoned(folder: str | os.PathLike[str]) -> list[str]:
    """The outputs directly in a local `folder` that killed writes may have left debris of: those with
    staging folders beside them, and folders without ``_SUCCESS`` (clean them with `clean_stale` under their
    lock). A single file's temp file (a pointer's) is not counted: its writer holds no lock that would tell
    a live write from a killed one, and it is a few bytes."""
    parent = normalize(folder)
    if is_gcs(parent):
        return []
    names = {m.group(1) for n in _listdir(parent)
             if (m := _IN_FLIGHT_OF.fullmatch(n)) and os.path.isdir(os.path.join(parent, n))}
    names |= {n for n in _listdir(parent) if not n.startswith(".") and os.path.isdir(os.path.join(parent, n))
              and not os.path.exists(os.path.join(parent, n, SUCCESS_MARKER))}
    return sorted(os.path.join(parent, n) for n in names)


# --- GCS conditional writes (leases); real GCS enforces the preconditions, gcp-storage-emulator ignores them


def read_generation(uri: str | os.PathLike[str]) -> tuple[bytes, int] | None:
    """A GCS object's bytes and generation, or None when it does not exist."""
    source = normalize(uri)
    with _gcs_errors(source, "reading"):
        blob = _blob(source)
        try:
            blob.reload(**_call_options())
            generation = int(blob.generation)
            return blob.download_as_bytes(if_generation_match=generation, **_call_options()), generation
        except api_exceptions.NotFound:
            return None


def write_if_generation(uri: str | os.PathLike[str], data: bytes, generation: int) -> int | None:
    """Write a GCS object only if its generation is `generation` (0: only if it does not exist); the new
    generation, or None when the precondition failed (another writer got there first)."""
    target = normalize(uri)
    with _gcs_errors(target, "writing"):
        blob = _blob(target)
        try:
            blob.upload_from_string(data, if_generation_match=generation, **_call_options())
        except api_exceptions.PreconditionFailed:
            return None
        return int(blob.generation)


def delete_if_generation(uri: str | os.PathLike[str], generation: int) -> bool:
    """Delete a GCS object only if its generation is still `generation`; whether it was deleted."""
    target = normalize(uri)
    with _gcs_errors(target, "deleting"):
        try:
            _blob(target).delete(if_generation_match=generation, **_call_options())
        except (api_exceptions.PreconditionFailed, api_exceptions.NotFound):
            return False
        return True


def fetch_dir(uri: str | os.PathLike[str], files: list[str] | None = None) -> Path:
    """A local folder holding the folder's files, or only the named relative ones.

    A local URI is returned as is. A gs:// folder is downloaded into a cache ($METAHEAC_CACHE, default
    ~/.cache/metaheac/gcs, then BUCKET/PATH); files already there with the same size and checksum are
    kept, and when fetching the whole folder, cached files no longer in it are removed.
    """
    source = normalize(uri)
    if not is_gcs(source):
        return _check_local_dir(source, files)
    bucket, path = _split(source)
    dest = _inside(_cache_root(), f"{bucket}/{path}", source)
    current = published(source)  # a published folder's current version is cached under the folder's name
    blobs = _named_blobs(current, files) if files is not None else _folder_blobs(current)
    prefix_len = len(_split(current)[1]) + 1 if path else 0
    wanted = set()
    for blob in blobs:
        rel = blob.name[prefix_len:]
        wanted.add(rel)
        _fetch_blob(blob, _inside(dest, rel, f"{_GS}{bucket}/{blob.name}"), f"{_GS}{bucket}/{blob.name}")
    if files is None:
        for stale in _local_files(dest):
            if stale.relative_to(dest).as_posix() not in wanted:
                stale.unlink()
    return dest


# --- GCS plumbing ---------------------------------------------------------------------------------------


def _client() -> gcs.Client:
    return _client_for(os.getpid(), os.environ.get(EMULATOR_ENV))


@functools.lru_cache(maxsize=1)
def _client_for(pid: int, emulator_host: str | None) -> gcs.Client:
    """One client per process (a forked child must not share the parent's connections) and emulator."""
    if emulator_host:
        return gcs.Client(project="local", credentials=AnonymousCredentials())
    # Object and bucket calls need no project; passing None avoids failing where none can be inferred.
    return gcs.Client(project=None)


def _call_options() -> dict[str, object]:
    # Retrying uploads is safe here: each one rewrites a whole object with the same bytes.
    deadline = float(os.environ.get(DEADLINE_ENV, DEFAULT_DEADLINE_S))
    return {"retry": DEFAULT_RETRY.with_timeout(deadline), "timeout": deadline}


def _split(uri: str) -> tuple[str, str]:
    bucket, _, path = uri[len(_GS) :].partition("/")
    return bucket, path


def _split_object(uri: str) -> tuple[str, str]:
    bucket, path = _split(uri)
    if not path:
        raise StorageError(f"no object path in {uri}: expected gs://BUCKET/PATH")
    return bucket, path


def _blob(uri: str) -> gcs.Blob:
    bucket, path = _split_object(uri)
    return _client().bucket(bucket).blob(path)


def _list_blobs(bucket: str, folder: str, max_results: int | None = None) -> Iterator[gcs.Blob]:
    prefix = f"{folder}/" if folder else None
    return _client().list_blobs(bucket, prefix=prefix, max_results=max_results, **_call_options())


def _upload_file(local: str, uri: str) -> None:
    # A content type lets reports (HTML, JSON) open in the browser from the console.
    with _gcs_errors(uri, "writing"):
        _blob(uri).upload_from_filename(local, content_type=mimetypes.guess_type(uri)[0], **_call_options())


def _delete(uri: str) -> None:
    with _gcs_errors(uri, "deleting"), contextlib.suppress(api_exceptions.NotFound):
        _blob(uri).delete(**_call_options())


def _publish_gcs(staging: Path, target: str) -> None:
    """Upload under a fresh version prefix, then point ``_SUCCESS`` at it (one object write: the switch),
    then drop what the previous version and killed publications left. Until the switch readers see the
    previous version, whole."""
    version = uuid.uuid4().hex
    prefix = join(target, VERSIONS, version)
    for local in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = local.relative_to(staging).as_posix()
        if rel != SUCCESS_MARKER:
            _upload_file(str(local), join(prefix, rel))
    write_bytes(join(target, SUCCESS_MARKER), json.dumps({"version": version}).encode())
    keep = {join(target, SUCCESS_MARKER), join(target, OWNER_MARKER)}
    for stale in list_files(target):
        if stale not in keep and not stale.startswith(prefix + "/"):
            _delete(stale)


def _named_blobs(folder: str, files: list[str]) -> list[gcs.Blob]:
    blobs = []
    for rel in files:
        uri = join(folder, rel)
        with _gcs_errors(uri, "reading"):
            blob = _blob(uri)
            blob.reload(**_call_options())  # size and checksums, or the missing-file error
        blobs.append(blob)
    return blobs


def _folder_blobs(folder: str) -> list[gcs.Blob]:
    bucket, path = _split(folder)
    with _gcs_errors(folder, "listing"):
        blobs = [b for b in _list_blobs(bucket, path) if not b.name.endswith("/")]
    if not blobs:
        raise StorageError(f"no such folder: {folder} has no files below it")
    return blobs


def _fetch_blob(blob: gcs.Blob, local: Path, uri: str) -> None:
    if local.is_file() and _same_content(local, blob):
        return
    with _replacing(str(local)) as tmp, _gcs_errors(uri, "reading"):
        blob.download_to_filename(tmp, **_call_options())


def _same_content(local: Path, blob: gcs.Blob) -> bool:
    if local.stat().st_size != blob.size:
        return False
    if blob.md5_hash:  # composite objects have no MD5, only CRC32C
        return _digest(local, hashlib.md5(usedforsecurity=False)) == blob.md5_hash
    return bool(blob.crc32c) and _digest(local, google_crc32c.Checksum()) == blob.crc32c


def _digest(path: Path, hasher: _Hasher) -> str:
    """Base64 digest, the form GCS reports for md5Hash and crc32c."""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    return base64.b64encode(hasher.digest()).decode("ascii")


def _cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "metaheac" / "gcs")


def _inside(root: Path, rel: str, uri: str) -> Path:
    """root/rel, refused when it would leave `root` (an object name may hold '..' or a leading '/')."""
    path = Path(os.path.normpath(root / rel))
    if rel.startswith("/") or not path.is_relative_to(Path(os.path.normpath(root))):
        raise StorageError(f"refusing {uri[:200]}: its local copy would land outside the cache {root}")
    return path


@contextlib.contextmanager
def _gcs_errors(uri: str, doing: str) -> Iterator[None]:
    """Turn the client's exceptions into one-line StorageErrors naming `uri`."""
    try:
        yield
    except api_exceptions.NotFound as e:
        raise _not_found(uri) from e
    except _UNREACHABLE as e:
        reason = _one_line(_root_cause(e))
        raise StorageError(f"cannot reach Google Cloud Storage while {doing} {uri}: {reason}") from e
    except api_exceptions.GoogleAPIError as e:
        raise StorageError(f"Google Cloud Storage refused {doing} {uri}: {_one_line(e)}") from e
    except auth_exceptions.GoogleAuthError as e:
        raise StorageError(
            f"cannot authenticate to Google Cloud Storage for {uri}: {_one_line(e)}; run "
            "'gcloud auth application-default login' or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from e


def _not_found(uri: str) -> StorageError:
    """GCS answers 404 for a missing bucket and a missing object alike: ask which it was."""
    bucket, _ = _split(uri)
    try:
        bucket_exists = _client().bucket(bucket).exists(**_call_options())
    except Exception:  # e.g. no permission on the bucket itself: the object is the likelier culprit
        bucket_exists = True
    if not bucket_exists:
        return StorageError(f"bucket '{bucket}' does not exist ({uri}): create it or fix the URI")
    return StorageError(f"no such file: {uri}")


def _root_cause(error: BaseException) -> BaseException:
    """The innermost error (e.g. 'Connection refused') under retry and HTTP-library wrappers."""
    for _ in range(10):  # bounded: a chain may loop
        inner = getattr(error, "cause", None) or getattr(error, "reason", None) or error.__cause__
        inner = inner or error.__context__
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def _one_line(error: BaseException) -> str:
    # urllib3 prefixes its messages with an object repr such as '<HTTPConnection object at 0x..>: '.
    return " ".join(re.sub(r"<[^>]*>:\s*", "", str(error)).split())


# --- local plumbing -------------------------------------------------------------------------------------


def _file_uri_path(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise StorageError(f"malformed URI {uri!r}: expected file:///ABSOLUTE/PATH")
    return os.path.abspath(unquote(parts.path))


def _local_path(path: str | os.PathLike[str]) -> str:
    local = normalize(path)
    if is_gcs(local):
        raise StorageError(f"expected a local path, got {local}: pass the gs:// URI as the other argument")
    return local


def _local_files(folder: Path) -> list[Path]:
    """Files below `folder`, without in-flight writes, so no reader ever picks up a partial file."""
    return [
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(_IN_FLIGHT.fullmatch(part) for part in p.relative_to(folder).parts)
    ]


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _check_local_dir(folder: str, files: list[str] | None) -> Path:
    if not os.path.isdir(folder):
        raise StorageError(f"no such folder: {folder}")
    for rel in files or []:
        if not os.path.isfile(join(folder, rel)):
            raise StorageError(f"no such file: {join(folder, rel)}")
    return Path(folder)


@contextlib.contextmanager
def _local_errors(path: str, doing: str) -> Iterator[None]:
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as e:
        raise StorageError(f"no such file: {e.filename or path}") from e
    except OSError as e:
        raise StorageError(f"cannot {doing} {path}: {e.strerror or e}") from e


def _check_regular(path: str) -> None:
    """Refuse a device, FIFO or socket (a symlink to /dev/zero included): reading one never ends or blocks."""
    if not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path):
        raise StorageError(f"cannot read {path}: not a regular file (a device, FIFO or socket); give a file")


_FULL = (errno.ENOSPC, errno.EDQUOT)
# Arrow's own writers raise OSError without an errno: their message says it
_FULL_TEXT = re.compile("|".join(re.escape(os.strerror(code)) for code in _FULL))


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and (error.errno in _FULL or bool(_FULL_TEXT.search(str(error))))


def disk_full_error(target: str, error: OSError) -> StorageError:
    reason = os.strerror(error.errno) if error.errno in _FULL else "no space left"
    return StorageError(f"cannot write {target}: {reason}; free some space and rerun (what was there is intact)")


@contextlib.contextmanager
def _disk_full(target: str) -> Iterator[None]:
    """A full disk or quota while the block writes `target`: one line naming it (the temp files are gone)."""
    try:
        yield
    except OSError as error:
        if isinstance(error, StorageError) or not is_disk_full(error):  # a StorageError is one line already
            raise
        raise disk_full_error(target, error) from error


@contextlib.contextmanager
def _replacing(path: str) -> Iterator[str]:
    """A temp path beside `path` (same filesystem) that replaces `path` only if the block succeeds."""
    parent, name = os.path.split(path)
    tmp = os.path.join(parent, f".{name}.{uuid.uuid4().hex}.tmp")
    with _local_errors(path, "write"):
        os.makedirs(parent, exist_ok=True)
    try:
        yield tmp
        with _local_errors(path, "write"):
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


@contextlib.contextmanager
def _publish_local(target: str) -> Iterator[Path]:
    parent, name = os.path.split(target)
    staging = os.path.join(parent, f".{name}.{uuid.uuid4().hex}.staging")
    with _local_errors(target, "write"):
        os.makedirs(staging)
    try:
        yield Path(staging)
        # The marker goes in with the rest: the rename makes the whole folder appear at once.
        Path(staging, SUCCESS_MARKER).touch()
        owner = os.path.join(target, OWNER_MARKER)
        if os.path.isfile(owner):  # the claim of `metaheac.runtime.outputs` stays with the folder
            shutil.copyfile(owner, os.path.join(staging, OWNER_MARKER))
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: str, target: str) -> None:
    """Make `staging` the folder at `target`; an existing folder is exchanged with it in one atomic step
    (it then sits at `staging`, removed by the caller), so `target` is never missing or mixed."""
    with _local_errors(target, "publish"):
        if os.path.isdir(target) and not os.path.islink(target) and _exchange(staging, target):
            return
        old = f"{staging}.old"
        if os.path.lexists(target):  # no atomic exchange here: a brief window without `target`
            os.rename(target, old)
        os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system or filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), b)
