"""A trained model as a folder (local or gs://): weights, and what is needed to rebuild and reproduce it.

model.pt     the state_dict (torch.save); loaded with weights_only=True, so it can hold tensors only
config.json  {"format", "method": its method's name (`metaheac.methods`), "model": its ModelConfig,
             "schema": the dataset schema, "extra": e.g. the training config and metrics};
             written last, so a folder with it is complete
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from typing import Any

import torch

from metaheac import storage
from metaheac.data.errors import InputError, as_input_error
from metaheac.data.schema import DatasetSchema
from metaheac.memory import check_fits, table_bytes
from metaheac.model.config import ModelConfig
from metaheac.model.network import Network

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
FORMAT = 1
# What torch.load raises on a truncated or foreign file (its unpickler and zip reader).
_UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, AttributeError, IndexError)


def read_tensors(uri: str, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """A torch.save file of tensors (weights_only: never other pickles); an InputError naming `uri` when
    it is not one."""
    data = storage.read_bytes(uri)
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except _UNREADABLE as error:
        reason = " ".join(str(error).split())[:120]
        raise InputError(f"{uri}: not a readable torch file of tensors ({type(error).__name__}: {reason})") from None
    if not isinstance(state, dict):
        raise InputError(f"{uri}: expected a dict of tensors, found {type(state).__name__}")
    return state


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
    source = storage.join(storage.published(uri), CONFIG_FILE)  # a registry version is a published folder
    try:
        info = json.loads(storage.read_bytes(source))
    except ValueError as error:  # also UnicodeDecodeError
        reason = str(error)[:120]
        raise InputError(f"{source}: not JSON ({reason}): is {uri} a model folder written by `train`?") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise InputError(f"{source}: model format {str(found)[:40]!r} is not {FORMAT}")
    return info


def load_model(
    uri: str, build: Callable[[str, DatasetSchema, ModelConfig], Network], device: torch.device | str = "cpu"
) -> tuple[Network, dict[str, Any]]:
    """The network rebuilt from config.json by `build(method name, schema, model config)` (the method
    registry's, which lives above this layer) with its weights (tensors only, never other pickles), and
    config.json itself."""
    info = read_model_info(uri)
    uri = storage.published(uri)
    source = storage.join(uri, CONFIG_FILE)
    schema = DatasetSchema.from_json(json.dumps(info.get("schema")), source=source)
    with as_input_error(f"{source}: "):  # an unknown method, a malformed model config
        config = ModelConfig.from_dict(info["model"])
        check_fits(f"the {info['method']} network of {uri}", table_bytes(schema, config.embedding_dim), str(device))
        model = build(info["method"], schema, config)
    weights = storage.join(uri, MODEL_FILE)
    state = read_tensors(weights, map_location=device)
    ours = model.state_dict()
    if state.keys() != ours.keys() or any(getattr(state[k], "shape", None) != v.shape for k, v in ours.items()):
        raise InputError(f"{weights}: these weights are not those of the {info['method']} network that "
                         f"{CONFIG_FILE} describes (another method or model config?)")
    model.to(device=device, dtype=next(iter(state.values())).dtype)  # as saved, float64 included
    model.load_state_dict(state)
    return model, info
