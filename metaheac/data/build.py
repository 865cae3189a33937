"""The one builder of the canonical dataset (see `dataset.py` for the layout) from any source's tables.

A reader (`TablesReader` in tables.py; the Tencent files and the official pickles in presets.py) yields the
users, the campaigns and the events as raw values; everything after that is here, driven by the spec:
vocabularies, list truncation and padding, numeric buckets, labels, stages, the train/test campaign split,
cold/hot, and the atomic write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from metaheac.data.dataset import DatasetWriter, rows_table, users_arrow_schema, users_record_batch, write_dataset
from metaheac.data.errors import InputError, Problems, quote
from metaheac.data.schema import SPLITS, DatasetSchema, Field
from metaheac.data.spec import MEDIAN, Split, TablesSpec, UserColumn

log = logging.getLogger(__name__)
SPLIT_VALUES = ("train", "test", "test_hot", "test_cold")


# ---- what a reader yields -----------------------------------------------------------------------


@dataclass
class Sparse:
    """One column of a batch of users: value `value[k]` at list position `position[k]` of user `row[k]`,
    in row then position order (a single-valued column has position 0 throughout)."""

    row: np.ndarray
    position: np.ndarray
    value: np.ndarray


@dataclass
class UserBatch:
    """Users in table order; `number[i]` is user i's line or row in `source` (`word` says which)."""

    source: str
    word: str
    number: np.ndarray
    uid: np.ndarray  # int64
    columns: list[Sparse]  # in the order the reader was asked for

    def where(self, i: int) -> str:
        return f"{self.source} {self.word} {self.number[i]}"


@dataclass
class Campaigns:
    """Every campaign of the campaigns table: raw attribute values, and its start or split if given."""

    source: str
    word: str
    number: np.ndarray
    id_name: str
    ids: np.ndarray  # int64
    attributes: dict[str, np.ndarray]
    start: np.ndarray | None = None
    split: np.ndarray | None = None


@dataclass
class EventBatch:
    source: str
    word: str
    number: np.ndarray
    uid: np.ndarray  # int64
    campaign: np.ndarray  # int64, the campaign id
    label: np.ndarray | None  # int8 0/1; None: every row is a converter (sampled labels)
    time: np.ndarray | None = None
    stage: np.ndarray | None = None  # int8 1/2 when the source says

    def where(self, i: int) -> str:
        return f"{self.source} {self.word} {self.number[i]}"


class Reader(Protocol):
    """A source's tables as raw values; `*_source` name the tables in messages. `user_batches` may run
    twice: first over the columns whose encoding needs every user (numeric quantiles, most frequent ids),
    with a throwaway `problems`, then over all of them (`columns` None: the spec's order)."""

    users_source: str
    campaigns_source: str
    events_source: str

    def user_batches(self, problems: Problems, columns: list[UserColumn] | None = None) -> Iterator[UserBatch]: ...

    def campaigns(self) -> Campaigns: ...

    def event_batches(self, problems: Problems) -> Iterator[EventBatch]: ...


# ---- users ------------------------------------------------------------------------------------


class Vocabulary:
    """Raw value -> contiguous index from 1 in order of first appearance; 0 stays padding/unknown. With
    `ids`, values are already indexes from 0 and are only shifted by one."""

    def __init__(self, ids: bool = False) -> None:
        self.ids = ids
        self._index = pd.Index(np.empty(0, dtype=np.int64))
        self._max = 0

    def __len__(self) -> int:
        return self.size - 1

    @property
    def size(self) -> int:
        """Vocabulary size counting the reserved index 0."""
        return self._max + 1 if self.ids else len(self._index) + 1

    def encode(self, values: np.ndarray) -> np.ndarray:
        if self.ids:
            codes = values.astype(np.int64) + 1
            self._max = max(self._max, int(codes.max(initial=0)))
            return codes.astype(np.int32)
        codes = self._index.get_indexer(values)
        missing = codes < 0
        if missing.any():
            self._index = self._index.append(pd.Index(pd.unique(values[missing])))
            codes[missing] = self._index.get_indexer(values[missing])
        return (codes + 1).astype(np.int32)


def bucket_edges(values: np.ndarray, buckets: int) -> np.ndarray:
    """Inner quantile edges of `values` for `buckets` buckets (fewer where values repeat)."""
    if not len(values):
        return np.empty(0)
    return np.unique(np.quantile(values, np.arange(1, buckets) / buckets))


class UserEncoder:
    """Encodes batches of users as the spec says; its vocabularies grow in table order."""

    def __init__(self, spec: TablesSpec, reader: Reader) -> None:
        self.spec = spec
        self.columns = list(spec.users.columns)
        self.vocabularies = {c.name: Vocabulary(spec.ids_are_indexes) for c in self.columns if c.kind != "numeric"}
        self.edges: dict[str, np.ndarray] = {}
        self.rank: dict[str, pd.Index] = {}  # list values by overall frequency, for keep: most_frequent
        needs_all = [c for c in self.columns if c.kind == "numeric" or c.keep == "most_frequent"]
        if needs_all:
            seen: dict[str, list[np.ndarray]] = {c.name: [] for c in needs_all}
            for batch in reader.user_batches(Problems("skip"), needs_all):
                for c, sparse in zip(needs_all, batch.columns, strict=True):
                    seen[c.name].append(sparse.value)
            for c in needs_all:
                values = np.concatenate(seen[c.name]) if seen[c.name] else np.empty(0)
                if c.kind == "numeric":
                    self.edges[c.name] = bucket_edges(values.astype(np.float64), c.buckets)
                else:
                    counts = pd.Series(values).value_counts(sort=False)
                    # most frequent first; ties by first appearance (value_counts keeps it, the sort is stable)
                    self.rank[c.name] = pd.Index(counts.sort_values(ascending=False, kind="stable").index)

    def fields(self) -> tuple[list[Field], list[Field]]:
        single = [Field(c.name, len(self.edges[c.name]) + 2 if c.kind == "numeric"
                        else self.vocabularies[c.name].size) for c in self.spec.users.single]
        lists = [Field(c.name, self.vocabularies[c.name].size, c.max_length) for c in self.spec.users.lists]
        return single, lists

    def too_long(self, batch: UserBatch, problems: Problems) -> np.ndarray:
        """Users with a list longer than declared where the spec says `on_long: fail` (reported)."""
        bad = np.zeros(len(batch.uid), bool)
        for c, sparse in zip(self.columns, batch.columns, strict=True):
            if c.kind == "list" and c.on_long == "fail":
                lengths = np.bincount(sparse.row, minlength=len(batch.uid))
                for i in np.flatnonzero(lengths > c.max_length):
                    problems.report("long_lists", f"{batch.where(int(i))}: column {c.name!r} has {lengths[i]} ids, "
                                    f"more than users.columns.{c.name}.max_length = {c.max_length}")
                    bad[i] = True
        return bad

    def encode(self, batch: UserBatch) -> tuple[np.ndarray, list[np.ndarray]]:
        """([n, S] int32 single fields, one [n, L] int32 array per list field, 0-padded)."""
        n = len(batch.uid)
        single = np.zeros((n, len(self.spec.users.single)), dtype=np.int32)
        lists = []
        at = {c.name: j for j, c in enumerate(self.spec.users.single)}
        for c, sparse in zip(self.columns, batch.columns, strict=True):
            j = at.get(c.name, -1)
            if c.kind == "numeric":
                single[sparse.row, j] = np.searchsorted(self.edges[c.name], sparse.value, side="right") + 1
            elif c.kind == "categorical":
                single[sparse.row, j] = self.vocabularies[c.name].encode(sparse.value)
            else:
                row, position, value = self._truncate(c, sparse, n)
                padded = np.zeros((n, c.max_length), dtype=np.int32)
                padded[row, position] = self.vocabularies[c.name].encode(value)
                lists.append(padded)
        return single, lists

    def _truncate(self, c: UserColumn, sparse: Sparse, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        row, position, value = sparse.row, sparse.position, sparse.value
        if c.keep == "last":
            lengths = np.bincount(row, minlength=n)
            position = position - np.maximum(lengths[row] - c.max_length, 0)
        elif c.keep == "most_frequent":  # by user, then overall frequency, then position (np.lexsort: 10x slower)
            rank = self.rank[c.name].get_indexer(value)
            order = np.argsort(row.astype(np.int64) * (len(self.rank[c.name]) + 1) + rank, kind="stable")
            row, value = row[order], value[order]
            position = np.arange(len(row)) - np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n))])[row]
        keep = (position >= 0) & (position < c.max_length)
        return row[keep], position[keep], value[keep]


class SeenUids:
    """The uids kept so far, in table order, and a membership test. Lookups go through sorted runs of doubling
    sizes, merged like a binary counter: O(batch log n) a batch. (A pandas Index appended and re-hashed every
    batch made reading the users quadratic: 119k users/s at the start of a 13M-user file, 5k/s at 8M.)"""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []
        self.runs: list[np.ndarray] = []  # sorted, each at least twice the next

    def __len__(self) -> int:
        return sum(len(run) for run in self.runs)

    def contains(self, uids: np.ndarray) -> np.ndarray:
        found = np.zeros(len(uids), dtype=bool)
        for run in self.runs:
            found |= run[np.searchsorted(run, uids).clip(max=len(run) - 1)] == uids
        return found

    def add(self, uids: np.ndarray) -> None:
        if not len(uids):
            return
        self.batches.append(uids)
        run = np.sort(uids)
        while self.runs and len(self.runs[-1]) <= 2 * len(run):
            run = np.sort(np.concatenate([self.runs.pop(), run]), kind="stable")  # two sorted runs: a merge
        self.runs.append(run)

    def to_numpy(self) -> np.ndarray:
        return np.concatenate(self.batches) if self.batches else np.empty(0, dtype=np.int64)


def write_users(reader: Reader, encoder: UserEncoder, writer: DatasetWriter, problems: Problems,
                progress: bool) -> np.ndarray:
    """Every user, encoded, in table order; a uid seen before is reported. Returns the uids."""
    spec = encoder.spec
    schema = users_arrow_schema([c.name for c in spec.users.single],
                                {c.name: c.max_length for c in spec.users.lists})
    seen = SeenUids()
    with tqdm(desc=f"read {reader.users_source}", unit=" users", unit_scale=True, disable=not progress) as bar:
        for batch in reader.user_batches(problems):
            long = encoder.too_long(batch, problems)
            single, lists = encoder.encode(batch)
            duplicate = pd.Index(batch.uid).duplicated() | seen.contains(batch.uid)
            for i in np.flatnonzero(duplicate & ~long):
                problems.report("duplicate_uids",
                                f"{batch.where(int(i))}: {spec.users.id} {batch.uid[i]} appeared before")
            keep = ~(duplicate | long)
            if keep.any():
                lists = [ids[keep] for ids in lists]
                writer.add_users(users_record_batch(schema, batch.uid[keep], single[keep], lists))
                seen.add(batch.uid[keep])
            bar.update(len(batch.uid))
    if not len(seen):
        raise InputError(f"{reader.users_source}: no usable users")
    return seen.to_numpy()


# ---- events -----------------------------------------------------------------------------------


@dataclass
class StageRows:
    """Labelled rows: `campaign` indexes into the campaigns table, `user` into the users."""

    campaign: np.ndarray
    user: np.ndarray
    label: np.ndarray

    @staticmethod
    def concat(parts: list[StageRows]) -> StageRows:
        if not parts:
            return StageRows(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int8))
        return StageRows(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("campaign", "user", "label")))

    def take(self, index: np.ndarray) -> StageRows:
        return StageRows(self.campaign[index], self.user[index], self.label[index])


def merge_duplicates(rows: StageRows, n_users: int, problems: Problems, keep: bool = False) -> StageRows:
    """Each (campaign, user) once, at its first row, positive when any of its rows is; counted (with
    `keep`, only counted)."""
    key = rows.campaign.astype(np.int64) * max(n_users, 1) + rows.user
    unique, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    if len(unique) == len(key):
        return rows
    if keep:
        problems.skipped["duplicate_pairs_kept"] += len(key) - len(unique)
        return rows
    high = np.zeros(len(unique), dtype=np.int8)
    low = np.ones(len(unique), dtype=np.int8)
    np.maximum.at(high, inverse, rows.label)
    np.minimum.at(low, inverse, rows.label)
    problems.skipped["duplicate_pairs"] += len(key) - len(unique)
    problems.skipped["conflicting_labels"] += int((high != low).sum())
    kept = np.sort(first)
    return StageRows(rows.campaign[kept], rows.user[kept], high[inverse[kept]])


@dataclass
class Events:
    rows: StageRows
    time: np.ndarray | None
    stage: np.ndarray | None
    first_time: np.ndarray | None  # per campaign (int64; the maximum int64 where it has no event)


def read_events(spec: TablesSpec, reader: Reader, campaigns: Campaigns, uids: np.ndarray, problems: Problems,
                progress: bool) -> Events:
    campaign_index, uid_index = pd.Index(campaigns.ids), pd.Index(uids)
    parts, times, stages = [], [], []
    with tqdm(desc=f"read {reader.events_source}", unit=" rows", unit_scale=True, disable=not progress) as bar:
        for batch in reader.event_batches(problems):
            campaign = campaign_index.get_indexer(batch.campaign)
            user = uid_index.get_indexer(batch.uid)
            for i in np.flatnonzero(campaign < 0):
                problems.report("unknown_campaigns", f"{batch.where(int(i))}: {spec.events.campaign} "
                                f"{batch.campaign[i]} is not in {reader.campaigns_source}")
            for i in np.flatnonzero((user < 0) & (campaign >= 0)):
                problems.report("unknown_users", f"{batch.where(int(i))}: {spec.events.user} {batch.uid[i]} is not in "
                                f"{reader.users_source}")
            keep = (campaign >= 0) & (user >= 0)
            label = batch.label[keep] if batch.label is not None else np.ones(int(keep.sum()), np.int8)
            parts.append(StageRows(campaign[keep], user[keep], label))
            if batch.time is not None:
                times.append(batch.time[keep])
            if batch.stage is not None:
                stages.append(batch.stage[keep])
            bar.update(len(batch.uid))
    rows = StageRows.concat(parts)
    time_of = np.concatenate(times) if times else None
    first_time = None
    if time_of is not None:
        first_time = np.full(len(campaigns.ids), np.iinfo(np.int64).max)
        np.minimum.at(first_time, rows.campaign, time_of)
    return Events(rows, time_of, np.concatenate(stages) if stages else None, first_time)


def assign_stages(spec: TablesSpec, events: Events, n_users: int, problems: Problems) -> dict[int, StageRows]:
    """Stage 1 (the seeds) and stage 2 (held out) rows, each (campaign, user) once per stage."""
    rows = events.rows
    if spec.stages.kind == "column":
        assert events.stage is not None
        keep = spec.events.duplicates == "keep"
        return {s: merge_duplicates(rows.take(np.flatnonzero(events.stage == s)), n_users, problems, keep)
                for s in (1, 2)}
    merged = merge_duplicates(rows, n_users, problems, spec.events.duplicates == "keep")
    order = np.arange(len(rows.campaign))  # each merged row's first row, for its time
    if len(merged.campaign) < len(order):
        _, first = np.unique(rows.campaign.astype(np.int64) * max(n_users, 1) + rows.user, return_index=True)
        order = np.sort(first)
    rng = np.random.default_rng(spec.stages.seed)
    if spec.stages.kind == "time":  # by campaign, then time, then row (stable sorts: np.lexsort is slower)
        assert events.time is not None
        rank = np.argsort(events.time[order], kind="stable")
        group = merged.campaign.astype(np.int64)
    else:  # random, within each campaign and label
        rank = np.argsort(rng.random(len(merged.campaign)))
        group = merged.campaign.astype(np.int64) * 2 + merged.label
    rank = rank[np.argsort(group[rank], kind="stable")]
    group = group[rank]
    _, starts, inverse, counts = np.unique(group, return_index=True, return_inverse=True, return_counts=True)
    seeds = (np.arange(len(group)) - starts[inverse]) < np.floor(spec.stages.fraction * counts[inverse] + 0.5)
    stage1 = np.zeros(len(group), bool)
    stage1[rank] = seeds
    stages = {1: merged.take(np.flatnonzero(stage1)), 2: merged.take(np.flatnonzero(~stage1))}
    if spec.events.labels.kind == "sampled":
        stages = sample_negatives(stages, merged, n_users, spec.events.labels.ratio, rng=np.random.default_rng(
            spec.events.labels.seed))
    return stages


def sample_negatives(stages: dict[int, StageRows], converters: StageRows, n_users: int, ratio: float,
                     rng: np.random.Generator) -> dict[int, StageRows]:
    """Each stage's converters plus `ratio` negatives per converter, drawn from the users who are not
    converters of the campaign, without repeats across the stages."""
    wanted = {s: np.bincount(r.campaign, minlength=0) for s, r in stages.items()}
    n_campaigns = max((len(w) for w in wanted.values()), default=0)
    added: dict[int, list[StageRows]] = {1: [], 2: []}
    by_campaign = np.argsort(converters.campaign, kind="stable")
    bounds = np.searchsorted(converters.campaign[by_campaign], np.arange(n_campaigns + 1))
    for c in range(n_campaigns):
        positives = np.unique(converters.user[by_campaign[bounds[c]:bounds[c + 1]]])
        counts = [int(round(ratio * (wanted[s][c] if c < len(wanted[s]) else 0))) for s in (1, 2)]
        drawn = _draw(rng, n_users, positives, sum(counts))
        for s, part in zip((1, 2), np.split(drawn, [min(counts[0], len(drawn))]), strict=True):
            added[s].append(StageRows(np.full(len(part), c, np.int64), part, np.zeros(len(part), np.int8)))
    return {s: StageRows.concat([r, *added[s]]) for s, r in stages.items()}


def _draw(rng: np.random.Generator, n_users: int, excluded: np.ndarray, k: int) -> np.ndarray:
    """`k` distinct users outside `excluded` (sorted), fewer where fewer exist."""
    available = n_users - len(excluded)
    k = min(k, available)
    if k <= 0:
        return np.empty(0, np.int64)
    if 2 * k > available:
        return rng.permutation(np.setdiff1d(np.arange(n_users), excluded))[:k]
    chosen = np.empty(0, np.int64)
    while len(chosen) < k:
        draw = rng.integers(0, n_users, 2 * (k - len(chosen)) + 16)
        draw = draw[~np.isin(draw, excluded)]
        chosen = pd.unique(np.concatenate([chosen, draw]))
    return chosen[:k].astype(np.int64)


# ---- campaigns and the split ---------------------------------------------------------------------


def encode_campaigns(spec: TablesSpec, campaigns: Campaigns) -> tuple[list[Field], np.ndarray]:
    """The campaign fields and each campaign's codes [n, F]: sorted raw values from 1 (or ids shifted)."""
    fields, codes = [], []
    for name in spec.campaigns.columns:
        values = campaigns.attributes[name]
        if spec.ids_are_indexes:
            code = values.astype(np.int64) + 1
            size = int(values.max()) + 2
        else:
            code, uniques = pd.factorize(values, sort=True)
            code, size = code + 1, len(uniques) + 1
        fields.append(Field(name, size))
        codes.append(code.astype(np.int32))
    return fields, np.stack(codes, axis=1) if codes else np.empty((len(campaigns.ids), 0), np.int32)


def check_campaigns(campaigns: Campaigns) -> None:
    duplicated = pd.Index(campaigns.ids).duplicated()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated)[0])
        raise InputError(f"{campaigns.source}: {campaigns.id_name} {campaigns.ids[i]} appears more than once")


def split_campaigns(spec: TablesSpec, campaigns: Campaigns, stages: dict[int, StageRows], events: Events,
                    stage1_source: str, problems: Problems) -> tuple[np.ndarray, int]:
    """train / test_hot / test_cold per campaign ('' for a dropped one), and the cold threshold."""
    n = len(campaigns.ids)
    any_rows = np.bincount(events.rows.campaign, minlength=n) > 0
    for c in np.flatnonzero(~any_rows):
        problems.report("campaigns_without_events", f"{campaigns.source} {campaigns.word} {campaigns.number[c]}: "
                        f"campaign {campaigns.id_name} {campaigns.ids[c]} has no events")
    positives = np.bincount(stages[1].campaign[stages[1].label == 1], minlength=n)
    seed_rows = np.bincount(stages[1].campaign, minlength=n)
    reported = (seed_rows > 0) & (positives == 0)
    for c in np.flatnonzero(reported):
        problems.report("campaigns_without_positives",
                        f"campaign {campaigns.id_name} {campaigns.ids[c]}: no positive seed rows{stage1_source}")
    split = spec.split
    if split.kind == "column":
        splits = _given_splits(campaigns, split)
        splits[reported | ~any_rows] = ""
        test = splits == "test"
    else:
        usable = np.flatnonzero(positives > 0)
        test = np.zeros(n, bool)
        test[_test_campaigns(split, campaigns, events, usable)] = True
        splits = np.full(n, "", dtype=object)
        splits[usable] = "train"
    threshold = cold_threshold(spec.cold_threshold, positives[test | np.isin(splits, ("test_hot", "test_cold"))])
    splits[test] = np.where(positives[test] <= threshold, "test_cold", "test_hot")
    return splits, threshold


def _given_splits(campaigns: Campaigns, split: Split) -> np.ndarray:
    assert campaigns.split is not None
    values = np.asarray([str(v) for v in campaigns.split], dtype=object)
    bad = ~np.isin(values, SPLIT_VALUES)
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        raise InputError(f"{campaigns.source} {campaigns.word} {campaigns.number[c]}: column {split.column!r} holds "
                         f"{quote(values[c], 40)}, expected one of {', '.join(SPLIT_VALUES)}")
    return values


def _test_campaigns(split: Split, campaigns: Campaigns, events: Events, usable: np.ndarray) -> np.ndarray:
    if split.kind == "random":  # the campaigns in id order, shuffled with the seed
        order = usable[np.argsort(campaigns.ids[usable], kind="stable")]
        shuffled = np.random.default_rng(split.seed).permutation(order)
        return shuffled[: int(round(len(shuffled) * split.test_fraction))]
    start = campaigns.start if campaigns.start is not None else events.first_time
    assert start is not None
    cutoff = split.cutoff
    if cutoff is None:  # the start leaving `test_fraction` of the campaigns after it
        if not len(usable):
            return usable
        cutoff = int(np.quantile(start[usable], 1 - split.test_fraction, method="lower"))
    return usable[start[usable] > cutoff]


def cold_threshold(configured: int, test_positives: np.ndarray) -> int:
    """The configured T, or with MEDIAN the median seed positives of the test campaigns (half cold, half
    hot), for data whose scale the official T = 2000 does not fit (synthetic data, samples)."""
    if configured != MEDIAN or not len(test_positives):
        return configured
    return int(np.median(test_positives))


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


# ---- the whole build ------------------------------------------------------------------------------


def build(spec: TablesSpec, reader: Reader, output_uri: str, provenance: dict, progress: bool = True,
          stage1_source: str = "") -> dict:
    """Read the tables through `reader`, publish the canonical dataset at `output_uri` atomically, and
    return its provenance (`provenance` plus the counts, the problems and the timings)."""
    started = time.perf_counter()
    problems = Problems(spec.on_error)
    campaigns = reader.campaigns()
    check_campaigns(campaigns)
    with write_dataset(output_uri) as writer:
        encoder = UserEncoder(spec, reader)
        uids = write_users(reader, encoder, writer, problems, progress)
        users_seconds = time.perf_counter() - started
        events = read_events(spec, reader, campaigns, uids, problems, progress)
        stages = assign_stages(spec, events, len(uids), problems)
        campaign_fields, codes = encode_campaigns(spec, campaigns)
        user_single, user_lists = encoder.fields()
        schema = DatasetSchema(user_single, user_lists, campaign_fields, hierarchy=list(spec.campaigns.hierarchy))
        splits, threshold = split_campaigns(spec, campaigns, stages, events, stage1_source, problems)
        summary = assemble(writer, schema, campaigns.ids, codes, splits, stages)
        writer.write_campaign_vocab(list(spec.campaigns.columns),
                                    np.stack([campaigns.attributes[n] for n in spec.campaigns.columns], axis=1)
                                    if spec.campaigns.columns else np.empty((len(campaigns.ids), 0)), codes)
        schema.provenance = {
            **provenance,
            "cold_threshold": threshold,
            "counts": {**summary, "users": len(uids)},
            "problems": problems.summary(),
            **({"buckets": {k: v.tolist() for k, v in encoder.edges.items()}} if encoder.edges else {}),
            "seconds": {"users": round(users_seconds, 2), "total": round(time.perf_counter() - started, 2)},
        }
        writer.write_schema(schema)
    log.info("preprocessed -> %s: %s", output_uri, schema.provenance["counts"])
    return schema.provenance
