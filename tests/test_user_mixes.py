"""The users' topic mixes stored with the user base (metaheac.online.user_mixes): read back by later passes with the
same top N to the bit, recomputed where stale (other ids, another model), refused in a folder not ours; local and
on the GCS emulator; the recommended method's campaigns of one model score as one group."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from metaheac.adaptation import AdaptedModel
from metaheac.cli import main
from metaheac.data.loading import load_campaigns
from metaheac.data.tensors import Features, UserTable
from metaheac.linear import lr as linear
from metaheac.linear.head import LinearAdapted, LinearHead
from metaheac.methods import load_model, method
from metaheac.model.heac import HybridExpertsCritics
from metaheac.online.campaigns import CampaignRequest, CampaignRun, prepare_campaigns
from metaheac.online.shard import mixes_stores, score_shard, scorer_groups
from metaheac.online.top_n import TopN
from metaheac.online.user_base import UserBase
from metaheac.online.user_mixes import StoredMixes, mixes_folder
from metaheac.recommended.topics import TopicConfig, UserTopics, fit_topics
from metaheac.runtime import storage
from metaheac.runtime.outputs import OutputError
from tests.online_helpers import seed_sets, write_users
from tests.tiny import TINY, tiny_features

FEATURES = tiny_features(users=1000, seed=1)
TOPICS = fit_topics(FEATURES, TopicConfig(topics=4, passes=3, seed=0))
GROUPS = 8  # row groups of 128 users


def runs(topics: UserTopics, count: int = 3) -> dict[str, CampaignRun]:
    """`count` recommended-style campaigns (a network weight, topic weights) of one network and topic model."""
    torch.manual_seed(0)
    net = HybridExpertsCritics(FEATURES.schema, TINY)
    trunks: dict = {}
    made = {}
    for k in range(count):
        rng = np.random.default_rng(k)
        head = LinearHead(rng.normal(size=int(linear.column_offsets(FEATURES.schema)[-1])), -1.0, 0.1, 0.5,
                          rng.normal(0, 3, topics.word.shape[1]), topics)
        scorer = LinearAdapted(net, head).scorer(FEATURES.campaigns.fields[k], trunks=trunks)
        made[f"c{k}"] = CampaignRun(scorer, np.array([3, 77]), TopN(60))
    return made


def tops(base: UserBase, folder: str | None, topics: UserTopics = TOPICS
         ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, StoredMixes]]:
    made = runs(topics)
    stores = mixes_stores(made, folder) if folder else {}
    return score_shard(base, made, base.shard_groups(0, 1), batch_size=50, mixes=stores), stores


def counted(monkeypatch) -> list[int]:
    """The users whose mixes the E-step infers, per call."""
    calls: list[int] = []
    infer = UserTopics.mixes

    def mixes(self, columns, present, batch_size=4096):
        calls.append(len(columns))
        return infer(self, columns, present, batch_size)

    monkeypatch.setattr(UserTopics, "mixes", mixes)
    return calls


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k][0], b[k][0]) and torch.equal(a[k][1], b[k][1]) for k in a)


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_stored_mixes_are_read_back_and_give_the_same_top_n(tmp_path, where, request, monkeypatch) -> None:
    write_users(FEATURES, str(tmp_path / "d"))
    base = UserBase(str(tmp_path / "d"))
    folder = str(tmp_path / "mixes") if where == "local" else f"gs://{request.getfixturevalue('gcs_bucket')}/mixes"
    computed, _ = tops(base, None)
    calls = counted(monkeypatch)
    first, stores = tops(base, folder)
    assert [(s.read, s.written) for s in stores.values()] == [(0, GROUPS)]
    assert sum(calls) == 1000  # every user inferred once for the 3 campaigns, and stored
    assert len([u for u in storage.list_files(folder) if u.endswith(".parquet")]) == GROUPS
    calls.clear()
    second, stores = tops(base, folder)
    assert calls == [] and [(s.read, s.written, s.stale) for s in stores.values()] == [(GROUPS, 0, 0)]
    assert same(first, computed) and same(second, computed)  # the same bits: top N and scores


def changed_users(features: Features) -> Features:
    """The users with user 300's (row group 2's) list ids changed."""
    lists = features.users.lists.clone()
    lists[300] = torch.roll(lists[300], 1)
    lists[300, 0] = 1 + int(lists[300, 0]) % 3
    users = UserTable(features.users.uid, features.users.single, lists)
    return Features(features.schema, users, features.campaigns)


def test_stale_mixes_are_recomputed_with_a_warning_never_used(tmp_path, caplog) -> None:
    write_users(FEATURES, str(tmp_path / "d"))
    folder = str(tmp_path / "mixes")
    tops(UserBase(str(tmp_path / "d")), folder)
    write_users(changed_users(FEATURES), str(tmp_path / "d"))  # the table re-preprocessed
    base = UserBase(str(tmp_path / "d"))
    with caplog.at_level(logging.WARNING, "metaheac.online.user_mixes"):
        got, stores = tops(base, folder)
    (store,) = stores.values()
    assert (store.read, store.written, store.stale) == (GROUPS - 1, 1, 1)
    assert "group-00002.parquet are stale (the users' ids changed): recomputed" in caplog.text
    assert same(got, tops(base, None)[0])
    # another topic model: its own entries, never the first model's
    other = fit_topics(FEATURES, TopicConfig(topics=4, passes=3, seed=1))
    assert other.digest != TOPICS.digest
    caplog.clear()
    moved, stores = tops(base, folder, other)
    assert [(s.read, s.written) for s in stores.values()] == [(0, GROUPS)] and same(moved, tops(base, None, other)[0])
    # a file of the first model put under the other's name is stale, not used
    (store,) = stores.values()
    first = StoredMixes(folder, TOPICS)  # the folder checked by `tops` above
    storage.write_bytes(store.uri(5), storage.read_bytes(first.uri(5)))
    with caplog.at_level(logging.WARNING, "metaheac.online.user_mixes"):
        again, stores = tops(base, folder, other)
    assert "group-00005.parquet are stale (the topic model changed)" in caplog.text
    assert [(s.read, s.stale) for s in stores.values()] == [(GROUPS - 1, 1)] and same(again, moved)


def test_a_folder_not_ours_is_refused(tmp_path, trained) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not written by metaheac"):
        mixes_folder(str(foreign))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "_METAHEAC").write_text(json.dumps({"step": "expand_shard"}))
    with pytest.raises(OutputError, match="holds the output of `expand_shard`"):
        mixes_folder(str(tmp_path / "other"))
    ours = StoredMixes(mixes_folder(str(tmp_path / "ours")), TOPICS)
    storage.write_text(ours.uri(0), "not parquet")  # never read as mixes, nor written over
    with pytest.raises(OutputError, match="group-00000.parquet: not a user mixes file written by metaheac"):
        ours.load(0, "", 128)
    with pytest.raises(OutputError, match="lies inside the input"):
        mixes_folder(str(tmp_path / "d" / "mixes"), [str(tmp_path / "d")])
    assert (foreign / "notes.txt").read_text() == "mine" and not (tmp_path / "d").exists()
    dataset, model = trained
    seed_sets(tmp_path / "seeds", dataset)
    common = ["expand_shard", "--dataset", str(dataset), "--model", str(model), "--seeds", str(tmp_path / "seeds"),
              "--top-n", "40"]
    assert main([*common, "--output", str(tmp_path / "p"), "--mixes", str(foreign)]) == 2
    assert main([*common, "--output", str(tmp_path / "p"), "--mixes", str(dataset / "mixes")]) == 2


def test_the_step_stores_the_mixes_then_reads_them_and_campaigns_of_one_model_score_together(trained, tmp_path
                                                                                               ) -> None:
    dataset, model = trained
    network, info = load_model(str(model))
    base = UserBase(str(dataset))
    uids = base.uids()
    campaigns = load_campaigns(str(dataset), base.schema)
    requests = {f"c{k}": CampaignRequest({"aid": int(campaigns.aid[k])}, uids[k * 50 : (k + 1) * 50])
                for k in range(3)}
    made, _ = prepare_campaigns(network, base, pd.Index(uids), campaigns, requests, 10,
                                adapt=method(info["method"]).adapt_campaigns)
    assert [names for names, _ in scorer_groups(made)] == [["c0", "c1", "c2"]]  # each adaptation's own model copy
    seed_sets(tmp_path / "seeds", dataset)
    common = ["expand_shard", "--dataset", str(dataset), "--model", str(model), "--seeds", str(tmp_path / "seeds"),
              "--top-n", "40", "--mixes", str(tmp_path / "mixes")]
    statuses, audiences = [], []
    for run in ("first", "second"):
        assert main([*common, "--output", str(tmp_path / run)]) == 0
        statuses.append(json.loads((tmp_path / run / "status.json").read_text()))
        audiences.append({n: pd.read_parquet(tmp_path / run / f"{n}.parquet") for n in ("known", "new")})
    assert [s["mixes_groups"] for s in statuses] == [{"read": 0, "written": 1, "stale": 0},
                                                   {"read": 1, "written": 0, "stale": 0}]
    for name in ("known", "new"):
        pd.testing.assert_frame_equal(audiences[0][name], audiences[1][name])


def test_campaigns_that_weigh_no_mixes_store_nothing_and_say_so(tmp_path, caplog) -> None:
    torch.manual_seed(0)
    scorer = AdaptedModel.unchanged(HybridExpertsCritics(FEATURES.schema, TINY)).scorer(FEATURES.campaigns.fields[0])
    made = {"c": CampaignRun(scorer, np.zeros(0, np.int64), TopN(5))}
    with caplog.at_level(logging.WARNING, "metaheac.online.shard"):
        assert mixes_stores(made, str(tmp_path / "mixes")) == {}
    assert "no campaign weighs users' topic mixes" in caplog.text
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "a.txt").write_text("x")
    with pytest.raises(OutputError, match="not written by metaheac"):  # the folder is checked all the same
        mixes_stores(made, str(tmp_path / "foreign"))
