"""The model registry: general models the pipelines share, versioned, on a local path or gs://.

    <root>/<name>/<version>/model.pt, config.json   the model folder (as `model.store` writes it)
                            registry.json            method, dataset and its fingerprint, metrics, run id
                            _SUCCESS                 the folder is complete (`storage.publish_dir`)
    <root>/<name>/LATEST.json                        {"version": ...}: written last, after the version

A version is published whole before the pointer moves to it, and an existing version is never written
over, so a reader that follows the pointer never sees a half-written model. A model argument resolves
(`resolve_model`) from:
    <root>/<name>/<version>     a version, as it is (any model folder is used as it is)
    <root>/<name>, <root>/<name>/latest
                                the version LATEST.json points at
    latest                      the same under $METAHEAC_MODELS/metaheac (the registry root of the environment)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass

from metaheac import storage
from metaheac.data.dataset import CAMPAIGNS_FILE, SCHEMA_FILE
from metaheac.data.errors import InputError
from metaheac.model.store import CONFIG_FILE, MODEL_FILE, read_model_info

POINTER_FILE = "LATEST.json"
RECORD_FILE = "registry.json"
ROOT_ENV = "METAHEAC_MODELS"
DEFAULT_NAME = "metaheac"
LATEST = "latest"


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
) -> ResolvedModel:
    """Publish the model folder `model_uri` as a new version of `name` under `root`, then point LATEST at it."""
    if not name or "/" in name:
        raise InputError(f"model name {name!r} must be one non-empty path segment")
    info = read_model_info(model_uri)  # a folder that is not a complete model fails here, before any write
    model_uri = storage.published(model_uri)  # on GCS, the current version of a republished folder
    weights = storage.read_bytes(storage.join(model_uri, MODEL_FILE))
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    version = f"{stamp:%Y%m%dT%H%M%SZ}-{hashlib.sha256(weights).hexdigest()[:8]}"
    target = storage.join(root, name, version)
    if storage.exists(target):
        raise FileExistsError(f"{target} already exists: a published version is never written over")
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
    }
    with storage.publish_dir(target) as staging:
        (staging / MODEL_FILE).write_bytes(weights)
        (staging / CONFIG_FILE).write_text(storage.read_text(storage.join(model_uri, CONFIG_FILE)))
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
    storage.write_text(storage.join(root, name, POINTER_FILE), json.dumps({"version": version}))
    return ResolvedModel(target, version)


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
        version = json.loads(storage.read_text(pointer))["version"]
        return ResolvedModel(storage.join(uri, version), version)
    if not storage.exists(storage.join(storage.published(uri), CONFIG_FILE)):
        raise InputError(f"{uri} is neither a model folder (no {CONFIG_FILE}) nor a registry model ({POINTER_FILE})")
    record = storage.join(storage.published(uri), RECORD_FILE)
    return ResolvedModel(uri, read_record(uri)["version"] if storage.exists(record) else uri)
