"""Shared fixtures: a real GCS emulator (gcp-storage-emulator) reached by the real google-cloud-storage client, and a
small trained model. Shared plain helpers live in the helper modules beside it (tiny.py, tiny_meta.py,
rawfiles.py, online_helpers.py, pipeline_helpers.py), never in a test module."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from gcp_storage_emulator.server import Server, create_server
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from metaheac.cli import main


def start_emulator() -> tuple[Server, str]:
    """An in-memory emulator on a free port, and its STORAGE_EMULATOR_HOST value."""
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    port = server._api._httpd.server_address[1]  # the emulator exposes the bound port nowhere else
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The emulator's URL, exported as STORAGE_EMULATOR_HOST for the whole session."""
    server, url = start_emulator()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STORAGE_EMULATOR_HOST", url)
        env.setenv("METAHEAC_GCS_DEADLINE_S", "5")  # a dead server fails in seconds, not minutes
        env.setenv("METAHEAC_CACHE", str(tmp_path_factory.mktemp("gcs-cache")))
        yield url
    server.stop()


@pytest.fixture
def gcs_bucket(gcs_server: str) -> str:
    """A fresh, empty bucket; use it as gs://{gcs_bucket}/..."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    storage.Client(project="local", credentials=AnonymousCredentials()).create_bucket(name)
    return name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small dataset and a model of the default method (MetaHeac+LR) trained on it for a few steps."""
    root = tmp_path_factory.mktemp("online")
    raw, dataset, model = root / "raw", root / "dataset", root / "model"
    assert main(["generate", "--output", str(raw), "--users", "1500", "--campaigns", "12", "--seed", "3"]) == 0
    assert main(["preprocess", "--input", str(raw), "--output", str(dataset), "--cold-threshold", "15"]) == 0
    assert main(["train", "--dataset", str(dataset), "--output", str(model), "--max-steps", "2",
                 "--embedding-dim", "8", "--device", "cpu"]) == 0
    return dataset, model


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the slow part of the fault suite; runs with METAHEAC_FAULTS=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("METAHEAC_FAULTS") == "1":
        return
    skip = pytest.mark.skip(reason="a slow fault test: set METAHEAC_FAULTS=1 (scripts/test does)")
    for item in items:
        if "faults" in item.keywords:
            item.add_marker(skip)
