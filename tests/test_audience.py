"""Scoring a user base by row group: the split first layer, bf16 rank agreement, shards merged = all at once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from metaheac.adaptation import AdaptedModel, score
from metaheac.linear import lr as linear
from metaheac.linear.head import LinearAdapted, LinearHead, LinearHeads
from metaheac.model.baselines import MLP
from metaheac.model.config import ModelConfig
from metaheac.model.heac import HybridExpertsCritics
from metaheac.model.scoring import Precision, ScoreConfig
from metaheac.online.campaigns import CampaignRequest, CampaignRun, prepare_campaign, prepare_campaigns
from metaheac.online.expand import ExpandConfig, expand
from metaheac.online.shard import score_shard, scorer_groups
from metaheac.online.top_n import TopN, merge_audiences
from metaheac.online.user_base import UserBase
from metaheac.recommended.topics import TopicConfig, UserTopics, fit_topics
from tests.online_helpers import write_users
from tests.tiny import TINY, TINY_EXPAND, tiny_features

FEATURES = tiny_features(users=1000, seed=1)


def network(kind: type[torch.nn.Module] = HybridExpertsCritics) -> torch.nn.Module:
    torch.manual_seed(0)
    return kind(FEATURES.schema, TINY)


@pytest.mark.parametrize("kind,projected", [(HybridExpertsCritics, 0), (HybridExpertsCritics, 3),
                                            (HybridExpertsCritics, 8), (HybridExpertsCritics, 100), (MLP, 0)])
def test_the_scorer_gives_the_scores_of_score(kind: type[torch.nn.Module], projected: int) -> None:
    """Every split of the fields between lookups and the matmul (none, the `projected` smallest tables:
    contiguous columns or not, all), and another network."""
    model = AdaptedModel.unchanged(network(kind))
    expected = score(model, FEATURES, 3, torch.arange(len(FEATURES.users)))
    tables = model.tables()[: model.network.embeddings.n_user_fields]
    rows = sorted(t.shape[0] for t in tables)[:projected]
    row_bytes = 4 * (TINY.experts * TINY.expert_hidden[0] + TINY.embedding_dim)  # a projected row, float32
    scorer = model.network_scorer(FEATURES.campaigns.fields[3],
                            ScoreConfig(precision="float32", project_mb=sum(rows) * row_bytes / 2**20))
    if kind is HybridExpertsCritics:
        assert len(scorer.large) == len(tables) - len(rows)
    got = scorer(FEATURES.users.single, FEATURES.users.lists)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hidden", [(8,), (8, 6), (8, 6, 4)])
def test_score_head_gives_the_probabilities_of_head(hidden: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = HybridExpertsCritics(FEATURES.schema, ModelConfig(embedding_dim=8, experts=3, critics=2,
                                                            expert_hidden=hidden, gate_hidden=5))
    p = net.dense_parameters()
    user = torch.randn(50, net.embeddings.n_user_fields, 8)
    campaign = torch.randn(1, len(FEATURES.schema.campaign_fields), 8)
    with torch.no_grad():
        expected = net.head(p, net.expert_input(p, user), user.mean(-2), campaign)
        got = net.score_head(p, net.expert_input(p, user), user.mean(-2), net.campaign_gates(p, campaign))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision,project_mb", [("bfloat16", 0), ("float16", 1024), ("auto", 1024)])
def test_reduced_precision_ranks_the_top_users_as_float32_does(precision: Precision, project_mb: int) -> None:
    """bf16: the large-field matmul (no table pre-multiplied); float16 and auto: every table pre-multiplied,
    in float16."""
    torch.manual_seed(0)
    model = AdaptedModel.unchanged(HybridExpertsCritics(FEATURES.schema, ModelConfig(embedding_dim=16)))
    campaign = FEATURES.campaigns.fields[3]
    exact = model.network_scorer(campaign, ScoreConfig(precision="float32", project_mb=project_mb))
    reduced = model.network_scorer(campaign, ScoreConfig(precision=precision, project_mb=project_mb))
    assert reduced.table_dtype == torch.float16 or not project_mb
    scores = [scorer(FEATURES.users.single, FEATURES.users.lists) for scorer in (exact, reduced)]
    assert not torch.equal(*scores)  # the reduced precision did run
    top = torch.topk(scores[0], len(FEATURES.users) // 10).indices
    assert spearmanr(scores[0][top], scores[1][top]).statistic >= 0.999


def test_float16_tables_fall_back_to_float32_where_they_would_overflow() -> None:
    torch.manual_seed(0)
    net = HybridExpertsCritics(FEATURES.schema, ModelConfig(embedding_dim=16))
    with torch.no_grad():
        net.embeddings.tables()[0].weight.mul_(1e5)
    scorer = AdaptedModel.unchanged(net).network_scorer(FEATURES.campaigns.fields[3], ScoreConfig(precision="float16"))
    assert scorer.table_dtype == torch.float32
    assert torch.isfinite(scorer(FEATURES.users.single, FEATURES.users.lists)).all()


def test_shards_read_their_row_groups_only_and_take_reads_chosen_users(tmp_path) -> None:
    write_users(FEATURES, str(tmp_path / "d"))
    base = UserBase(str(tmp_path / "d"))
    assert len(base) == 1000 and base.file.num_row_groups == 8
    shards = [base.shard_groups(s, 3) for s in range(3)]
    assert [g for shard in shards for g in shard] == list(range(8))
    first, users = next(base.batches(shards[1]))
    assert first == 128 * shards[1][0] and torch.equal(users.lists, FEATURES.users.lists[first : first + 128])
    chosen = np.array([3, 130, 131, 999])
    taken = base.take(chosen)
    assert taken.uid.tolist() == FEATURES.users.uid[chosen].tolist()
    assert torch.equal(taken.single, FEATURES.users.single[chosen])


def test_kept_row_groups_are_decoded_once_and_give_the_same_users(tmp_path) -> None:
    write_users(FEATURES, str(tmp_path / "d"))
    base = UserBase(str(tmp_path / "d"))
    base.keep(range(1, 3))
    decoded = []
    decode = base._decode
    base._decode = lambda g, rows=None: decoded.append(g) or decode(g, rows)  # type: ignore[method-assign]
    chosen = np.array([3, 130, 131, 300, 999])
    taken = base.take(chosen)
    assert taken.uid.tolist() == FEATURES.users.uid[chosen].tolist()
    assert torch.equal(taken.lists, FEATURES.users.lists[chosen])
    batches = list(base.batches(range(0, 4)))
    assert sorted(decoded[:4]) == [0, 1, 2, 7] and decoded[4:] == [0, 3]  # kept 1 and 2: not decoded again
    assert [first for first, _ in batches] == [0, 128, 256, 384]
    for first, users in batches:
        assert torch.equal(users.lists, FEATURES.users.lists[first : first + 128])
    assert not base._kept  # scored groups are let go
    next(base.batches(range(1, 2)))
    assert decoded[-1] == 1


def test_two_shards_merged_give_the_audience_of_expand(tmp_path) -> None:
    write_users(FEATURES, str(tmp_path / "d"))
    base = UserBase(str(tmp_path / "d"))
    uids = base.uids()
    seeds = FEATURES.users.uid[[5, 9, 400, 401, 990]]
    parts = []
    for shard in range(2):
        run, summary = prepare_campaign(network(), base, pd.Index(uids), FEATURES.campaigns, {"aid": 503}, seeds,
                                        50, TINY_EXPAND, ScoreConfig(precision="float32"))  # exact, as expand
        ((scores, index),) = score_shard(base, {"c": run}, base.shard_groups(shard, 2), batch_size=100).values()
        assert len(index) == 50 and not set(index.tolist()) & {5, 9, 400, 401, 990}
        parts.append(pd.DataFrame({"uid": uids[index.numpy()], "score": scores.numpy()}))
    merged = merge_audiences(parts, 50)
    expected = expand(network(), FEATURES, {"aid": 503}, seeds, top_n=50, config=TINY_EXPAND)
    assert summary["seeds_used"] == 5 and summary["negatives_used"] == 20
    assert merged["uid"].tolist() == expected["uid"].tolist()
    np.testing.assert_allclose(merged["score"], expected["score"], rtol=1e-5)
    assert merged["rank"].tolist() == list(range(1, 51))


def test_campaigns_share_one_read_of_the_base_and_a_bad_request_fails_alone(tmp_path) -> None:
    write_users(FEATURES, str(tmp_path / "d"))
    base = UserBase(str(tmp_path / "d"))
    uid_index = pd.Index(base.uids())
    decoded: list[int] = []
    decode = base._decode
    base._decode = lambda g, rows=None: decoded.append(g) or decode(g, rows)  # type: ignore[method-assign]
    uids = FEATURES.users.uid
    requests = {"a": CampaignRequest({"aid": 503}, uids[[5, 9, 400]]),
                "b": CampaignRequest({"aid": 503}, uids[[401, 990]], negative_uids=uids[[0, 600, 601]]),
                "bad": CampaignRequest({"aid": 503}, np.array([-1, -2]))}
    exact = ScoreConfig(precision="float32")
    runs, summaries = prepare_campaigns(network(), base, uid_index, FEATURES.campaigns, requests, 50, TINY_EXPAND,
                                        exact)
    assert sorted(runs) == ["a", "b"] and list(summaries) == ["a", "b", "bad"]
    assert summaries["bad"]["status"] == "failed" and "none of the 2 seed uids" in summaries["bad"]["error"]
    assert summaries["bad"]["unknown_seed_uids"] == 2 and summaries["bad"]["seeds_used"] == 0
    assert summaries["b"]["negatives_used"] == 3 and summaries["a"]["negatives_used"] == 12
    assert len(decoded) == len(set(decoded))  # a row group decoded once for every campaign
    every = len(uids) - 5  # all but b's 2 seeds and 3 known negatives
    runs_b, _ = prepare_campaigns(network(), base, uid_index, FEATURES.campaigns, {"b": requests["b"]}, every,
                                  TINY_EXPAND)
    (top,) = score_shard(base, runs_b, range(base.file.num_row_groups)).values()
    assert len(top[1]) == every and not set(top[1].tolist()) & {0, 600, 601, 401, 990}
    for name in ("a", "b"):  # as each campaign prepared alone
        alone, _ = prepare_campaign(network(), base, uid_index, FEATURES.campaigns, {"aid": 503},
                                    requests[name].seed_uids, 50, TINY_EXPAND, exact,
                                    negative_uids=requests[name].negative_uids)
        users = (FEATURES.users.single, FEATURES.users.lists)
        torch.testing.assert_close(runs[name].scorer(*users), alone.scorer(*users))
    with pytest.raises(ValueError, match="none of the 2 seed uids"):
        prepare_campaign(network(), base, uid_index, FEATURES.campaigns, {"aid": 503}, np.array([-1, -2]), 50)


def test_worker_threads_give_the_top_of_one_and_leave_torch_threads_as_they_were(tmp_path) -> None:
    write_users(FEATURES, str(tmp_path / "d"))
    base = UserBase(str(tmp_path / "d"))
    scorer = AdaptedModel.unchanged(network()).network_scorer(FEATURES.campaigns.fields[3])
    seeds = np.array([0, 127, 128, 500])
    threads = torch.get_num_threads()
    tops = [
        score_shard(base, {"c": CampaignRun(scorer, seeds, TopN(300))}, range(1, 8), 50, workers)["c"]
        for workers in (1, 3)
    ]
    assert torch.get_num_threads() == threads
    assert torch.equal(tops[0][0], tops[1][0]) and torch.equal(tops[0][1], tops[1][1])
    assert len(tops[0][1]) == 300 and tops[0][1].min() >= 128 and not set(tops[0][1].tolist()) & {128, 500}


def test_negatives_given_or_drawn_are_never_seeds() -> None:
    from metaheac.online.expand import plan_seeds

    index = pd.Index(FEATURES.users.uid)
    seeds = FEATURES.users.uid[::7]
    plan = plan_seeds(index, seeds, None, 10, ExpandConfig(negatives_per_seed=5))
    assert len(plan.negatives) == 5 * len(plan.seeds) == len(np.unique(plan.negatives))
    assert not np.isin(plan.negatives, plan.seeds).any() and plan.negatives.max() < len(index)


TOPICS = fit_topics(FEATURES, TopicConfig(topics=4, passes=3, seed=0))


def linear_head(seed: int, general_weight: float, topics: UserTopics | None) -> LinearHead:
    rng = np.random.default_rng(seed)
    head = LinearHead(rng.normal(size=int(linear.column_offsets(FEATURES.schema)[-1])), -1.0, 0.1, general_weight)
    if topics is not None:
        head.topic_weight, head.topics = rng.normal(0, 3, topics.word.shape[1]), topics
    return head


@pytest.mark.parametrize(("general_weight", "topics"), [(0.0, None), (0.7, None), (0.0, TOPICS)])
def test_a_linear_head_scores_as_its_model_and_expansion_adapts_through_the_method(
    tmp_path, general_weight, topics
) -> None:
    """The recommended method's campaigns (`LinearAdapted`): the streaming scorer gives `score`'s scores, and
    `prepare_campaign` and `expand` adapt through the `adapt` they are given."""
    net = network()
    head = linear_head(0, general_weight, topics)

    def adapt(general, features, seeds, config):  # the method hook's signature
        return ((campaign, LinearAdapted(general, head)) for campaign in seeds)

    expected = LinearAdapted(net, head).score(FEATURES, 3, torch.arange(len(FEATURES.users)))
    scorer = LinearAdapted(net, head).scorer(FEATURES.campaigns.fields[3])
    assert (scorer.network is None) == (general_weight == 0)
    assert scorer(FEATURES.users.single, FEATURES.users.lists).numpy() == pytest.approx(expected.numpy(), abs=1e-5)
    write_users(FEATURES, str(tmp_path / "d"))
    base = UserBase(str(tmp_path / "d"))
    seeds = FEATURES.users.uid[[5, 9, 400]]
    run, _ = prepare_campaign(net, base, pd.Index(base.uids()), FEATURES.campaigns, {"aid": 503}, seeds, 30,
                              TINY_EXPAND, adapt=adapt)
    ((scores, index),) = score_shard(base, {"c": run}, base.shard_groups(0, 1)).values()
    audience = expand(net, FEATURES, {"aid": 503}, seeds, top_n=30, config=TINY_EXPAND, adapt=adapt)
    assert base.uids()[index.numpy()].tolist() == audience["uid"].tolist()
    np.testing.assert_allclose(scores.numpy(), audience["score"], rtol=1e-5)


def test_campaigns_scoring_one_batch_infer_its_topic_mixes_once_and_each_gets_its_own_scores() -> None:
    net = network()
    topics = dataclasses.replace(TOPICS)  # none of its users' mixes known yet
    heads = [linear_head(seed, 0.0, topics) for seed in (1, 2)]
    scorers = [LinearAdapted(net, head).scorer(FEATURES.campaigns.fields[3]) for head in heads]
    calls = []
    infer = topics.mixes
    topics.mixes = lambda *a, **k: calls.append(len(a[0])) or infer(*a, **k)  # type: ignore[method-assign]
    for first in (0, 500):  # two batches, each scored by both campaigns in turn, as `score_shard` does
        single, lists = FEATURES.users.single[first:first + 500], FEATURES.users.lists[first:first + 500]
        for head, scorer in zip(heads, scorers, strict=True):
            expected = LinearAdapted(net, head).score(FEATURES, 3, torch.arange(first, first + 500))
            assert scorer(single, lists).numpy() == pytest.approx(expected.numpy(), abs=1e-5)
    # once per batch for the scorers; for the expectations once per 500 users, which the second campaign's
    # `score` finds known (`UserTopics.of_users`)
    assert calls == [500] * 4
    again = LinearAdapted(net, heads[0]).score(FEATURES, 3, torch.arange(250, 750))
    assert calls == [500] * 4 and len(again) == 500


def test_many_linear_heads_in_one_pass_score_each_campaign_as_alone(tmp_path) -> None:
    """`LinearHeads`: campaigns with and without a network weight and topic weights, scored in one pass,
    get exactly the scores each gets alone, and the same top N from `score_shard`; campaigns of one network
    share its user side."""
    net = network()
    heads = [linear_head(seed, weight, TOPICS if seed % 2 else None)
             for seed, weight in enumerate((0.0, 0.7, -0.4, 0.0, 1.1))]
    trunks: dict = {}
    scorers = [LinearAdapted(net, head).scorer(FEATURES.campaigns.fields[c], trunks=trunks)
               for c, head in enumerate(heads)]
    assert len(trunks) == 1 and scorers[1].network is scorers[2].network is scorers[4].network
    for group in ([0, 2, 4], [1, 3]):  # without topics, with them
        together = LinearHeads([scorers[k] for k in group])(FEATURES.users.single, FEATURES.users.lists)
        for g, k in enumerate(group):
            alone = LinearAdapted(net, heads[k]).scorer(FEATURES.campaigns.fields[k])
            assert torch.equal(together[:, g], alone(FEATURES.users.single, FEATURES.users.lists))
            expected = LinearAdapted(net, heads[k]).score(FEATURES, k, torch.arange(len(FEATURES.users)))
            assert together[:, g].numpy() == pytest.approx(expected.numpy(), abs=1e-5)
    with pytest.raises(ValueError, match="topic models"):
        LinearHeads(scorers)
    write_users(FEATURES, str(tmp_path / "d"))
    base = UserBase(str(tmp_path / "d"))
    groups = base.shard_groups(0, 1)
    runs = {f"c{k}": CampaignRun(s, np.array([3, 77]), TopN(40)) for k, s in enumerate(scorers)}
    assert [names for names, _ in scorer_groups(runs)] == [["c0", "c2", "c4"], ["c1", "c3"]]
    many = score_shard(base, runs, groups)
    for k, scorer in enumerate(scorers):
        ((scores, index),) = score_shard(base, {"c": CampaignRun(scorer, np.array([3, 77]), TopN(40))},
                                         groups).values()
        assert torch.equal(many[f"c{k}"][0], scores) and torch.equal(many[f"c{k}"][1], index)
