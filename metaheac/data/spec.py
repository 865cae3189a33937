"""The tables spec: which tables hold the users, the campaigns and the events, and how to read them.

Written as YAML or JSON, parsed into frozen dataclasses; an error names the file and the key, e.g.
`spec.yaml: users.columns.age.buckets: expected an integer >= 2, got 'x'`. The Tencent files and the
official pickles are two presets of it (metaheac/data/presets.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from metaheac.data.errors import InputError, OnError, quote
from metaheac.runtime import storage

ColumnKind = Literal["categorical", "list", "numeric"]
Keep = Literal["first", "last", "most_frequent"]
MEDIAN = -1  # cold_threshold: the test campaigns' median seed positives


@dataclass(frozen=True)
class Table:
    """One table: a Parquet file or folder of files, or a CSV file (`format` from the name by default);
    the presets' formats (`tencent`, `pickle`) have their own readers."""

    uri: str
    format: Literal["parquet", "csv", "tencent", "pickle"]
    separator: str = ","  # between CSV cells


@dataclass(frozen=True)
class UserColumn:
    """`categorical`: one value; `list`: several, truncated to `max_length` keeping the `keep` ones (or
    `on_long: fail`), a CSV cell split at `separator`; `numeric`: bucketized at quantiles into `buckets`."""

    name: str
    kind: ColumnKind
    max_length: int = 1
    keep: Keep = "first"
    on_long: Literal["truncate", "fail"] = "truncate"
    separator: str | None = None
    buckets: int = 0


@dataclass(frozen=True)
class Users:
    table: Table
    id: str
    columns: tuple[UserColumn, ...]

    @property
    def single(self) -> list[UserColumn]:
        return [c for c in self.columns if c.kind != "list"]

    @property
    def lists(self) -> list[UserColumn]:
        return [c for c in self.columns if c.kind == "list"]


@dataclass(frozen=True)
class Campaigns:
    """`hierarchy`: attribute columns, coarse to fine, that transfer between campaigns groups by; `start`:
    a column of start times (for a time split; default: the campaign's first event)."""

    table: Table
    id: str
    columns: tuple[str, ...]
    hierarchy: tuple[str, ...] = ()
    start: str | None = None


@dataclass(frozen=True)
class Labels:
    """`binary`: a 0/1 column; `exposed`: rows are exposures, `column` says who converted (0/1);
    `sampled`: rows are converters only, negatives drawn per stage from the users who are not converters of
    the campaign, `ratio` per positive, seeded."""

    kind: Literal["binary", "exposed", "sampled"]
    column: str | None = None
    ratio: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Events:
    """`duplicates`: a (campaign, user) listed twice in a stage is kept once, positive when any of its
    rows is (`merge`), or every row is kept (`keep`: the official pickles, whose distinct users may share
    every feature and so become one user)."""

    table: Table
    user: str
    campaign: str
    labels: Labels
    time: str | None = None
    duplicates: Literal["merge", "keep"] = "merge"


@dataclass(frozen=True)
class Stages:
    """Seed set (stage 1) against held-out rows (stage 2) inside a campaign: `random` puts `fraction` of
    each campaign's rows of each label in the seeds (seeded); `time` puts its earliest `fraction` there;
    `column` reads the stage (1 or 2) from an events column."""

    kind: Literal["random", "time", "column"] = "random"
    fraction: float = 0.5
    seed: int = 0
    column: str | None = None


@dataclass(frozen=True)
class Split:
    """Train against test campaigns: `random` holds out `test_fraction` of them (seeded); `time` holds out
    those starting after `cutoff` (default: the start that leaves `test_fraction` after it); `column` reads
    train / test / test_hot / test_cold from a campaigns column."""

    kind: Literal["random", "time", "column"] = "random"
    test_fraction: float = 0.5
    seed: int = 2020
    cutoff: int | None = None
    column: str | None = None


@dataclass(frozen=True)
class TablesSpec:
    """`cold_threshold`: test campaigns with at most this many seed positives are cold (MEDIAN: the test
    campaigns' median). `ids_are_indexes`: every categorical value is already an index from 0 (the official
    pickles); otherwise user values are indexed in order of first appearance and campaign values sorted."""

    users: Users
    campaigns: Campaigns
    events: Events
    stages: Stages = field(default_factory=Stages)
    split: Split = field(default_factory=Split)
    cold_threshold: int = MEDIAN
    on_error: OnError = "fail"
    ids_are_indexes: bool = False

    @property
    def table_uris(self) -> list[str]:
        return [self.users.table.uri, self.campaigns.table.uri, self.events.table.uri]


# ---- parsing ------------------------------------------------------------------------------


_REQUIRED = object()  # a key without a default


class _Node:
    """A mapping of the spec at `path`, read key by key; unknown keys are an error."""

    def __init__(self, source: str, path: str, value: Any) -> None:
        self.source, self.path = source, path
        if not isinstance(value, dict):
            self.fail("", f"expected a mapping, got {quote(str(value), 60)}")
        self.value: dict[str, Any] = value
        self.read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> None:
        where = self.key(name) if name else self.path or "top level"
        raise InputError(f"{self.source}: {where}: {message}")

    def get(self, name: str, default: Any = _REQUIRED) -> Any:
        self.read.add(name)
        if name not in self.value:
            if default is _REQUIRED:
                self.fail(name, "missing")
            return default
        return self.value[name]

    def node(self, name: str, default: Any = _REQUIRED) -> _Node:
        return _Node(self.source, self.key(name), self.get(name, default))

    def string(self, name: str, default: Any = _REQUIRED) -> Any:
        value = self.get(name, default)
        if value is not default and not (isinstance(value, str) and value):
            self.fail(name, f"expected a non-empty string, got {quote(str(value), 60)}")
        return value

    def integer(self, name: str, default: Any = _REQUIRED, low: int | None = None) -> Any:
        value = self.get(name, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
            bound = f" >= {low}" if low is not None else ""
            self.fail(name, f"expected an integer{bound}, got {quote(str(value), 60)}")
        return value

    def fraction(self, name: str, default: float, closed: bool = False) -> float:
        value = self.get(name, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and (
            0 <= value <= 1 if closed else 0 < value < 1)
        if not ok:
            self.fail(name, f"expected a number {'in [0, 1]' if closed else 'between 0 and 1'}, "
                      f"got {quote(str(value), 60)}")
        return float(value)

    def choice(self, name: str, options: tuple[str, ...], default: Any = _REQUIRED) -> Any:
        value = self.get(name, default)
        if value not in options:
            self.fail(name, f"expected one of {', '.join(options)}, got {quote(str(value), 60)}")
        return value

    def names(self, name: str, default: Any = _REQUIRED) -> tuple[str, ...]:
        value = self.get(name, default)
        if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
            self.fail(name, f"expected a list of column names, got {quote(str(value), 60)}")
        if len(set(value)) != len(value):
            self.fail(name, "a column is named twice")
        return tuple(value)

    def done(self) -> None:
        unknown = sorted(set(self.value) - self.read)
        if unknown:
            self.fail(unknown[0], f"unknown key (known here: {', '.join(sorted(self.read))})")


def _table(node: _Node, folder: str) -> Table:
    uri = node.string("table")
    if not (storage.is_gcs(uri) or uri.startswith("/")):
        uri = storage.join(folder, uri)
    guessed = "csv" if uri.lower().removesuffix(".gz").endswith((".csv", ".tsv")) else "parquet"
    fmt = node.choice("format", ("parquet", "csv"), guessed)
    separator = node.string("separator", "\t" if uri.lower().endswith(".tsv") else ",")
    if len(separator) != 1:
        node.fail("separator", f"expected one character, got {quote(separator, 20)}")
    return Table(uri, fmt, separator)


def _user_column(node: _Node, name: str, csv: bool) -> UserColumn:
    kind = node.choice("type", ("categorical", "list", "numeric"))
    if kind == "numeric":
        column = UserColumn(name, kind, buckets=node.integer("buckets", 10, low=2))
    elif kind == "list":
        separator = node.string("separator", None)
        if csv and separator is None:
            node.fail("separator", "missing: a list column of a CSV table needs the separator between its ids")
        column = UserColumn(name, kind, max_length=node.integer("max_length", low=1),
                            keep=node.choice("keep", ("first", "last", "most_frequent"), "first"),
                            on_long=node.choice("on_long", ("truncate", "fail"), "truncate"), separator=separator)
    else:
        column = UserColumn(name, kind)
    node.done()
    return column


def parse_spec(value: Any, source: str, folder: str) -> TablesSpec:
    """The spec from its parsed YAML/JSON `value`; relative table URIs are inside `folder`."""
    top = _Node(source, "", value)
    users = top.node("users")
    users_table = _table(users, folder)
    columns_node = users.node("columns")
    if not columns_node.value or not all(isinstance(name, str) and name for name in columns_node.value):
        users.fail("columns", "expected a mapping of column names to their types, with at least one column")
    columns = tuple(
        _user_column(columns_node.node(name), name, users_table.format == "csv") for name in columns_node.value
    )
    columns_node.read.update(columns_node.value)
    user_id = users.string("id")
    if user_id in columns_node.value:
        columns_node.fail(user_id, "the user id column cannot also be a feature")
    users.done()
    campaigns = top.node("campaigns")
    campaigns_table = _table(campaigns, folder)
    attributes = campaigns.names("columns", [])
    hierarchy = campaigns.names("hierarchy", [])
    outside = [h for h in hierarchy if h not in attributes]
    if outside:
        campaigns.fail("hierarchy", f"{quote(outside[0], 60)} is not one of campaigns.columns")
    campaign_spec = Campaigns(campaigns_table, campaigns.string("id"), attributes, hierarchy,
                              campaigns.string("start", None))
    campaigns.done()
    events = top.node("events")
    events_table = _table(events, folder)
    labels = events.node("labels")
    label_kind = labels.choice("kind", ("binary", "exposed", "sampled"))
    if label_kind == "sampled":
        ratio = labels.get("ratio", 1.0)
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or ratio <= 0:
            labels.fail("ratio", f"expected a number > 0 (negatives per positive), got {quote(str(ratio), 60)}")
        label_spec = Labels("sampled", ratio=float(ratio), seed=labels.integer("seed", 0))
    else:
        label_spec = Labels(label_kind, column=labels.string("column"))
    labels.done()
    event_spec = Events(events_table, events.string("user"), events.string("campaign"), label_spec,
                        events.string("time", None), events.choice("duplicates", ("merge", "keep"), "merge"))
    events.done()
    stages_node = top.node("stages", {})
    stage_kind = stages_node.choice("kind", ("random", "time", "column"), "random")
    stages = Stages(stage_kind, stages_node.fraction("fraction", 0.5), stages_node.integer("seed", 0),
                    stages_node.string("column", None) if stage_kind == "column" else None)
    if stage_kind == "column" and stages.column is None:
        stages_node.fail("column", "missing: the events column holding each row's stage (1 or 2)")
    if stage_kind == "time" and event_spec.time is None:
        stages_node.fail("kind", "'time' needs events.time")
    stages_node.done()
    split_node = top.node("split", {})
    split_kind = split_node.choice("kind", ("random", "time", "column"), "random")
    split = Split(split_kind, split_node.fraction("test_fraction", 0.5, closed=True), split_node.integer("seed", 2020),
                  split_node.integer("cutoff", None), split_node.string("column", None))
    if split_kind == "column" and split.column is None:
        split_node.fail("column", "missing: the campaigns column holding each campaign's split")
    if split_kind == "time" and campaign_spec.start is None and event_spec.time is None:
        split_node.fail("kind", "'time' needs campaigns.start or events.time")
    split_node.done()
    threshold = top.get("cold_threshold", "median")
    if threshold != "median" and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0):
        top.fail("cold_threshold", f"expected an integer >= 0 or 'median', got {quote(str(threshold), 60)}")
    spec = TablesSpec(
        users=Users(users_table, user_id, columns),
        campaigns=campaign_spec,
        events=event_spec,
        stages=stages,
        split=split,
        cold_threshold=MEDIAN if threshold == "median" else threshold,
        on_error=top.choice("on_error", ("fail", "skip"), "fail"),
    )
    top.done()
    return spec


def load_spec(uri: str, tables: str | None = None) -> TablesSpec:
    """The spec file at `uri` (local or gs://; YAML, or JSON which is YAML too); its relative table paths
    are inside the folder `tables` (default: the spec's folder)."""
    import yaml

    text = storage.read_text(uri)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{name}{where}: not YAML or JSON ({quote(str(getattr(error, 'problem', error)), 80)})"
                         ) from None
    folder = tables or (uri.rstrip("/").rsplit("/", 1)[0] if "/" in uri else ".")
    return parse_spec(value, name, folder)


def spec_json(spec: TablesSpec) -> dict:
    """The spec as plain JSON values, for the provenance."""
    return json.loads(json.dumps(asdict(spec)))
