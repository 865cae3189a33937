"""Raw Tencent files -> the canonical dataset: the Tencent preset's reader (see presets.py; the builder,
build.py, does the rest, as the official processing did: label -1 -> 0, lists truncated then padded, ids
mapped to contiguous indexes, campaigns split into train / test at random with a seed, test campaigns
cold when their seed positives are at most T, else hot).

Inputs may be gzip or bzip2 compressed (found by their first bytes; `train.csv.gz` is found too) and
may start with a UTF-8 BOM. Conflicting labels: a pair (aid, uid) listed more than once in one file is
kept once, as positive when any of its labels is (a conversion seen once is a conversion); the
provenance counts both (`duplicate_pairs`, `conflicting_labels`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from metaheac.data.build import Campaigns, EventBatch, Sparse, UserBatch, build
from metaheac.data.config import FieldConfig, PreprocessConfig
from metaheac.data.errors import InputError, Problems, quote
from metaheac.data.presets import tencent_spec
from metaheac.data.raw import UserFeatureParser, line_blocks, parse_ad_features, parse_label_rows
from metaheac.data.spec import UserColumn
from metaheac.runtime import storage

USER_FILE, AD_FILE, STAGE1_FILE, STAGE2_FILE = (
    "userFeature.data", "adFeature.csv", "train.csv", "test1_truth.csv"
)  # fmt: skip


_CODECS = {b"\x1f\x8b": "gzip", b"BZh": "bz2"}  # leading bytes of a compressed stream


def _require(uri: str) -> str:
    """`uri`, or the compressed file beside it (`.gz`, `.bz2`)."""
    for candidate in (uri, f"{uri}.gz", f"{uri}.bz2"):
        if storage.exists(candidate):
            return candidate
    raise InputError(
        f"missing input file {uri}: expected the raw Tencent files {USER_FILE}, {AD_FILE}, "
        f"{STAGE1_FILE} and {STAGE2_FILE} in one folder (or gzip / bzip2 compressed, .gz / .bz2)"
    )


@contextlib.contextmanager
def open_input(uri: str) -> Iterator[BinaryIO]:
    """A stream of the file's bytes, decompressed when it is gzip or bzip2 (Arrow's streams)."""
    with storage.open_read(uri) as stream:
        head = stream.read(3)
        stream.seek(0)
        codec = next((c for magic, c in _CODECS.items() if head.startswith(magic)), None)
        if codec is None:
            yield stream
            return
        try:
            with pa.CompressedInputStream(stream, codec) as decompressed:
                yield decompressed
        except storage.StorageError:
            raise
        except (pa.ArrowException, OSError) as error:
            raise InputError(f"{uri}: corrupt {codec} data ({quote(str(error), 120)})") from None


def read_text_input(uri: str) -> str:
    """A whole (small) input file as text, decompressed, without a BOM."""
    with open_input(uri) as stream:
        data = stream.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{uri}: not UTF-8 text (byte {error.start} is {data[error.start]:#04x})") from None


class TencentReader:
    """The four Tencent files as the builder reads them; messages name their file and line."""

    users_source, campaigns_source, events_source = USER_FILE, AD_FILE, f"{STAGE1_FILE} and {STAGE2_FILE}"

    def __init__(self, paths: dict[str, str], fields: FieldConfig) -> None:
        self.paths = paths
        self.fields = fields

    def user_batches(self, problems: Problems, columns: list[UserColumn] | None = None) -> Iterator[UserBatch]:
        fields = self.fields
        path = self.paths[USER_FILE]
        parser = UserFeatureParser(path, fields.user_single, list(fields.user_lists), set(fields.known_user_fields),
                                   problems)
        names = [*fields.user_single, *fields.user_lists]
        wanted = [names.index(c.name) for c in columns] if columns is not None else range(len(names))
        with open_input(path) as stream:
            for parsed in parser.chunks(line_blocks(stream)):
                yield UserBatch(path, "line", parsed.line, parsed.uid, [Sparse(*parsed.fields[k]) for k in wanted])

    def campaigns(self) -> Campaigns:
        path = self.paths[AD_FILE]
        ads = parse_ad_features(path, read_text_input(path), self.fields.campaign_fields)
        lines = np.arange(2, len(ads) + 2)  # after the header (blank lines aside)
        return Campaigns(path, "line", lines, "aid", ads["aid"].to_numpy(),
                         {name: ads[name].to_numpy() for name in self.fields.campaign_fields})

    def event_batches(self, problems: Problems) -> Iterator[EventBatch]:
        for stage, name, header in ((1, STAGE1_FILE, True), (2, STAGE2_FILE, False)):
            path = self.paths[name]
            with open_input(path) as stream:
                for rows in parse_label_rows(path, stream, header, problems):
                    yield EventBatch(path, "line", rows.line, rows.uid, rows.aid, rows.label,
                                     stage=np.full(len(rows.line), stage, np.int8))


def preprocess_raw(input_uri: str, output_uri: str, config: PreprocessConfig, progress: bool = True) -> dict:
    """Parse the raw files in `input_uri` and publish the canonical dataset at `output_uri`."""
    paths = {name: _require(storage.join(input_uri, name)) for name in (USER_FILE, AD_FILE, STAGE1_FILE, STAGE2_FILE)}
    provenance = {"source": "raw", "input": input_uri, "config": asdict(config)}
    return build(tencent_spec(paths, config), TencentReader(paths, config.fields), output_uri, provenance, progress,
                 stage1_source=f" in {STAGE1_FILE}")
