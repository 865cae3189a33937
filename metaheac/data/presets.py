"""The two built-in sources as specs: the raw Tencent files and the official processed pickles.

A preset is a spec value plus a reader of its format (metaheac/data/preprocess.py for the Tencent files,
metaheac/data/official.py for the pickles); the one builder (metaheac/data/build.py) does the rest.
"""

from __future__ import annotations

from metaheac.data.config import FieldConfig, PreprocessConfig
from metaheac.data.spec import Campaigns, Events, Labels, Split, Stages, Table, TablesSpec, UserColumn, Users

STAGE = "stage"  # the readers' events column: which file a row came from
SPLIT = "split"  # the official reader's campaigns column: which file a campaign's rows are in


def _users(fields: FieldConfig, table: Table) -> Users:
    return Users(table, "uid", (
        *(UserColumn(name, "categorical") for name in fields.user_single),
        *(UserColumn(name, "list", max_length=length) for name, length in fields.user_lists.items()),
    ))


def _campaigns(fields: FieldConfig, table: Table) -> Campaigns:
    return Campaigns(table, "aid", tuple(fields.campaign_fields),
                     tuple(h for h in fields.hierarchy if h in fields.campaign_fields))


def tencent_spec(files: dict[str, str], config: PreprocessConfig) -> TablesSpec:
    """The 2018 Tencent files (`files`: their URIs by name): stage 1 from train.csv, stage 2 from
    test1_truth.csv, campaigns split at random."""
    fields = config.fields
    return TablesSpec(
        users=_users(fields, Table(files["userFeature.data"], "tencent")),
        campaigns=_campaigns(fields, Table(files["adFeature.csv"], "csv")),
        events=Events(Table(files["train.csv"], "csv"), "uid", "aid", Labels("binary", "label")),
        stages=Stages("column", column=STAGE),
        split=Split("random", test_fraction=config.test_fraction, seed=config.seed),
        cold_threshold=config.cold_threshold,
        on_error=config.on_error,
    )


def official_spec(folder: str, config: PreprocessConfig) -> TablesSpec:
    """The official pickles in `folder`: ids already indexes, stages and splits from the file names."""
    fields = config.fields
    table = Table(folder, "pickle")
    return TablesSpec(
        users=_users(fields, table),
        campaigns=_campaigns(fields, table),
        events=Events(table, "uid", "aid", Labels("binary", "label"), duplicates="keep"),
        stages=Stages("column", column=STAGE),
        split=Split("column", column=SPLIT),
        cold_threshold=config.cold_threshold,
        on_error=config.on_error,
        ids_are_indexes=True,
    )
