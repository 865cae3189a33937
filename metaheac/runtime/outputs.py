"""Claiming a step's output: never over what this project did not write, and one writer at a time.

`claim` refuses (one-line `OutputError`, exit 2) an output that is an input, holds one or lies inside
one, an existing file, and an existing folder without our marker (``_METAHEAC``, or the ``_SUCCESS`` of
a published folder). A folder of ours is replaced by the same step re-running, or by another with `overwrite`.
While the block runs the output is locked: locally by an flock on a lock file beside it (the kernel
drops it when the process dies, so a killed run's lock is taken over at once); on GCS by a lease
object created with ``if_generation_match=0``, renewed while the run lives and taken over once expired
(or at once when its holder ran on this host and is gone).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from metaheac.runtime import storage
from metaheac.runtime.storage import OWNER_MARKER, SUCCESS_MARKER

log = logging.getLogger(__name__)

LEASE_ENV = "METAHEAC_LEASE_S"
DEFAULT_LEASE_S = 600.0  # a GCS lease lives this long unless renewed (every third of it)


class OutputError(storage.StorageError):
    """The output cannot be written: it is not ours, it is an input, or another run holds it."""


@contextlib.contextmanager
def claim(
    output: str, step: str, inputs: Iterable[str] = (), overwrite: bool = False, is_file: bool = False,
    exclusive: bool = False,
) -> Iterator[str]:
    """The normalized output URI, locked for the block, after the checks above; stale staging of killed
    runs is removed and (for a folder) our marker written before the block runs. With `exclusive` any
    existing output is refused (a registry version is created once, never replaced)."""
    target = storage.normalize(output)
    _refuse_inputs(target, inputs)
    with _lock(target, step):
        if exclusive and storage.exists(target):
            raise OutputError(f"refusing to write {target}: it exists, and it is never written over")
        _check_existing(target, step, overwrite, is_file)
        if is_file:
            yield target
            return
        storage.clean_stale(target)
        marker = storage.join(target, OWNER_MARKER)
        storage.write_text(marker, json.dumps({"step": step}))
        try:
            yield target
        except BaseException:
            if storage.list_files(target) == [marker]:  # failed before writing anything: leave no trace
                storage.remove(marker)
            raise


def clean_abandoned(folder: str, step: str) -> None:
    """Remove what killed writes of the outputs in a local `folder` (a registry model's versions) left:
    their staging, and a claimed folder nothing was published into; outputs another run holds are left."""
    for target in storage.abandoned(folder):
        with contextlib.suppress(OutputError), _lock(target, step):
            storage.clean_stale(target)
            marker = storage.join(target, OWNER_MARKER)
            if storage.list_files(target) == [marker]:
                storage.remove(marker)


def _refuse_inputs(target: str, inputs: Iterable[str]) -> None:
    for given in inputs:
        source = storage.normalize(given)
        if _within(source, target):
            raise OutputError(f"refusing to write {target}: it is (or holds) the input {source}; choose another output")
        if _within(target, source):
            raise OutputError(f"refusing to write {target}: it is inside the input {source}; choose another output")


def _within(inner: str, outer: str) -> bool:
    """Whether `inner` is `outer` or below it (symlinks resolved locally)."""
    return _real(inner) == _real(outer) or _real(inner).startswith(_real(outer).rstrip("/") + "/")


def _real(uri: str) -> str:
    return uri if storage.is_gcs(uri) else os.path.realpath(uri)


def _check_existing(target: str, step: str, overwrite: bool, is_file: bool) -> None:
    if storage.is_file(target):
        if is_file and overwrite:
            return
        hint = "pass --overwrite to replace it" if is_file else "choose a folder path"
        raise OutputError(f"refusing to write {target}: an existing file; {hint}")
    files = storage.list_files(target)
    if is_file:
        if files:
            raise OutputError(f"refusing to write {target}: an existing folder; choose a file path")
        return
    if not files:
        return
    owner = _owner(target, files)
    if owner is None:
        raise OutputError(
            f"refusing to write {target}: an existing folder not written by metaheac "
            f"({len(files)} files, no {OWNER_MARKER} or {SUCCESS_MARKER}); choose an empty or new folder"
        )
    if owner != step and not overwrite:
        raise OutputError(
            f"refusing to write {target}: it holds the output of `{owner}`; pass --overwrite to replace it"
        )


def _owner(target: str, files: list[str]) -> str | None:
    """The step that claimed the folder ('?' for a published folder from before markers), or None."""
    names = {f[len(target) + 1 :] for f in files}
    if OWNER_MARKER in names:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            return str(json.loads(storage.read_text(storage.join(target, OWNER_MARKER)))["step"])[:80]
        return "?"
    return "?" if SUCCESS_MARKER in names else None


# --- locks ----------------------------------------------------------------------------------------------


def lock_uri(target: str) -> str:
    """Beside the output, not in it: a local publication swaps the whole folder."""
    parent, _, name = target.rpartition("/")
    if not name or storage.is_gcs(target) and target.count("/") < 3:
        raise OutputError(f"refusing to write {target}: not a folder or file path below a bucket or /")
    return f"{parent}/.{name}.lock"


def _holder(step: str, lease_s: float) -> dict:
    return {"step": step, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
            "expires": time.time() + lease_s}


def _describe(raw: bytes, uri: str) -> str:
    try:
        held = json.loads(raw)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(held["since"]))
        return f"`{held['step']}` (pid {held['pid']} on {held['host']}, since {since} UTC)"
    except (ValueError, KeyError, TypeError):
        return f"another run (lock {uri})"


def _busy(target: str, raw: bytes, uri: str) -> OutputError:
    return OutputError(f"{target} is being written by {_describe(raw, uri)}; wait for it to finish")


@contextlib.contextmanager
def _lock(target: str, step: str) -> Iterator[None]:
    uri = lock_uri(target)
    if storage.is_gcs(target):
        with _gcs_lease(uri, target, step):
            yield
        return
    try:
        os.makedirs(os.path.dirname(uri), exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"refusing to write {target}: a file is in its path, not a folder") from None
    with _locked_file(uri, target) as f:
        f.seek(0)
        f.truncate()
        f.write(json.dumps(_holder(step, 0.0)).encode())
        f.flush()
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(uri)  # under the lock: the next writer opens a fresh file


@contextlib.contextmanager
def _locked_file(uri: str, target: str) -> Iterator[BinaryIO]:
    """The lock file, flock-ed; retried when the holder removed it between our open and our flock."""
    while True:
        with open(uri, "a+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                raise _busy(target, f.read(), uri) from None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(uri).st_ino == os.fstat(f.fileno()).st_ino:
                    yield f
                    return


@contextlib.contextmanager
def _gcs_lease(uri: str, target: str, step: str) -> Iterator[None]:
    lease_s = float(os.environ.get(LEASE_ENV, DEFAULT_LEASE_S))
    generation = _acquire(uri, target, step, lease_s)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(uri, step, lease_s, generation, stop), daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        current = storage.read_generation(uri)
        if current is not None and json.loads(current[0]).get("pid") == os.getpid():
            storage.delete_if_generation(uri, current[1])


def _acquire(uri: str, target: str, step: str, lease_s: float) -> int:
    """Create the lease with if_generation_match=0 (atomic on real GCS). The emulator ignores that
    precondition, so the lease is read first too: that read, not the precondition, is what the tests
    exercise; `test_outputs` checks that the create carries ifGenerationMatch=0."""
    for _ in range(3):
        held = storage.read_generation(uri)
        if held is not None:
            raw, generation = held
            with contextlib.suppress(ValueError, KeyError, TypeError):
                if json.loads(raw)["expires"] >= time.time() and not _dead(json.loads(raw)):
                    raise _busy(target, raw, uri)
            log.warning("taking over the stale lease %s of %s", uri, _describe(raw, uri))
            storage.delete_if_generation(uri, generation)
        created = storage.write_if_generation(uri, json.dumps(_holder(step, lease_s)).encode(), 0)
        if created is not None:
            return created
    raise OutputError(f"{target} is being written by another run (lease {uri}); wait for it to finish")


def _dead(holder: dict) -> bool:
    """Whether the holder ran on this host and its process is gone (elsewhere only expiry can tell)."""
    if holder["host"] != socket.gethostname() or holder["pid"] == os.getpid():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _renew(uri: str, step: str, lease_s: float, generation: int, stop: threading.Event) -> None:
    while not stop.wait(lease_s / 3):
        try:
            renewed = storage.write_if_generation(uri, json.dumps(_holder(step, lease_s)).encode(), generation)
        except storage.StorageError as error:  # a blip: the lease still has two thirds of its life
            log.warning("could not renew the lease %s: %s", uri, error)
            continue
        if renewed is None:
            log.error("lost the lease %s to another run", uri)
            return
        generation = renewed
