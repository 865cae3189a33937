"""Reading the spec's tables (Parquet or CSV, local or gs://) batch by batch, and turning their columns
into the builder's arrays with errors that name the table, the column and the row."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from metaheac.data.build import Campaigns, EventBatch, Sparse, UserBatch, build
from metaheac.data.errors import InputError, Problems, quote
from metaheac.data.spec import Table, TablesSpec, UserColumn, load_spec, spec_json
from metaheac.runtime import storage

BATCH_ROWS = 256 * 1024
CSV_BLOCK_BYTES = 16 << 20
_INTEGER = r"^\s*[-+]?[0-9]{1,18}\s*$"


@dataclass
class Chunk:
    """Rows `first_row` onwards (1-based, a CSV header not counted) of the file `source`."""

    source: str
    first_row: int
    batch: pa.RecordBatch

    def where(self, i: int) -> str:
        return f"{self.source} row {self.first_row + i}"

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.first_row, self.first_row + self.batch.num_rows)


def _files(table: Table) -> list[str]:
    if storage.is_file(table.uri):
        return [table.uri]
    files = [f for f in storage.list_files(table.uri) if f.endswith(f".{table.format}")]
    if not files:
        raise InputError(f"missing table {table.uri}: no file, nor a folder of .{table.format} files (a relative "
                         "path is inside the spec's folder, or the --input folder)")
    return files


def chunks(table: Table, columns: list[str]) -> Iterator[Chunk]:
    """The named columns of every file of `table`, in batches; a CSV is read as text (typed below, where a
    bad value can be named by its row)."""
    for uri in _files(table):
        name = uri.rsplit("/", 1)[-1]
        row = 1
        with storage.open_read(uri) as stream:
            for batch in _batches(stream, name, table, columns):
                yield Chunk(name, row, batch)
                row += batch.num_rows


def _batches(stream: BinaryIO, name: str, table: Table, columns: list[str]) -> Iterator[pa.RecordBatch]:
    if table.format == "parquet":
        try:
            parquet = pq.ParquetFile(stream)
        except (pa.ArrowException, OSError) as error:
            raise InputError(f"{name}: not a readable Parquet file ({quote(str(error), 120)})") from None
        _check_columns(name, parquet.schema_arrow.names, columns)
        yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)
        return
    try:
        reader = pcsv.open_csv(
            pa.CompressedInputStream(stream, "gzip") if name.endswith(".gz") else stream,
            read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(delimiter=table.separator),
            convert_options=pcsv.ConvertOptions(
                include_columns=columns, column_types=dict.fromkeys(columns, pa.string()),
                strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError) as error:
        _check_columns(name, _csv_header(table, name), columns)
        raise InputError(f"{name}: not a readable CSV file ({quote(str(error), 160)})") from None
    try:
        yield from reader
    except pa.ArrowInvalid as error:
        raise InputError(f"{name}: {quote(' '.join(str(error).split()), 200)}") from None


def _csv_header(table: Table, name: str) -> list[str]:
    """The column names on the first line of the table's file `name` (to say which one is missing)."""
    uri = next(u for u in _files(table) if u.rsplit("/", 1)[-1] == name)
    with storage.open_read(uri) as stream:
        first = (gzip.GzipFile(fileobj=stream) if name.endswith(".gz") else stream).readline()
    return first.decode("utf-8-sig", "replace").rstrip("\r\n").split(table.separator)


def _check_columns(name: str, present: list[str], needed: list[str]) -> None:
    missing = [c for c in needed if c not in present]
    if missing:
        raise InputError(f"{name}: no column {missing[0]!r} (columns: {quote(', '.join(present), 160)})")


# ---- typing one column ---------------------------------------------------------------------


def integers(chunk: Chunk, column: str, what: str = "integers") -> np.ndarray:
    """The column as int64; a missing or non-integer value is an error naming its row."""
    values = chunk.batch.column(column)
    if values.null_count:
        i = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{chunk.where(i)}: column {column!r} is empty, expected {what}")
    if pa.types.is_integer(values.type) or pa.types.is_boolean(values.type):
        return values.cast(pa.int64()).to_numpy()
    if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
        return values.cast(pa.timestamp("s")).cast(pa.int64()).to_numpy()
    if _is_text(values.type):
        ok = pc.match_substring_regex(values, _INTEGER).to_numpy(zero_copy_only=False)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            given = quote(values[i].as_py(), 40)
            raise InputError(f"{chunk.where(i)}: column {column!r} holds {given}, expected {what}")
        return pc.cast(pc.utf8_trim_whitespace(values), pa.int64()).to_numpy()
    if pa.types.is_floating(values.type):
        numbers = values.to_numpy(zero_copy_only=False)
        bad = numbers != np.round(numbers)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{chunk.where(i)}: column {column!r} holds {numbers[i]!r}, expected {what}")
        return numbers.astype(np.int64)
    raise InputError(f"{chunk.source}: column {column!r} is {values.type}, expected {what}")


def _numbers(chunk: Chunk, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, float values) of the column's present values."""
    values = chunk.batch.column(column)
    if _is_text(values.type):
        values = pc.if_else(pc.equal(pc.utf8_trim_whitespace(values), ""), pa.scalar(None, pa.string()), values)
        try:
            values = pc.cast(values, pa.float64())
        except pa.ArrowInvalid:
            text = values.to_pylist()
            i = next(i for i, v in enumerate(text) if v is not None and not _is_number(v))
            raise InputError(f"{chunk.where(i)}: column {column!r} holds {quote(text[i], 40)}, expected a number"
                             ) from None
    elif not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise InputError(f"{chunk.source}: column {column!r} is {values.type}, expected numbers")
    present = ~values.is_null().to_numpy(zero_copy_only=False)
    numbers = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    present &= ~np.isnan(numbers)
    rows = np.flatnonzero(present)
    return rows, numbers[rows]


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _values(array: pa.Array) -> np.ndarray:
    """Categorical values as numpy: int64 for integers, else objects (strings; None where missing, as an
    empty CSV cell is)."""
    if pa.types.is_integer(array.type):
        if array.null_count:
            return np.asarray(array.to_pylist(), dtype=object)
        return array.cast(pa.int64()).to_numpy()
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    # through a dictionary: one Python string per distinct value, not per row
    encoded = pc.dictionary_encode(array.cast(pa.string()))
    words = np.asarray([*(w or None for w in encoded.dictionary.to_pylist()), None], dtype=object)
    return words[encoded.indices.fill_null(len(words) - 1).to_numpy()]


def user_column(chunk: Chunk, column: UserColumn) -> Sparse:
    """One user column as (row, position, value) triples, in row then position order."""
    array = chunk.batch.column(column.name)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if column.kind == "numeric":
        rows, numbers = _numbers(chunk, column.name)
        return Sparse(rows, np.zeros(len(rows), np.int64), numbers)
    if column.kind == "categorical":
        if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
            raise InputError(f"{chunk.source}: column {column.name!r} holds lists; declare it a list column")
        present = array.is_valid()
        if _is_text(array.type):
            present = pc.and_(present, pc.not_equal(array, ""))
        rows = np.flatnonzero(present.to_numpy(zero_copy_only=False))
        return Sparse(rows, np.zeros(len(rows), np.int64), _values(array.filter(present)))
    if _is_text(array.type):
        if column.separator is None:
            raise InputError(f"{chunk.source}: list column {column.name!r} holds text; declare its separator "
                             f"(users.columns.{column.name}.separator)")
        array = pc.split_pattern(array.fill_null(""), column.separator)
    elif not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
              or pa.types.is_fixed_size_list(array.type)):
        raise InputError(f"{chunk.source}: column {column.name!r} is {array.type}, expected lists")
    flat = pc.list_flatten(array)
    parent = pc.list_parent_indices(array).to_numpy()
    keep = flat.is_valid()
    if _is_text(flat.type):
        flat = pc.utf8_trim_whitespace(flat)
        keep = pc.and_(keep, pc.not_equal(flat, ""))
    keep_np = keep.to_numpy(zero_copy_only=False)
    rows = parent[keep_np]
    values = _values(flat.filter(keep))
    starts = np.searchsorted(rows, np.arange(chunk.batch.num_rows))
    return Sparse(rows, np.arange(len(rows)) - starts[rows], values)


# ---- the three tables -------------------------------------------------------------------


class TablesReader:
    """The spec's tables as the builder reads them."""

    def __init__(self, spec: TablesSpec) -> None:
        self.spec = spec
        self.users_source = spec.users.table.uri.rsplit("/", 1)[-1]
        self.campaigns_source = spec.campaigns.table.uri.rsplit("/", 1)[-1]
        self.events_source = spec.events.table.uri.rsplit("/", 1)[-1]

    def user_batches(self, problems: Problems, columns: list[UserColumn] | None = None) -> Iterator[UserBatch]:
        users = self.spec.users
        wanted = list(users.columns) if columns is None else columns
        for chunk in chunks(users.table, [users.id, *(c.name for c in wanted)]):
            yield UserBatch(
                chunk.source, "row", chunk.rows,
                integers(chunk, users.id, "an integer user id"),
                [user_column(chunk, c) for c in wanted],
            )

    def campaigns(self) -> Campaigns:
        spec = self.spec.campaigns
        split_column = self.spec.split.column
        columns = [spec.id, *spec.columns, *([spec.start] if spec.start else []),
                   *([split_column] if split_column else [])]
        parts = list(chunks(spec.table, columns))
        if not parts or not sum(p.batch.num_rows for p in parts):
            raise InputError(f"{self.campaigns_source}: no campaigns")
        ids = np.concatenate([integers(p, spec.id, "an integer campaign id") for p in parts])
        attributes = {name: np.concatenate([_values(p.batch.column(name)) for p in parts]) for name in spec.columns}
        start = np.concatenate([integers(p, spec.start, "an integer or timestamp start time") for p in parts]
                               ) if spec.start else None
        split = np.concatenate([_values(p.batch.column(split_column)) for p in parts]) if split_column else None
        return Campaigns(self.campaigns_source, "row", np.concatenate([p.rows for p in parts]), spec.id, ids,
                         attributes, start, split)

    def event_batches(self, problems: Problems) -> Iterator[EventBatch]:
        events = self.spec.events
        label = events.labels.column
        stage = self.spec.stages.column
        columns = [events.user, events.campaign, *([label] if label else []), *([events.time] if events.time else []),
                   *([stage] if stage else [])]
        for chunk in chunks(events.table, list(dict.fromkeys(columns))):
            keep = np.ones(chunk.batch.num_rows, bool)
            labels = None
            if label is not None:
                labels = self._labels(chunk, label, keep, problems)
            stages = None
            if stage is not None:
                stages = integers(chunk, stage, "a stage (1 or 2)")
                for i in np.flatnonzero(~np.isin(stages, (1, 2))):
                    problems.report("bad_stages", f"{chunk.where(int(i))}: column {stage!r} holds {stages[i]}, "
                                    "expected 1 or 2")
                keep &= np.isin(stages, (1, 2))
            yield EventBatch(
                chunk.source, "row", chunk.rows[keep],
                integers(chunk, events.user, "an integer user id")[keep],
                integers(chunk, events.campaign, "an integer campaign id")[keep],
                None if labels is None else labels[keep],
                integers(chunk, events.time, "an integer or timestamp time")[keep] if events.time else None,
                None if stages is None else stages[keep].astype(np.int8),
            )

    @staticmethod
    def _labels(chunk: Chunk, column: str, keep: np.ndarray, problems: Problems) -> np.ndarray:
        array = chunk.batch.column(column)
        if _is_text(array.type):
            text = pc.utf8_trim_whitespace(array)
            ok = pc.is_in(text, pa.array(["0", "1"])).to_numpy(zero_copy_only=False)
            labels = pc.equal(text, "1").to_numpy(zero_copy_only=False).astype(np.int8)
        elif pa.types.is_integer(array.type) or pa.types.is_boolean(array.type) or pa.types.is_floating(array.type):
            numbers = array.cast(pa.float64()).to_numpy(zero_copy_only=False)
            ok = np.isin(numbers, (0.0, 1.0))
            labels = (numbers == 1).astype(np.int8)
        else:
            raise InputError(f"{chunk.source}: column {column!r} is {array.type}, expected labels 0 and 1")
        for i in np.flatnonzero(~ok):
            problems.report("bad_labels", f"{chunk.where(int(i))}: column {column!r} holds "
                            f"{quote(str(array[int(i)].as_py()), 40)}, expected a label 0 or 1")
        keep &= ok
        return labels


def preprocess_tables(spec_uri: str, output_uri: str, progress: bool = True, spec: TablesSpec | None = None,
                      tables: str | None = None) -> dict:
    """Read the tables the spec at `spec_uri` names (relative ones inside the folder `tables`, default the
    spec's; or `spec`, that file's spec changed) and publish the canonical dataset at `output_uri`."""
    spec = spec or load_spec(spec_uri, tables)
    return build(spec, TablesReader(spec), output_uri, {"source": "tables", "input": spec_uri, "spec": spec_json(spec)},
                 progress, stage1_source=f" in {spec.events.table.uri.rsplit('/', 1)[-1]}")
