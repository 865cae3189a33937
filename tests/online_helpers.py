"""Seed-set folders and user bases for the online stage's tests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from metaheac.data.dataset import load_campaign_frame, users_arrow_schema, users_record_batch, write_dataset
from metaheac.data.tensors import Features


def seed_sets(folder, dataset) -> None:
    """Three campaigns: an existing aid (120 seeds, one given twice, and an unknown uid), a new one by raw ad
    fields (110 seeds), and one whose seed file is malformed."""
    folder.mkdir()
    users = pd.read_parquet(dataset / "users.parquet", columns=["uid"])["uid"].tolist()
    aid = int(load_campaign_frame(str(dataset))["aid"].iloc[0])
    vocab = json.loads((dataset / "campaign_vocab.json").read_text())
    advertiser = next(iter(vocab["advertiserId"]))
    (folder / "known.json").write_text(json.dumps({"aid": aid}))
    (folder / "known.txt").write_text("uid\n" + "\n".join(map(str, [*users[:120], users[0], 987654321987])) + "\n")
    (folder / "new.json").write_text(json.dumps({"ad_fields": {"advertiserId": advertiser}}))
    pd.DataFrame({"uid": users[200:310]}).to_parquet(folder / "new.parquet")
    (folder / "bad.json").write_text(json.dumps({"aid": aid}))
    (folder / "bad.txt").write_text(f"{users[0]}\nnot-a-uid\n")


def write_users(features: Features, uri: str, group_rows: int = 128) -> None:
    """`features`' users as a dataset's users.parquet in row groups of `group_rows` (the rest is not read)."""
    schema = features.schema
    arrow = users_arrow_schema([f.name for f in schema.user_single], {f.name: f.length for f in schema.user_lists})
    users = features.users
    with write_dataset(uri) as writer:
        writer.write_schema(schema)
        for start in range(0, len(users), group_rows):
            chunk = slice(start, start + group_rows)
            lists = users.lists[chunk].numpy().astype(np.int32)
            writer.add_users(users_record_batch(
                arrow, users.uid[chunk], users.single[chunk].numpy(),
                np.split(lists, np.cumsum(schema.list_lengths)[:-1], axis=1),
            ))
