"""Import of the official MetaHeac processed pickles (`{train,test_hot,test_cold}_{stage1,stage2}.pkl`).

Opt-in only: unpickling runs whatever code the file carries. The official frames are
denormalised (every row repeats its user's and ad's fields) and carry no uid, so users are
identified by their feature values; the official ids are already contiguous from 0, and are
shifted by one so that 0 stays padding/unknown. List positions past `<field>_length` are
padding whatever value the official code put there.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import pandas as pd

from metaheac.data.build import Campaigns, EventBatch, Sparse, UserBatch, build
from metaheac.data.config import FieldConfig, PreprocessConfig
from metaheac.data.errors import InputError, Problems
from metaheac.data.presets import official_spec
from metaheac.data.schema import SPLITS, STAGES
from metaheac.data.spec import UserColumn
from metaheac.runtime import storage

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


class OfficialReader:
    """The official frames as the builder reads them: users are the distinct feature rows (their uid is
    the row's index), ids the frames' own (the spec says they are indexes already)."""

    users_source = campaigns_source = events_source = "the official pickles"

    def __init__(self, input_uri: str, fields: FieldConfig) -> None:
        self.fields = fields
        self.files = official_files(input_uri)
        self.frames = {key: _read_pickle(uri, fields) for key, uri in self.files.items()}
        matrices = [_user_matrix(frame, fields, self.files[key]) for key, frame in self.frames.items()]
        self.users, self.inverse = np.unique(np.concatenate(matrices), axis=0, return_inverse=True)

    def user_batches(self, problems: Problems, columns: list[UserColumn] | None = None) -> Iterator[UserBatch]:
        names = [*self.fields.user_single, *self.fields.user_lists]
        widths = [1] * len(self.fields.user_single) + list(self.fields.user_lists.values())
        starts = np.cumsum([0, *widths])
        wanted = [names.index(c.name) for c in columns] if columns is not None else range(len(names))
        sparse = []
        for k in wanted:
            row, position = np.nonzero(self.users[:, starts[k] : starts[k + 1]])  # 0: padding
            sparse.append(Sparse(row, position, self.users[row, starts[k] + position] - 1))
        n = len(self.users)
        yield UserBatch(self.users_source, "user", np.arange(n), np.arange(n, dtype=np.int64), sparse)

    def campaigns(self) -> Campaigns:
        fields = self.fields.campaign_fields
        ads = pd.concat([frame[["aid", *fields]] for frame in self.frames.values()]).drop_duplicates("aid")
        ads = ads.sort_values("aid", kind="stable").reset_index(drop=True)
        splits = np.full(len(ads), "", dtype=object)
        aid_index = pd.Index(ads["aid"])
        for (split, _), frame in self.frames.items():  # a campaign is in the split of its (last) file
            splits[aid_index.get_indexer(frame["aid"])] = split
        return Campaigns(self.campaigns_source, "campaign", np.arange(len(ads)), "aid", ads["aid"].to_numpy(),
                         {name: ads[name].to_numpy(np.int64) for name in fields}, split=splits)

    def event_batches(self, problems: Problems) -> Iterator[EventBatch]:
        offset = 0
        for (split, stage), frame in self.frames.items():
            n = len(frame)
            yield EventBatch(self.files[split, stage], "row", np.arange(1, n + 1), self.inverse[offset : offset + n],
                             frame["aid"].to_numpy(np.int64), (frame["label"].to_numpy() == 1).astype(np.int8),
                             stage=np.full(n, stage, np.int8))
            offset += n


def import_official(input_uri: str, output_uri: str, config: PreprocessConfig, allow_pickle: bool = False) -> dict:
    if not allow_pickle:
        raise InputError(
            f"importing {input_uri} means unpickling files, which runs code from them: "
            "pass --allow-pickle only for files you trust"
        )
    reader = OfficialReader(input_uri, config.fields)
    provenance = {
        "source": "official-pickles",
        "input": input_uri,
        "files": [f"{s}_stage{k}.pkl" for s, k in reader.frames],
        "config": asdict(config),
        "note": "uids are synthetic: the official processed data carries none; users are distinct feature rows",
    }
    return build(official_spec(input_uri, config), reader, output_uri, provenance, progress=False)
