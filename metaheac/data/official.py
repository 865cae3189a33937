"""Import of the official MetaHeac processed pickles (`{train,test_hot,test_cold}_{stage1,stage2}.pkl`).

Opt-in only: unpickling runs whatever code the file carries. The official frames are
denormalised (every row repeats its user's and ad's fields) and carry no uid, so users are
identified by their feature values; the official ids are already contiguous from 0, and are
shifted by one so that 0 stays padding/unknown. List positions past `<field>_length` are
padding whatever value the official code put there.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict

import numpy as np
import pandas as pd

from metaheac import storage
from metaheac.data.config import FieldConfig, PreprocessConfig
from metaheac.data.dataset import users_arrow_schema, users_record_batch, write_dataset
from metaheac.data.errors import InputError, Problems
from metaheac.data.preprocess import StageRows, assemble
from metaheac.data.schema import SPLITS, STAGES, DatasetSchema, Field

log = logging.getLogger(__name__)

PICKLE_WARNING = (
    "unpickling {uri}: a pickle runs code from the file; only import pickles you trust"
)


def official_files(input_uri: str) -> dict[tuple[str, int], str]:
    found = {
        (split, stage): storage.join(input_uri, f"{split}_stage{stage}.pkl")
        for split in SPLITS
        for stage in STAGES
    }
    found = {key: uri for key, uri in found.items() if storage.exists(uri)}
    if not found:
        raise InputError(
            f"no official processed pickles in {input_uri}: expected files like train_stage1.pkl, test_cold_stage2.pkl"
        )
    return found


def _read_pickle(uri: str, fields: FieldConfig) -> pd.DataFrame:
    warnings.warn(PICKLE_WARNING.format(uri=uri), stacklevel=3)
    with storage.open_read(uri) as stream:
        frame = pd.read_pickle(stream)
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{uri}: expected a pandas DataFrame, got {type(frame).__name__}")
    needed = ["label", "aid", *fields.user_single, *fields.user_lists, *fields.campaign_fields]
    needed += [f"{name}_length" for name in fields.user_lists]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(f"{uri}: missing column(s) {', '.join(missing)}")
    return frame


def _user_matrix(frame: pd.DataFrame, fields: FieldConfig, uri: str) -> np.ndarray:
    """[n, S + sum L] int64: single fields then list fields, shifted by one, padding 0."""
    parts = [frame[fields.user_single].to_numpy(np.int64) + 1]
    for name, length in fields.user_lists.items():
        values = frame[name].to_numpy()
        try:
            ids = np.stack(values).astype(np.int64)[:, :length]
        except ValueError:
            raise InputError(f"{uri}: column {name} does not hold lists of equal length") from None
        valid = np.arange(ids.shape[1]) < frame[f"{name}_length"].to_numpy()[:, None]
        padded = np.zeros((len(frame), length), dtype=np.int64)
        padded[:, : ids.shape[1]] = np.where(valid, ids + 1, 0)
        parts.append(padded)
    return np.concatenate(parts, axis=1)


def import_official(input_uri: str, output_uri: str, config: PreprocessConfig, allow_pickle: bool = False) -> dict:
    if not allow_pickle:
        raise InputError(
            f"importing {input_uri} means unpickling files, which runs code from them: "
            "pass --allow-pickle only for files you trust"
        )
    started = time.perf_counter()
    fields = config.fields
    files = official_files(input_uri)
    frames = {key: _read_pickle(uri, fields) for key, uri in files.items()}
    keys = list(frames)
    matrices = [_user_matrix(frames[k], fields, files[k]) for k in keys]
    users, inverse = np.unique(np.concatenate(matrices), axis=0, return_inverse=True)
    ads = pd.concat([frames[k][["aid", *fields.campaign_fields]] for k in keys]).drop_duplicates("aid")
    ads = ads.sort_values("aid", kind="stable").reset_index(drop=True)
    aid_index = pd.Index(ads["aid"])
    splits = np.full(len(ads), "", dtype=object)
    stages: dict[int, list[StageRows]] = {1: [], 2: []}
    offset = 0
    for (split, stage), frame in frames.items():
        campaign = aid_index.get_indexer(frame["aid"])
        splits[campaign] = split
        label = (frame["label"].to_numpy() == 1).astype(np.int8)
        stages[stage].append(StageRows(campaign, inverse[offset : offset + len(frame)], label))
        offset += len(frame)
    merged = {s: StageRows.concat(parts) for s, parts in stages.items()}
    problems = Problems(config.on_error)
    if stages[1]:  # with seed rows imported, a campaign without a positive seed cannot be adapted
        has_positive = np.bincount(merged[1].campaign[merged[1].label == 1], minlength=len(ads)) > 0
        has_rows = np.bincount(merged[1].campaign, minlength=len(ads)) > 0
        for c in np.flatnonzero(has_rows & ~has_positive):
            problems.report("campaigns_without_positives", f"campaign aid {ads['aid'][c]}: no positive seed rows")
            splits[c] = ""
    n_single = len(fields.user_single)
    lengths = list(fields.user_lists.values())
    lists = np.split(users[:, n_single:], np.cumsum(lengths)[:-1], axis=1)
    schema = DatasetSchema(
        user_single=[Field(n, int(users[:, j].max()) + 1) for j, n in enumerate(fields.user_single)],
        user_lists=[
            Field(n, int(ids.max()) + 1, k) for (n, k), ids in zip(fields.user_lists.items(), lists, strict=True)
        ],
        campaign_fields=[Field(n, int(ads[n].max()) + 2) for n in fields.campaign_fields],
        hierarchy=[h for h in fields.hierarchy if h in fields.campaign_fields],
    )
    with write_dataset(output_uri) as writer:
        writer.add_users(
            users_record_batch(
                users_arrow_schema(fields.user_single, fields.user_lists),
                np.arange(len(users), dtype=np.int64),
                users[:, :n_single].astype(np.int32),
                [ids.astype(np.int32) for ids in lists],
            )
        )
        ad_codes = (ads[fields.campaign_fields].to_numpy(np.int64) + 1).astype(np.int32)
        summary = assemble(writer, schema, ads["aid"].to_numpy(), ad_codes, splits, merged)
        writer.write_campaign_vocab(fields.campaign_fields, ads[fields.campaign_fields].to_numpy(), ad_codes)
        schema.provenance = {
            "source": "official-pickles",
            "input": input_uri,
            "files": [f"{s}_stage{k}.pkl" for s, k in keys],
            "config": asdict(config),
            "counts": {**summary, "users": len(users)},
            "problems": problems.summary(),
            "note": "uids are synthetic: the official processed data carries none; users are distinct feature rows",
            "seconds": round(time.perf_counter() - started, 2),
        }
        writer.write_schema(schema)
    return schema.provenance
