"""Audience expansion: errors, seed exclusion, top-N order, unknown ids, writing the audience."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from metaheac.adaptation import AdaptConfig, adapt, score
from metaheac.data.tensors import Rows
from metaheac.model.heac import HybridExpertsCritics
from metaheac.online.expand import (
    CAMPAIGN_VOCAB_FILE,
    ExpandConfig,
    expand,
    is_audience,
    load_campaign_vocab,
    write_audience,
)
from metaheac.runtime import storage
from tests.tiny import TINY, TINY_EXPAND, tiny_features

FEATURES = tiny_features()  # 300 users, uids 1000..1299; 8 campaigns, aids 500..507
SEEDS = FEATURES.users.uid[:20]


def general() -> HybridExpertsCritics:
    torch.manual_seed(0)
    return HybridExpertsCritics(FEATURES.schema, TINY)


def run(**changes) -> pd.DataFrame:
    arguments = {"campaign_fields": {"aid": 502}, "seed_uids": SEEDS, "top_n": 50, "config": TINY_EXPAND} | changes
    return expand(general(), FEATURES, **arguments)


def test_the_audience_is_the_top_scored_users_neither_seeds_nor_known_negatives_in_order() -> None:
    negatives = FEATURES.users.uid[100:140]
    frame = run(negative_uids=negatives)
    assert list(frame.columns) == ["uid", "score", "rank"] and len(frame) == 50
    assert frame["rank"].tolist() == list(range(1, 51))
    assert not set(frame.uid) & (set(SEEDS) | set(negatives))
    assert frame.score.is_monotonic_decreasing
    # The same adaptation by hand: seeds positive, the given negatives negative, every user scored.
    user = torch.cat([torch.arange(20), torch.arange(100, 140)])
    label = torch.cat([torch.ones(20), torch.zeros(40)])
    model = adapt(general(), FEATURES, Rows(torch.full_like(user, 2), user, label), TINY_EXPAND.adapt)
    scores = score(model, FEATURES, 2, torch.arange(len(FEATURES.users))).numpy().copy()
    scores[:20] = scores[100:140] = -np.inf
    best = np.argsort(-scores, kind="stable")[:50]
    np.testing.assert_allclose(frame.score.to_numpy(), scores[best], rtol=1e-6)
    assert frame.uid.tolist() == FEATURES.users.uid[best].tolist()


def test_negatives_are_sampled_from_non_seeds_seeded() -> None:
    frame = run()
    summary = frame.attrs["summary"]
    assert summary["negatives_given"] is False and summary["negatives_used"] == 4 * 20
    pd.testing.assert_frame_equal(frame, run())
    other = expand(
        general(), FEATURES, {"aid": 502}, SEEDS, top_n=50, config=ExpandConfig(AdaptConfig(batch_size=16, seed=3))
    )
    assert not np.allclose(frame.score.to_numpy(), other.score.to_numpy())
    assert len(run(top_n=280)) == 280  # sampled negatives stay candidates: they are not known non-converters


def test_the_campaign_is_checked_before_the_seeds_and_the_audience_size() -> None:
    with pytest.raises(ValueError, match="aid 424242 is not a campaign of this dataset"):
        run(campaign_fields={"aid": 424242}, top_n=10_000)
    with pytest.raises(ValueError, match=r"no ad field of the campaign is known to this dataset \(advertiserId=9"):
        run(campaign_fields={"advertiserId": 9}, vocab={"advertiserId": {"3": 1}, "productType": {"1": 1}})


def test_unknown_uids_are_counted_not_fatal() -> None:
    seeds = np.concatenate([SEEDS, [1, 2, 3], SEEDS[:5]])  # 3 unknown, 5 repeated
    negatives = np.concatenate([FEATURES.users.uid[200:230], [7, 8], SEEDS[:4]])  # 2 unknown, 4 seeds
    summary = run(seed_uids=seeds, negative_uids=negatives).attrs["summary"]
    assert summary["seed_uids"] == 23 and summary["seeds_used"] == 20 and summary["unknown_seed_uids"] == 3
    assert summary["negatives_used"] == 30 and summary["unknown_negative_uids"] == 2
    assert summary["candidates"] == 250  # neither seeds nor known negatives


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"seed_uids": np.array([], dtype=np.int64)}, "empty seed set"),
        ({"seed_uids": np.array([1, 2])}, "none of the 2 seed uids is a user of this dataset"),
        ({"top_n": 281}, r"--top-n \(parameter top_n\) 281 is not in \[1, 280\]"),
        ({"top_n": 261, "negative_uids": FEATURES.users.uid[100:120]},  # known negatives are no candidates
         r"--top-n \(parameter top_n\) 261 is not in \[1, 260\]"),
        ({"top_n": 0}, r"--top-n \(parameter top_n\) 0 is not in \[1, 280\]"),
        ({"campaign_fields": {"aid": 9}}, "aid 9 is not a campaign of this dataset"),
        ({"campaign_fields": {"aid": 502, "productType": 1}}, re.escape("either as {'aid': ...} or by its ad fields")),
        ({"campaign_fields": {"creativeSize": 1}}, r"unknown campaign fields \['creativeSize'\]"),
        ({"campaign_fields": {"advertiserId": 7}}, r"advertiserId index 7 is outside \[0, 7\)"),
    ],
)
def test_bad_requests_fail_with_one_line_that_says_what_to_do(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        run(**changes)
    assert "\n" not in str(error.value)


def test_a_new_campaign_by_field_indexes_or_raw_values() -> None:
    fields = {"advertiserId": int(FEATURES.campaigns.fields[2, 0]), "productType": int(FEATURES.campaigns.fields[2, 1])}
    by_index = run(campaign_fields=fields)
    assert by_index.attrs["summary"]["unknown_campaign_fields"] == []
    vocab = {"advertiserId": {"9001": fields["advertiserId"]}, "productType": {"42": fields["productType"]}}
    by_raw = run(campaign_fields={"advertiserId": 9001, "productType": 42}, vocab=vocab)
    pd.testing.assert_frame_equal(by_raw, by_index)
    # text values (an advertiser's own tables), and the text of integers as the CLI passes them
    text_vocab = {"advertiserId": {"acme": fields["advertiserId"]}, "productType": vocab["productType"]}
    by_text = run(campaign_fields={"advertiserId": "acme", "productType": "42"}, vocab=text_vocab)
    pd.testing.assert_frame_equal(by_text, by_index)
    unknown = run(campaign_fields={"advertiserId": 9001, "productType": 43}, vocab=vocab)
    assert unknown.attrs["summary"]["unknown_campaign_fields"] == ["productType"]
    assert run(campaign_fields={"productType": 1}).attrs["summary"]["unknown_campaign_fields"] == ["advertiserId"]


def test_the_campaign_vocabulary_is_read_when_the_dataset_has_one(tmp_path) -> None:
    assert load_campaign_vocab(str(tmp_path)) is None
    vocab = {"advertiserId": {"9001": 3}}
    (tmp_path / CAMPAIGN_VOCAB_FILE).write_text(json.dumps(vocab))
    assert load_campaign_vocab(str(tmp_path)) == vocab


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_write_audience_writes_parquet_atomically(where: str, tmp_path, request) -> None:
    folder = str(tmp_path) if where == "local" else f"gs://{request.getfixturevalue('gcs_bucket')}/run"
    uri = storage.join(folder, "audience.parquet")
    frame = run(top_n=10)
    write_audience(frame, uri)
    with storage.open_read(uri) as f:
        back = pd.read_parquet(f)
    pd.testing.assert_frame_equal(back, frame)
    assert back.attrs["summary"]["seeds_used"] == 20
    assert storage.list_files(folder) == [uri]  # no temporary file left behind
    other = storage.join(folder, "other.parquet")
    with storage.open_write(other) as f:
        frame.to_parquet(f, index=False)
    assert is_audience(uri) and not is_audience(other) and not is_audience(storage.join(folder, "missing.parquet"))
