"""A trained model as a folder (local or gs://): weights, and what is needed to rebuild and reproduce it.

model.pt     the state_dict (torch.save); loaded with weights_only=True, so it can hold tensors only
config.json  {"format", "method": its method's name (`metaheac.methods`), "model": its ModelConfig,
             "schema": the dataset schema, "extra": e.g. the training config and metrics};
             written last, so a folder with it is complete
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import torch

from metaheac import storage
from metaheac.data.schema import DatasetSchema
from metaheac.model.config import ModelConfig
from metaheac.model.network import Network

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
FORMAT = 1


def save_model(model: Network, uri: str, method: str = "MetaHeac", extra: dict[str, Any] | None = None) -> None:
    """Write `model` (the network of the method named `method`) under the folder `uri`.

    `extra` must be JSON-serialisable; nothing is written when it is not.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    info = {
        "format": FORMAT,
        "method": method,
        "model": model.config.to_dict(),
        "schema": json.loads(model.schema.to_json()),
        "extra": extra or {},
    }
    text = json.dumps(info, indent=2, sort_keys=True)
    storage.write_bytes(storage.join(uri, MODEL_FILE), buffer.getvalue())
    storage.write_text(storage.join(uri, CONFIG_FILE), text)


def read_model_info(uri: str) -> dict[str, Any]:
    """The folder's config.json: method, model config, schema and the `extra` given at save time."""
    source = storage.join(uri, CONFIG_FILE)
    info = json.loads(storage.read_text(source))
    if info.get("format") != FORMAT:
        raise ValueError(f"{source}: model format {info.get('format')!r} is not {FORMAT}")
    return info


def load_model(
    uri: str, build: Callable[[str, DatasetSchema, ModelConfig], Network], device: torch.device | str = "cpu"
) -> tuple[Network, dict[str, Any]]:
    """The network rebuilt from config.json by `build(method name, schema, model config)` (the method
    registry's, which lives above this layer) with its weights (tensors only, never other pickles), and
    config.json itself."""
    info = read_model_info(uri)
    schema = DatasetSchema.from_json(json.dumps(info["schema"]), source=storage.join(uri, CONFIG_FILE))
    model = build(info["method"], schema, ModelConfig.from_dict(info["model"]))
    weights = io.BytesIO(storage.read_bytes(storage.join(uri, MODEL_FILE)))
    state = torch.load(weights, map_location=device, weights_only=True)
    model.to(device=device, dtype=next(iter(state.values())).dtype)  # as saved, float64 included
    model.load_state_dict(state)
    return model, info
