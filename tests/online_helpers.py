"""Seed-set folders for the online stage's tests."""

from __future__ import annotations

import json

import pandas as pd

from metaheac.data.dataset import load_campaign_frame


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
