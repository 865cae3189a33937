"""The canonical dataset (see `dataset.py`) loaded into tensors for training, adaptation and scoring."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch

from metaheac.data.dataset import CAMPAIGNS_FILE, SCHEMA_FILE, USERS_FILE, fetch, rows_file
from metaheac.data.schema import SPLITS, STAGES, DatasetSchema
from metaheac.data.tensors import CampaignTable, Features, Rows, UserTable


def load_features(uri: str) -> Features:
    """Users and campaigns as tensors (CPU; move with `.to(device)`)."""
    folder = fetch(uri, [SCHEMA_FILE, USERS_FILE, CAMPAIGNS_FILE])
    schema = DatasetSchema.from_json((folder / SCHEMA_FILE).read_text(), source=uri)
    users = pq.read_table(folder / USERS_FILE)
    single = np.stack(
        [users.column(f.name).to_numpy() for f in schema.user_single], axis=1
    ).astype(np.int32)
    lists = [
        users.column(f.name).combine_chunks().values.to_numpy().reshape(len(users), f.length)
        for f in schema.user_lists
    ]
    user_table = UserTable(
        uid=users.column("uid").to_numpy(),
        single=torch.from_numpy(np.ascontiguousarray(single)),
        lists=torch.from_numpy(np.ascontiguousarray(np.concatenate(lists, axis=1), dtype=np.int32)),
    )
    return Features(schema, user_table, load_campaigns(uri, schema))


def load_campaigns(uri: str, schema: DatasetSchema) -> CampaignTable:
    """The campaign table alone (a user base too large to load reads its users by row group)."""
    campaigns = pq.read_table(fetch(uri, [CAMPAIGNS_FILE]) / CAMPAIGNS_FILE)
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
    table = pq.read_table(fetch(uri, [name]) / name, filters=filters)
    return Rows(
        campaign=torch.from_numpy(table.column("campaign").to_numpy().astype(np.int64)),
        user=torch.from_numpy(table.column("user").to_numpy().astype(np.int64)),
        label=torch.from_numpy(table.column("label").to_numpy().astype(np.float32)),
    )
