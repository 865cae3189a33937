"""The canonical dataset on disk or in GCS, and its loading into tensors.

Layout under one URI (a folder):
    schema.json                        fields, vocabulary sizes, provenance
    users.parquet                      uid, single fields (int32), list fields (fixed-size int32 lists)
                                       and their `<field>_length`; row i is user index i
    campaigns.parquet                  campaign (index), aid, ad fields, split, seed_positives, row counts
    campaign_vocab.json                raw ad field value -> index, per ad field
    rows/split=S/stage=K/part-0.parquet  campaign, user, label; sorted by campaign, so one campaign
                                       reads through row-group statistics without the rest
    _SUCCESS                           written last: a dataset without it is incomplete
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaheac.data.errors import InputError
from metaheac.data.schema import DatasetSchema
from metaheac.runtime import storage

SCHEMA_FILE = "schema.json"
USERS_FILE = "users.parquet"
CAMPAIGNS_FILE = "campaigns.parquet"
CAMPAIGN_VOCAB_FILE = "campaign_vocab.json"  # {ad field: {raw value: index}}, to expand for a new campaign
ROW_GROUP_ROWS = 64 * 1024


def rows_file(split: str, stage: int) -> str:
    return f"rows/split={split}/stage={stage}/part-0.parquet"


def users_arrow_schema(single: list[str], lists: dict[str, int]) -> pa.Schema:
    fields = [pa.field("uid", pa.int64())]
    fields += [pa.field(name, pa.int32()) for name in single]
    fields += [pa.field(name, pa.list_(pa.int32(), length)) for name, length in lists.items()]
    fields += [pa.field(f"{name}_length", pa.int8()) for name in lists]
    return pa.schema(fields)


def users_record_batch(
    arrow_schema: pa.Schema,
    uid: np.ndarray,
    single: np.ndarray,
    lists: list[np.ndarray],
) -> pa.RecordBatch:
    """`single` is [n, S] int32; `lists` holds one [n, L] int32 array per list field (0 = padding)."""
    columns: list[pa.Array] = [pa.array(uid, pa.int64())]
    columns += [pa.array(single[:, i]) for i in range(single.shape[1])]
    columns += [
        pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1)), ids.shape[1]) for ids in lists
    ]
    columns += [pa.array((ids != 0).sum(1).astype(np.int8)) for ids in lists]
    return pa.RecordBatch.from_arrays(columns, schema=arrow_schema)


class DatasetWriter:
    """Writes one dataset into a local staging folder; `write_dataset` publishes it atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._users: pq.ParquetWriter | None = None

    def add_users(self, batch: pa.RecordBatch) -> None:
        if self._users is None:
            self._users = pq.ParquetWriter(self.folder / USERS_FILE, batch.schema)
        self._users.write_batch(batch, row_group_size=ROW_GROUP_ROWS)

    def close_users(self) -> None:
        if self._users is not None:
            self._users.close()

    def write_campaigns(self, table: pa.Table) -> None:
        pq.write_table(table, self.folder / CAMPAIGNS_FILE)

    def write_rows(self, split: str, stage: int, table: pa.Table) -> None:
        path = self.folder / rows_file(split, stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.sort_by("campaign"), path, row_group_size=ROW_GROUP_ROWS)

    def write_campaign_vocab(self, fields: list[str], raw: np.ndarray, codes: np.ndarray) -> None:
        """`raw` and `codes` are [n_ads, n_fields]: each ad's raw field values and their indexes."""
        vocab = {
            name: {str(r): int(c) for r, c in zip(raw[:, j].tolist(), codes[:, j].tolist(), strict=True)}
            for j, name in enumerate(fields)
        }
        (self.folder / CAMPAIGN_VOCAB_FILE).write_text(json.dumps(vocab, indent=1, sort_keys=True))

    def write_schema(self, schema: DatasetSchema) -> None:
        (self.folder / SCHEMA_FILE).write_text(schema.to_json())


@contextmanager
def write_dataset(uri: str) -> Iterator[DatasetWriter]:
    """Nothing appears at `uri` unless the block completes (then `_SUCCESS` is written last)."""
    with storage.publish_dir(uri) as folder:
        writer = DatasetWriter(Path(folder))
        try:
            yield writer
        finally:
            writer.close_users()


def rows_table(campaign: np.ndarray, user: np.ndarray, label: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "campaign": pa.array(campaign, pa.int32()),
            "user": pa.array(user, pa.int32()),
            "label": pa.array(label, pa.int8()),
        }
    )


# ---- reading ----------------------------------------------------------------------------


def fetch(uri: str, files: list[str]) -> Path:
    """A local folder holding the dataset's named files (downloaded from GCS when needed)."""
    if not storage.is_complete(uri):
        raise InputError(
            f"{uri} is not a complete dataset (no _SUCCESS marker): run `metaheac preprocess` first"
        )
    return storage.fetch_dir(uri, files)


def load_schema(uri: str) -> DatasetSchema:
    source = storage.join(storage.published(uri), SCHEMA_FILE)
    return DatasetSchema.from_json(storage.read_bytes(source), source=storage.join(uri, SCHEMA_FILE))


def load_campaign_frame(uri: str):  # -> pandas.DataFrame
    return pq.read_table(fetch(uri, [CAMPAIGNS_FILE]) / CAMPAIGNS_FILE).to_pandas()
