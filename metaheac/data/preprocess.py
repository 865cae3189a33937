"""Raw Tencent files -> the canonical dataset (see `dataset.py` for the layout).

The official processing: label -1 -> 0, lists truncated then padded, ids mapped to contiguous
indexes, campaigns split into train / test at random with a seed, test campaigns cold when their
seed positives are at most T, else hot.

Inputs may be gzip or bzip2 compressed (found by their first bytes; `train.csv.gz` is found too) and
may start with a UTF-8 BOM. Conflicting labels: a pair (aid, uid) listed more than once in one file is
kept once, as positive when any of its labels is (a conversion seen once is a conversion); the
provenance counts both (`duplicate_pairs`, `conflicting_labels`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from metaheac import storage
from metaheac.data.config import PreprocessConfig
from metaheac.data.dataset import (
    DatasetWriter,
    rows_table,
    users_arrow_schema,
    users_record_batch,
    write_dataset,
)
from metaheac.data.errors import InputError, Problems, quote
from metaheac.data.raw import UserChunk, UserFeatureParser, line_blocks, parse_ad_features, parse_label_rows
from metaheac.data.schema import SPLITS, DatasetSchema, Field

log = logging.getLogger(__name__)

USER_FILE, AD_FILE, STAGE1_FILE, STAGE2_FILE = (
    "userFeature.data", "adFeature.csv", "train.csv", "test1_truth.csv"
)  # fmt: skip


@dataclass
class StageRows:
    """Labelled rows of one stage: `campaign` indexes into the campaign frame, `user` into users."""

    campaign: np.ndarray
    user: np.ndarray
    label: np.ndarray

    @staticmethod
    def concat(parts: list[StageRows]) -> StageRows:
        if not parts:
            return StageRows(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int8))
        return StageRows(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("campaign", "user", "label")))


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


def preprocess_raw(input_uri: str, output_uri: str, config: PreprocessConfig, progress: bool = True) -> dict:
    """Parse the raw files in `input_uri` and publish the canonical dataset at `output_uri`."""
    started = time.perf_counter()
    fields = config.fields
    paths = {name: _require(storage.join(input_uri, name)) for name in (USER_FILE, AD_FILE, STAGE1_FILE, STAGE2_FILE)}
    problems = Problems(config.on_error)
    parser = UserFeatureParser(
        paths[USER_FILE], fields.user_single, fields.user_lists, set(fields.known_user_fields), problems
    )
    arrow_schema = users_arrow_schema(fields.user_single, fields.user_lists)
    with write_dataset(output_uri) as writer:
        uids = _write_users(paths[USER_FILE], parser, arrow_schema, writer, problems, progress)
        users_seconds = time.perf_counter() - started
        ads = parse_ad_features(paths[AD_FILE], read_text_input(paths[AD_FILE]), fields.campaign_fields)
        aid_index, uid_index = pd.Index(ads["aid"]), pd.Index(uids)
        stages = {
            stage: _read_rows(paths[name], header, aid_index, uid_index, problems, progress)
            for stage, name, header in ((1, STAGE1_FILE, True), (2, STAGE2_FILE, False))
        }
        campaign_fields = [
            Field(name, *_encode_column(ads, name)) for name in fields.campaign_fields
        ]
        ad_codes = np.stack([ads[f"{f.name}__code"].to_numpy() for f in campaign_fields], axis=1)
        schema = DatasetSchema(
            user_single=[Field(n, parser.vocabularies[n].size) for n in fields.user_single],
            user_lists=[Field(n, parser.vocabularies[n].size, k) for n, k in fields.user_lists.items()],
            campaign_fields=campaign_fields,
            hierarchy=[h for h in fields.hierarchy if h in fields.campaign_fields],
        )
        splits = random_splits(len(ads), stages[1], config, ads["aid"].to_numpy(), problems)
        summary = assemble(writer, schema, ads["aid"].to_numpy(), ad_codes, splits, stages)
        writer.write_campaign_vocab(fields.campaign_fields, ads[fields.campaign_fields].to_numpy(), ad_codes)
        schema.provenance = {
            "source": "raw",
            "input": input_uri,
            "config": asdict(config),
            "cold_threshold": cold_threshold(config, positives_of(stages[1], splits)),
            "counts": {**summary, "users": len(uids)},
            "problems": problems.summary(),
            "seconds": {"users": round(users_seconds, 2), "total": round(time.perf_counter() - started, 2)},
        }
        writer.write_schema(schema)
    log.info("preprocessed %s -> %s: %s", input_uri, output_uri, schema.provenance["counts"])
    return schema.provenance


def _encode_column(ads: pd.DataFrame, name: str) -> tuple[int]:
    codes, uniques = pd.factorize(ads[name], sort=True)
    ads[f"{name}__code"] = (codes + 1).astype(np.int32)
    return (len(uniques) + 1,)


def _write_users(
    path: str,
    parser: UserFeatureParser,
    arrow_schema: pa.Schema,
    writer: DatasetWriter,
    problems: Problems,
    progress: bool,
) -> np.ndarray:
    seen = pd.Index(np.empty(0, dtype=np.int64))
    with open_input(path) as stream, tqdm(
        desc=f"parse {USER_FILE}", unit=" lines", unit_scale=True, disable=not progress
    ) as bar:
        for parsed in parser.chunks(line_blocks(stream)):
            chunk = _drop_duplicate_uids(path, parsed, seen, problems)
            if len(chunk.uid):
                writer.add_users(users_record_batch(arrow_schema, chunk.uid, chunk.single, chunk.lists))
                seen = seen.append(pd.Index(chunk.uid))
            bar.update(len(parsed.uid))
    if not len(seen):
        raise InputError(f"{path}: no usable user lines")
    return seen.to_numpy()


def _drop_duplicate_uids(path: str, chunk: UserChunk, seen: pd.Index, problems: Problems) -> UserChunk:
    duplicate = pd.Index(chunk.uid).duplicated() | (seen.get_indexer(chunk.uid) >= 0)
    if not duplicate.any():
        return chunk
    for i in np.flatnonzero(duplicate):
        problems.report("duplicate_uids", f"{path} line {chunk.line[i]}: uid {chunk.uid[i]} appeared before")
    keep = ~duplicate
    return UserChunk(chunk.line[keep], chunk.uid[keep], chunk.single[keep], [ids[keep] for ids in chunk.lists])


def _read_rows(
    path: str, header: bool, aid_index: pd.Index, uid_index: pd.Index, problems: Problems, progress: bool
) -> StageRows:
    parts: list[StageRows] = []
    with open_input(path) as stream, tqdm(
        desc=f"parse {path.rsplit('/', 1)[-1]}", unit=" rows", unit_scale=True, disable=not progress
    ) as bar:
        for rows in parse_label_rows(path, stream, header, problems):
            campaign = aid_index.get_indexer(rows.aid)
            user = uid_index.get_indexer(rows.uid)
            for i in np.flatnonzero(campaign < 0):
                problems.report("unknown_aid", f"{path} line {rows.line[i]}: aid {rows.aid[i]} is not in {AD_FILE}")
            for i in np.flatnonzero((user < 0) & (campaign >= 0)):
                problems.report("unknown_uid", f"{path} line {rows.line[i]}: uid {rows.uid[i]} is not in {USER_FILE}")
            keep = (campaign >= 0) & (user >= 0)
            parts.append(StageRows(campaign[keep], user[keep], rows.label[keep]))
            bar.update(len(rows.line))
    return merge_duplicates(StageRows.concat(parts), len(uid_index), problems)


def merge_duplicates(rows: StageRows, n_users: int, problems: Problems) -> StageRows:
    """Each (campaign, user) once, at its first row, positive when any of its rows is; counted."""
    key = rows.campaign.astype(np.int64) * max(n_users, 1) + rows.user
    unique, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    if len(unique) == len(key):
        return rows
    high = np.zeros(len(unique), dtype=np.int8)
    low = np.ones(len(unique), dtype=np.int8)
    np.maximum.at(high, inverse, rows.label)
    np.minimum.at(low, inverse, rows.label)
    problems.skipped["duplicate_pairs"] += len(key) - len(unique)
    problems.skipped["conflicting_labels"] += int((high != low).sum())
    keep = np.sort(first)
    return StageRows(rows.campaign[keep], rows.user[keep], high[inverse[keep]])


def random_splits(
    n_campaigns: int, stage1: StageRows, config: PreprocessConfig, aids: np.ndarray, problems: Problems
) -> np.ndarray:
    """train / test_hot / test_cold per campaign ('' for a campaign that is dropped)."""
    positives = np.bincount(stage1.campaign[stage1.label == 1], minlength=n_campaigns)
    rows = np.bincount(stage1.campaign, minlength=n_campaigns)
    splits = np.full(n_campaigns, "", dtype=object)
    for c in np.flatnonzero((rows > 0) & (positives == 0)):
        message = f"campaign aid {aids[c]}: no positive seed rows in {STAGE1_FILE}"
        problems.report("campaigns_without_positives", message)
    usable = np.flatnonzero(positives > 0)
    order = usable[np.argsort(aids[usable], kind="stable")]
    shuffled = np.random.default_rng(config.seed).permutation(order)
    n_test = int(round(len(shuffled) * config.test_fraction))
    test, train = shuffled[:n_test], shuffled[n_test:]
    splits[train] = "train"
    splits[test] = np.where(positives[test] <= cold_threshold(config, positives[test]), "test_cold", "test_hot")
    return splits


def cold_threshold(config: PreprocessConfig, test_positives: np.ndarray) -> int:
    """The configured T, or with T < 0 the median seed positives of the test campaigns (half cold, half hot),
    for data whose scale the official T = 2000 does not fit (synthetic data, samples)."""
    if config.cold_threshold >= 0 or not len(test_positives):
        return config.cold_threshold
    return int(np.median(test_positives))


def positives_of(stage1: StageRows, splits: np.ndarray) -> np.ndarray:
    """Seed positives of every test campaign."""
    positives = np.bincount(stage1.campaign[stage1.label == 1], minlength=len(splits))
    return positives[np.isin(splits, ("test_cold", "test_hot"))]


def assemble(
    writer: DatasetWriter,
    schema: DatasetSchema,
    aids: np.ndarray,
    ad_codes: np.ndarray,
    splits: np.ndarray,
    stages: dict[int, StageRows],
) -> dict:
    """Write the campaign table and the partitioned rows; campaigns whose split is '' are dropped."""
    kept = np.flatnonzero(splits != "")
    kept = kept[np.argsort(aids[kept], kind="stable")]
    if not len(kept):
        raise InputError("no usable campaign: every campaign lacks positive seed rows")
    new_index = np.full(len(aids), -1, dtype=np.int64)
    new_index[kept] = np.arange(len(kept))
    counts = {s: np.bincount(new_index[r.campaign[new_index[r.campaign] >= 0]], minlength=len(kept))
              for s, r in stages.items()}
    positives = np.bincount(
        new_index[stages[1].campaign[(stages[1].label == 1) & (new_index[stages[1].campaign] >= 0)]],
        minlength=len(kept),
    )
    campaign_split = splits[kept]
    table = {"campaign": pa.array(np.arange(len(kept)), pa.int32()), "aid": pa.array(aids[kept], pa.int64())}
    for j, f in enumerate(schema.campaign_fields):
        table[f.name] = pa.array(ad_codes[kept, j], pa.int32())
    table |= {
        "split": pa.array(campaign_split.astype(str)),
        "seed_positives": pa.array(positives, pa.int64()),
        "stage1_rows": pa.array(counts[1], pa.int64()),
        "stage2_rows": pa.array(counts[2], pa.int64()),
    }
    writer.write_campaigns(pa.table(table))
    summary: dict = {"campaigns": {s: int((campaign_split == s).sum()) for s in SPLITS}, "rows": {}}
    for stage, rows in stages.items():
        campaign = new_index[rows.campaign]
        for split in SPLITS:
            mask = campaign >= 0
            mask[mask] = campaign_split[campaign[mask]] == split
            writer.write_rows(split, stage, rows_table(campaign[mask], rows.user[mask], rows.label[mask]))
            summary["rows"][f"{split}/stage{stage}"] = int(mask.sum())
            summary["rows"][f"{split}/stage{stage}/positives"] = int(rows.label[mask].sum())
    return summary
