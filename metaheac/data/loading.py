"""The canonical dataset (see `dataset.py`) loaded into tensors for training, adaptation and scoring.

Every table is checked against the schema as it loads (columns present, list lengths, ids inside their
vocabularies, row indexes inside the tables), so a mismatch fails here in one line naming the file
rather than as an index error deep in training or adaptation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from metaheac.data.dataset import CAMPAIGNS_FILE, SCHEMA_FILE, USERS_FILE, fetch, rows_file
from metaheac.data.errors import InputError
from metaheac.data.schema import SPLITS, STAGES, DatasetSchema, Field
from metaheac.data.tensors import CampaignTable, Features, Rows, UserTable
from metaheac.runtime import storage


def load_features(uri: str) -> Features:
    """Users and campaigns as tensors (CPU; move with `.to(device)`)."""
    folder = fetch(uri, [SCHEMA_FILE, USERS_FILE, CAMPAIGNS_FILE])
    schema = DatasetSchema.from_json((folder / SCHEMA_FILE).read_bytes(), source=storage.join(uri, SCHEMA_FILE))
    users = _read(folder / USERS_FILE, storage.join(uri, USERS_FILE))
    _check_fields(users, ["uid", *(f.name for f in schema.user_single)], schema.user_single + schema.user_lists,
                  storage.join(uri, USERS_FILE))
    table = user_table(users, schema)
    del users
    # Arrow's allocator keeps a freed table's pages: the decoded users (~7 GB at 13M users, twice the
    # tensors) stayed in the RSS of every later phase of `train` (bench/README.md, "Twelfth round").
    pa.default_memory_pool().release_unused()
    return Features(schema, table, load_campaigns(uri, schema))


def user_table(users: pa.Table, schema: DatasetSchema) -> UserTable:
    """A users table (checked against the schema) as tensors."""
    single = np.stack([users.column(f.name).to_numpy() for f in schema.user_single], axis=1)
    lists = [
        users.column(f.name).combine_chunks().values.to_numpy().reshape(len(users), f.length)
        for f in schema.user_lists
    ]
    return UserTable(
        uid=users.column("uid").to_numpy(),
        single=torch.from_numpy(np.ascontiguousarray(single, dtype=np.int32)),
        lists=torch.from_numpy(side_by_side(lists, sum(f.length for f in schema.user_lists))),
    )


def side_by_side(parts: list[np.ndarray], width: int) -> np.ndarray:
    """`np.concatenate(parts, axis=1)` as int32 [n, width], about 2x faster: a part's row is copied as one
    item of its bytes, not element by element (a loop of 5 or 10 per row, whose overhead dominated)."""
    n = len(parts[0]) if parts else 0
    out = np.empty((n, width), np.int32)
    row_bytes, at = out.view(np.uint8), 0
    for part in parts:
        item = np.dtype((np.void, 4 * part.shape[1]))
        row_bytes[:, 4 * at : 4 * (at + part.shape[1])].view(item)[:, 0] = (
            np.ascontiguousarray(part, dtype=np.int32).view(item)[:, 0])
        at += part.shape[1]
    return out


def load_campaigns(uri: str, schema: DatasetSchema) -> CampaignTable:
    """The campaign table alone (a user base too large to load reads its users by row group)."""
    source = storage.join(uri, CAMPAIGNS_FILE)
    campaigns = _read(fetch(uri, [CAMPAIGNS_FILE]) / CAMPAIGNS_FILE, source)
    _check_fields(campaigns, ["aid", "split", "seed_positives"], schema.campaign_fields, source)
    fields = np.stack([campaigns.column(f.name).to_numpy() for f in schema.campaign_fields], axis=1)
    return CampaignTable(
        aid=campaigns.column("aid").to_numpy(),
        fields=torch.from_numpy(np.ascontiguousarray(fields, dtype=np.int32)),
        split=np.asarray(campaigns.column("split").to_pylist(), dtype=object),
        seed_positives=campaigns.column("seed_positives").to_numpy(),
    )


def load_rows(uri: str, split: str, stage: int, campaigns: list[int] | None = None) -> Rows:
    """Rows of one split and stage; with `campaigns`, only theirs (row groups of others are skipped)."""
    if split not in SPLITS or stage not in STAGES:
        raise ValueError(f"no rows for split {split!r} stage {stage!r}: splits {SPLITS}, stages {STAGES}")
    name = rows_file(split, stage)
    filters = [("campaign", "in", list(campaigns))] if campaigns is not None else None
    folder = fetch(uri, [name, USERS_FILE, CAMPAIGNS_FILE])
    table = _read(folder / name, storage.join(uri, name), filters)
    _check_fields(table, ["campaign", "user", "label"], [], storage.join(uri, name))
    for column, tables in (("campaign", CAMPAIGNS_FILE), ("user", USERS_FILE)):
        _check_range(table.column(column), column, pq.read_metadata(folder / tables).num_rows,
                     f"rows of {tables}", storage.join(uri, name))
    _check_range(table.column("label"), "label", 2, "labels 0 and 1", storage.join(uri, name))
    return Rows(
        campaign=torch.from_numpy(table.column("campaign").to_numpy().astype(np.int64)),
        user=torch.from_numpy(table.column("user").to_numpy().astype(np.int64)),
        label=torch.from_numpy(table.column("label").to_numpy().astype(np.float32)),
    )


def _read(path: Path, uri: str, filters: list | None = None) -> pa.Table:
    try:
        return pq.read_table(path, filters=filters)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"{uri}: not a readable Parquet file ({' '.join(str(error).split())[:120]})") from None


def _check_fields(table: pa.Table, columns: list[str], fields: list[Field], uri: str) -> None:
    """The columns and the schema's fields are present; list fields have their length; ids are in their
    vocabularies."""
    missing = [c for c in [*columns, *(f.name for f in fields)] if c not in table.column_names]
    if missing:
        raise InputError(f"{uri}: no column(s) {', '.join(missing)}: re-run `metaheac preprocess`")
    for f in fields:
        column = table.column(f.name)
        if f.length > 1:
            length = getattr(column.type, "list_size", None)
            if length != f.length:
                raise InputError(f"{uri}: list field {f.name} holds {length} ids a user, schema.json says {f.length}")
            column = pc.list_flatten(column)
        _check_range(column, f.name, f.vocab_size, "its vocabulary in schema.json", uri)


def _check_range(column: pa.ChunkedArray | pa.Array, name: str, size: int, what: str, uri: str) -> None:
    if column.null_count:
        raise InputError(f"{uri}: column {name} has {column.null_count} missing values")
    if not pa.types.is_integer(column.type):
        raise InputError(f"{uri}: column {name} is {column.type}, expected integers")
    low, high = pc.min_max(column).values()
    if low.as_py() is not None and (low.as_py() < 0 or high.as_py() >= size):
        bad = low.as_py() if low.as_py() < 0 else high.as_py()
        raise InputError(f"{uri}: column {name} has id {bad}, outside {what} (0..{size - 1})")
