"""The model registry: general models the pipelines share, versioned, on a local path or gs://.

    <root>/<name>/<version>/model.pt, config.json   the model folder (as `model.store` writes it)
                            registry.json            method, dataset and its fingerprint, metrics, run id
                            _SUCCESS                 the folder is complete (`storage.publish_dir`)
    <root>/<name>/LATEST.json                        {"version": ...}: written last, after the version

A version is published whole, after its weights are checked against their sha256 and read as tensors,
before the pointer moves to it; a version is created once (`outputs.claim(exclusive=True)`), never
written over, so a reader that follows the pointer never sees a half-written or another run's model.
A pointer names a version folder of its registry model, nothing else. A model argument resolves
(`resolve_model`) from:
    <root>/<name>/<version>     a version, as it is (any model folder is used as it is: its version is
                                "sha256-" and the start of its weights' sha256)
    <root>/<name>, <root>/<name>/latest
                                the version LATEST.json points at
    latest                      the same under $METAHEAC_MODELS/metaheac (the registry root of the environment)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass

from metaheac.data.dataset import CAMPAIGNS_FILE, SCHEMA_FILE
from metaheac.data.errors import InputError, quote
from metaheac.model.store import CONFIG_FILE, read_model_info, read_weights, write_model_folder
from metaheac.runtime import storage
from metaheac.runtime.outputs import claim, clean_abandoned

POINTER_FILE = "LATEST.json"
RECORD_FILE = "registry.json"
ROOT_ENV = "METAHEAC_MODELS"
DEFAULT_NAME = "metaheac"
LATEST = "latest"
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # one path segment: a pointer stays in its folder


@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # the model folder
    version: str  # its registry version, or the folder itself when it is not in a registry


def dataset_fingerprint(dataset_uri: str) -> str:
    """sha256 of the dataset's schema (vocabularies, provenance and counts) and campaign table."""
    digest = hashlib.sha256()
    for name in (SCHEMA_FILE, CAMPAIGNS_FILE):
        digest.update(storage.read_bytes(storage.join(dataset_uri, name)))
    return digest.hexdigest()


def publish(
    model_uri: str,
    root: str,
    name: str = DEFAULT_NAME,
    dataset: str = "",
    metrics: dict | None = None,
    run_id: str = "",
    now: dt.datetime | None = None,
    gate: dict | None = None,
) -> ResolvedModel:
    """Publish the model folder `model_uri` as a new version of `name` under `root`, then point LATEST at it,
    unless the promotion `gate` (`promotion.decide`: recorded in registry.json) says "promoted": false."""
    if not name or "/" in name:
        raise InputError(f"model name {name!r} must be one non-empty path segment")
    info = read_model_info(model_uri)  # a folder that is not a complete model fails here, before any write
    model_uri = storage.published(model_uri)  # on GCS, the current version of a republished folder
    weights, _ = read_weights(model_uri, info)  # these very bytes are checked, then copied
    digest = hashlib.sha256(weights).hexdigest()
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    # milliseconds: the same model published twice in one second (kept, then --force) gets two versions
    version = f"{stamp:%Y%m%dT%H%M%S}.{stamp.microsecond // 1000:03d}Z-{digest[:8]}"
    target = storage.join(root, name, version)
    record = {
        "name": name,
        "version": version,
        "method": info["method"],
        "source": model_uri,
        "dataset": dataset,
        "dataset_fingerprint": dataset_fingerprint(dataset) if dataset else "",
        "metrics": metrics or {},
        "pipeline_run_id": run_id,
        "published_at": stamp.isoformat(),
        **({"promotion": gate} if gate else {}),
    }
    inputs = [model_uri] + ([dataset] if dataset else [])
    clean_abandoned(storage.join(root, name), "publish")  # what killed publishes left (a local registry)
    with claim(target, "publish", inputs, exclusive=True):
        write_model_folder(target, weights, {**info, "weights_sha256": digest},
                           {RECORD_FILE: json.dumps(record, indent=2, sort_keys=True)})
        if gate is None or gate["promoted"]:
            storage.write_text(storage.join(root, name, POINTER_FILE), json.dumps({"version": version}))
    return ResolvedModel(target, version)


def latest(root: str, name: str = DEFAULT_NAME) -> ResolvedModel | None:
    """The version LATEST points at, or None before the first promotion."""
    model = storage.join(root, name)
    return resolve_model(model) if storage.exists(storage.join(model, POINTER_FILE)) else None


def read_record(version_uri: str) -> dict:
    """A published version's registry.json."""
    return json.loads(storage.read_text(storage.join(storage.published(version_uri), RECORD_FILE)))


def resolve_model(uri: str) -> ResolvedModel:
    """The model folder a model argument names (module doc); InputError saying what is missing."""
    if uri == LATEST:
        root = os.environ.get(ROOT_ENV)
        if not root:
            raise InputError(f"--model latest needs ${ROOT_ENV}, the registry root: set it, or pass a registry URI")
        uri = storage.join(root, DEFAULT_NAME)
    elif uri.rstrip("/").endswith(f"/{LATEST}"):
        uri = uri.rstrip("/")[: -len(LATEST) - 1]
    pointer = storage.join(uri, POINTER_FILE)
    if storage.exists(pointer):
        version = _pointed(pointer)
        return ResolvedModel(storage.join(uri, version), version)
    if not storage.exists(storage.join(storage.published(uri), CONFIG_FILE)):
        raise InputError(f"{uri} is neither a model folder (no {CONFIG_FILE}) nor a registry model ({POINTER_FILE})")
    record = storage.join(storage.published(uri), RECORD_FILE)
    if storage.exists(record):
        return ResolvedModel(uri, read_record(uri)["version"])
    digest = read_model_info(uri).get("weights_sha256")  # a retrained folder is another version
    return ResolvedModel(uri, f"sha256-{str(digest)[:16]}" if digest else uri)


def _pointed(pointer: str) -> str:
    """The version a LATEST.json names: one folder name of its registry model."""
    try:
        version = json.loads(storage.read_bytes(pointer))["version"]
    except (ValueError, KeyError, TypeError):  # also UnicodeDecodeError
        version = None
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise InputError(f"{pointer}: expected {{\"version\": <a version folder beside it>}}, got "
                         f"{quote(storage.read_bytes(pointer).decode(errors='replace'), 80)}; publish again "
                         "or name a version")
    return version
