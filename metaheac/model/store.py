"""A trained model as a folder (local or gs://): weights, and what is needed to rebuild and reproduce it.

model.pt     the state_dict (torch.save); loaded with weights_only=True, so it can hold tensors only
config.json  {"format", "method": its method's name (`metaheac.methods`), "model": its ModelConfig,
             "settings": the method's own settings (`Method.settings_of`; null for a method without),
             "schema": the dataset schema, "weights_sha256": model.pt's, "extra": e.g. the training
             config and metrics}

The two are published as one folder (`storage.publish_dir`: one atomic swap), and every load checks
model.pt against its sha256. A folder saved before the checksum loads with a one-line warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
from collections.abc import Callable
from typing import Any

import torch

from metaheac.data.errors import InputError, as_input_error
from metaheac.data.schema import DatasetSchema
from metaheac.model.config import ModelConfig
from metaheac.model.network import Network
from metaheac.runtime import storage
from metaheac.runtime.memory import check_fits, table_bytes

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
FORMAT = 1
# What torch.load raises on a truncated or foreign file (its unpickler and zip reader).
_UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, AttributeError, IndexError)


def read_tensors(uri: str, map_location: torch.device | str = "cpu", data: bytes | None = None) -> dict[str, Any]:
    """A torch.save file of tensors (weights_only: never other pickles), read from `uri` unless its bytes
    are given; an InputError naming `uri` when it is not one."""
    data = storage.read_bytes(uri) if data is None else data
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except _UNREADABLE as error:
        reason = " ".join(str(error).split())[:120]
        raise InputError(f"{uri}: not a readable torch file of tensors ({type(error).__name__}: {reason})") from None
    if not isinstance(state, dict):
        raise InputError(f"{uri}: expected a dict of tensors, found {type(state).__name__}")
    return state


def save_model(
    model: Network, uri: str, method: str = "MetaHeac", extra: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """Write `model` (the network of the method named `method`, built with its `settings`, as
    `Method.settings_of` gives them) under the folder `uri`.

    `extra` must be JSON-serialisable; nothing is written when it is not.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    info = {
        "format": FORMAT,
        "method": method,
        "model": model.config.to_dict(),
        "settings": settings,
        "schema": json.loads(model.schema.to_json()),
        "weights_sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
        "extra": extra or {},
    }
    write_model_folder(uri, buffer.getvalue(), info)


def write_model_folder(uri: str, weights: bytes, info: dict[str, Any], files: dict[str, str] | None = None) -> None:
    """Publish model.pt, config.json (and `files`, name: text) as one folder: a reader sees the old model
    or the new one, never one's weights with the other's config. `info` must be JSON-serialisable;
    nothing is written when it is not."""
    text = json.dumps(info, indent=2, sort_keys=True)
    with storage.publish_dir(uri) as staging:
        (staging / MODEL_FILE).write_bytes(weights)
        (staging / CONFIG_FILE).write_text(text)
        for name, content in (files or {}).items():
            (staging / name).write_text(content)


def read_weights(uri: str, info: dict[str, Any], map_location: torch.device | str = "cpu") -> tuple[bytes, dict]:
    """The model folder's model.pt (bytes, and its tensors), checked against the sha256 config.json records."""
    weights = storage.join(storage.published(uri), MODEL_FILE)
    data = storage.read_bytes(weights)
    expected, actual = info.get("weights_sha256"), hashlib.sha256(data).hexdigest()
    if expected is None:
        log.warning("%s: config.json records no weights_sha256 (saved before checksums): loaded unchecked; "
                    "retrain or republish it to add one", uri)
    elif actual != expected:
        raise InputError(f"{weights}: its sha256 {actual[:16]}... is not the {str(expected)[:16]}... that "
                         f"{CONFIG_FILE} records: the file is corrupt or was replaced; retrain or republish it")
    return data, read_tensors(weights, map_location, data)


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
    missing = [k for k in ("method", "model", "schema") if k not in info]
    if missing:
        raise InputError(f"{source}: no {missing[0]!r} key: is {uri} a model folder written by `train`?")
    return info


def load_model(
    uri: str, build: Callable[[str, DatasetSchema, ModelConfig, dict[str, Any]], Network],
    device: torch.device | str = "cpu",
) -> tuple[Network, dict[str, Any]]:
    """The network rebuilt from config.json by `build(method name, schema, model config, config.json)` (the
    method registry's, which lives above this layer and reads the method's settings from config.json) with
    its weights (tensors only, never other pickles), and config.json itself."""
    info = read_model_info(uri)
    uri = storage.published(uri)
    source = storage.join(uri, CONFIG_FILE)
    schema = DatasetSchema.from_json(json.dumps(info.get("schema")), source=source)
    with as_input_error(f"{source}: "):  # an unknown method, a malformed model config
        config = ModelConfig.from_dict(info["model"])
        check_fits(f"the {info['method']} network of {uri}", table_bytes(schema, config.embedding_dim), str(device))
        model = build(info["method"], schema, config, info)
    weights = storage.join(uri, MODEL_FILE)
    state = read_weights(uri, info, map_location=device)[1]
    ours = model.state_dict()
    if state.keys() != ours.keys() or any(getattr(state[k], "shape", None) != v.shape for k, v in ours.items()):
        raise InputError(f"{weights}: these weights are not those of the {info['method']} network that "
                         f"{CONFIG_FILE} describes (another method or model config?)")
    model.to(device=device, dtype=next(iter(state.values())).dtype)  # as saved, float64 included
    model.load_state_dict(state)
    return model, info


def _fields(schema: DatasetSchema) -> list[tuple[str, str, int, int]]:
    kinds = (("user", schema.user_single), ("user list", schema.user_lists), ("campaign", schema.campaign_fields))
    return [(f.name, kind, f.vocab_size, f.length) for kind, fields in kinds for f in fields]


def check_same_data(info: dict[str, Any], dataset: DatasetSchema, model_uri: str, dataset_uri: str) -> None:
    """Refuse to use a model with a dataset of other fields or vocabulary sizes: its ids would index other
    values (or past its tables). The same fields, in order, with the same vocabulary sizes and list
    lengths is the same data, another build of it included (another split, threshold or folder);
    provenance and the campaign hierarchy (what the model was fit with, it keeps its own) do not count.
    `info` is the model's config.json."""
    trained_on = DatasetSchema.from_json(json.dumps(info["schema"]), source=f"{model_uri}/{CONFIG_FILE}")
    ours, theirs = _fields(trained_on), _fields(dataset)
    if ours == theirs:
        return
    model_fields, data_fields = {f[0]: f for f in ours}, {f[0]: f for f in theirs}
    differences = [f"{name} only in the model" for name in model_fields if name not in data_fields]
    differences += [f"{name} only in the dataset" for name in data_fields if name not in model_fields]
    for name, (_, kind, vocab, length) in model_fields.items():
        if name in data_fields and data_fields[name] != model_fields[name]:
            _, other_kind, other_vocab, other_length = data_fields[name]
            differences.append(f"{name}: {kind} field of vocabulary {vocab} (length {length}) in the model, "
                               f"{other_kind} field of {other_vocab} (length {other_length}) in the dataset")
    differences = differences or ["the same fields in another order"]
    more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
    source = info.get("extra", {}).get("dataset") if isinstance(info.get("extra"), dict) else None
    hint = f" ({str(source)[:200]})" if source else ""
    raise InputError(f"the model {model_uri} was trained on other data than the dataset {dataset_uri}: "
                     f"{differences[0]}{more}; use the dataset it was trained on{hint} or train on this one")
