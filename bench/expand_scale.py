"""Expansion at the scale of a real user base: one campaign over 10M users, whole, then in 4 user shards;
and the recommended method's scorer, many campaigns in one pass.

    python bench/expand_scale.py [--users 10000000] [--seeds 2000] [--top-n 10000] [--shards 4]
                                 [--precision auto|float32|float16|bfloat16] [--output runs/expand_scale]
                                 [--campaigns-per-pass 1,10,50] [--only-recommended] [--stored-mixes]
                                 [--request-cost 1%,5%,10%]

`--request-cost TIERS` measures what an advertiser's request costs over the plain top N, on every user
in one shard, each variant its own process: "top N" (one tier of --top-n, no holdout), "tiers" (TIERS: the
largest is kept, each user labelled at the merge) and "tiers + estimate" (20% of the seeds held out: a
second adaptation scored in the same pass, and the recall estimate at the merge). It prints each variant's
CPU time (adapt, score, merge) and its ratio to "top N"; the load average says how far to trust walls.

The recommended method's passes (`--campaigns-per-pass`, "" to skip) score every user for 1, 10, 50
campaigns of `MetaHeac+LR` in one read of the users (`linear.head.LinearHeads`; random heads and network,
`recommended_runs`), each pass its own process, and print user-campaign scorings per second of wall time
and of the process's CPU time while it scores (on a shared machine the CPU figure is the steadier one; 2
idle cores give up to twice it); campaign 0 is the same campaign in every pass, and its top N must equal
the one-campaign pass's.

`--stored-mixes` times, for each count of campaigns per pass, the users' topic mixes stored with the user
base (`online.user_mixes`) against inferring them, A/B in one process (CPU time of `score_shard`): the
first pass infers and stores them (the first campaign on a users table), then a pass infers them without a
store and one reads them back. It prints each pass's CPU-ms per batch of 4096 users and scorings per
CPU-second, and checks that every campaign's top N read back equals the inferred one, bit for bit.

Writes (once, streamed in row groups, reused when present) a canonical user base of random users at the
Tencent Look-alike sizes (bench/meta_train.py: vocabularies, list lengths, Zipf-like ids) under --output,
then times the whole path of `metaheac.online` (campaigns, shard, top_n) for one campaign: read the uid
column, adapt the default MetaHeac network (random weights: the cost does not depend on them) on the seeds
and 4 sampled negatives each, score every user of the shard by row group, keep the top N; the shards' tops
are then merged. Each run is its own process, so its peak RSS is its own.
Target on 2 cores: 10M users < 60 s, peak RSS < 8 GB.
With a --precision other than float32, the campaign's first 1M users are then scored in both, and the rank
agreement printed (Spearman on float32's top 10%, share of float32's top 1% kept).
The machine may be shared: the load average printed with the table tells how far to trust the wall times;
"CPU s" is the process's own CPU time (user + system), which neighbours do not inflate as much.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from meta_train import tencent_schema, zipf_ids

from metaheac.data.dataset import ROW_GROUP_ROWS, users_arrow_schema, users_record_batch, write_dataset
from metaheac.data.tensors import CampaignTable, Features
from metaheac.linear.head import LinearAdapted, LinearHead, design_width
from metaheac.model.heac import HybridExpertsCritics
from metaheac.model.scoring import CampaignScorer, Precision, ScoreConfig
from metaheac.online.campaigns import CampaignRequest, CampaignRun, holdout_key, prepare_campaign, prepare_campaigns
from metaheac.online.shard import mixes_stores, score_shard
from metaheac.online.tiers import Tier, parse_tiers, recall_estimate
from metaheac.online.top_n import TopN, merge_audiences
from metaheac.online.user_base import UserBase
from metaheac.recommended.network import TransferNetwork
from metaheac.recommended.topics import TopicConfig, fit_topics
from metaheac.runtime import storage

TARGET_S, TARGET_GB = 60.0, 8.0
AGREEMENT_GROUPS = 16  # row groups (1M users) scored in both precisions for the rank agreement


def user_base(uri: str, users: int, seed: int = 0) -> float:
    """Write `users` random users as a dataset's users.parquet (seconds taken; 0 when already there)."""
    if storage.is_complete(uri):
        return 0.0
    started = time.perf_counter()
    schema = tencent_schema()
    arrow = users_arrow_schema([f.name for f in schema.user_single], {f.name: f.length for f in schema.user_lists})
    rng = np.random.default_rng(seed)
    with write_dataset(uri) as writer:
        writer.write_schema(schema)
        for start in range(0, users, ROW_GROUP_ROWS):
            n = min(ROW_GROUP_ROWS, users - start)
            single = np.stack([zipf_ids(rng, f.vocab_size, (n,)) for f in schema.user_single], 1)
            lists = [
                np.where(np.arange(f.length) < rng.integers(0, f.length + 1, (n, 1)),
                         zipf_ids(rng, f.vocab_size, (n, f.length)), 0).astype(np.int32)
                for f in schema.user_lists
            ]
            writer.add_users(users_record_batch(arrow, 10**9 + np.arange(start, start + n), single, lists))
    return time.perf_counter() - started


def bench_campaign(base: UserBase, uids: np.ndarray, args: argparse.Namespace
                   ) -> tuple[HybridExpertsCritics, CampaignTable, np.ndarray]:
    """The bench's campaign: random MetaHeac weights (seeded), its ad fields and its seed uids."""
    schema = base.schema
    rng = np.random.default_rng(1)
    campaigns = CampaignTable(np.array([7]), torch.from_numpy(np.stack(
        [rng.integers(1, f.vocab_size, 1) for f in schema.campaign_fields], 1)).int(), np.array(["train"]),
        np.zeros(1, np.int64))
    torch.manual_seed(0)
    seeds = uids[np.random.default_rng(2).choice(len(uids), args.seeds, replace=False)]
    return HybridExpertsCritics(schema), campaigns, seeds


def adapt(base: UserBase, uids: np.ndarray, args: argparse.Namespace, precision: Precision) -> tuple[CampaignRun, dict]:
    """The bench's campaign adapted to its seeds."""
    model, campaigns, seeds = bench_campaign(base, uids, args)
    return prepare_campaign(model, base, pd.Index(uids), campaigns, {"aid": 7}, seeds, args.top_n,
                            score_config=ScoreConfig(precision=precision))


def request_cost(args: argparse.Namespace) -> dict:
    """One variant of `--request-cost` over every user, in this process: CPU seconds of each part."""
    base = UserBase(args.dataset)
    uids = base.uids()
    groups = base.shard_groups(0, 1)
    base.keep(groups)
    tiers = parse_tiers(args.tiers, len(base)) if args.tiers else [Tier(str(args.top_n), args.top_n)]
    model, campaigns, seeds = bench_campaign(base, uids, args)
    request = CampaignRequest({"aid": 7}, seeds, size=tiers[-1].size, holdout=args.holdout)
    cpu = [time.process_time()]
    runs, summaries = prepare_campaigns(model, base, pd.Index(uids), campaigns, {"c": request}, args.top_n,
                                        score_config=ScoreConfig(precision=args.precision))
    cpu.append(time.process_time())
    tops = score_shard(base, runs, groups)
    cpu.append(time.process_time())
    frames = {k: pd.DataFrame({"uid": uids[index.numpy()], "score": scores.numpy()}) for k, (scores, index) in
              tops.items()}
    audience = merge_audiences([frames["c"]], tiers[-1].size, tiers)
    if args.holdout:  # as merge_audiences' step does: the estimate's run merged, the held-out seeds' ranks
        top = merge_audiences([frames[holdout_key("c")]], tiers[-1].size)
        held = uids[runs[holdout_key("c")].held_out]
        recall_estimate(np.sort(top.loc[top["uid"].isin(held), "rank"].to_numpy()), len(held), tiers,
                        summaries["c"]["candidates"])
    cpu.append(time.process_time())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"users": len(base), "audience": len(audience), "adapt_cpu": cpu[1] - cpu[0],
            "score_cpu": cpu[2] - cpu[1], "merge_cpu": cpu[3] - cpu[2], "rss_gb": usage.ru_maxrss / 2**20}


def request_costs(args: argparse.Namespace) -> None:
    """The `--request-cost` table: each variant in its own process, its CPU time against the plain top N."""
    print(f"\n{'request (one campaign, every user)':<36}{'audience':>10}{'adapt':>8}{'score':>8}{'merge':>8}"
          f"{'CPU s':>8}{'x top N':>9}{'peak RSS':>10}  load")
    base_cpu = None
    for name, extra in (("top N", []), (f"tiers {args.request_cost}", ["--tiers", args.request_cost]),
                        ("tiers + estimate (holdout 0.2)", ["--tiers", args.request_cost, "--holdout", "0.2"])):
        argv = [sys.executable, __file__, "--child", "--request", "--dataset", args.dataset, "--seeds",
                str(args.seeds), "--top-n", str(args.top_n), "--precision", args.precision, *extra]
        r = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        total = r["adapt_cpu"] + r["score_cpu"] + r["merge_cpu"]
        base_cpu = base_cpu or total
        print(f"{name:<36}{r['audience']:>10,}{r['adapt_cpu']:>8.1f}{r['score_cpu']:>8.1f}{r['merge_cpu']:>8.2f}"
              f"{total:>8.1f}{total / base_cpu:>8.2f}x{r['rss_gb']:>8.2f} GB  {os.getloadavg()[0]:.2f}", flush=True)


def one_shard(args: argparse.Namespace) -> dict:
    """The whole path for one shard, in this process: what the parent prints."""
    started = time.perf_counter()
    base = UserBase(args.dataset)
    uids = base.uids()
    opened = time.perf_counter()
    groups = base.shard_groups(args.shard, args.shards)
    base.keep(groups)  # as the expansion step does: the seeds' read decodes the shard's users once
    run, summary = adapt(base, uids, args, args.precision)
    adapted = time.perf_counter()
    ((scores, top),) = score_shard(base, {"c": run}, groups).values()
    scored = time.perf_counter()
    frame = pd.DataFrame({"uid": uids[top.numpy()], "score": scores.numpy()})
    frame.to_parquet(args.part, index=False)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    scorer = run.scorer
    assert isinstance(scorer, CampaignScorer)  # the bench adapts the MetaHeac network
    return {
        "users": int(base.starts[groups.stop] - base.starts[groups.start]),
        "open_s": opened - started,
        "adapt_s": adapted - opened,
        "score_s": scored - adapted,
        "total_s": time.perf_counter() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_gb": usage.ru_maxrss / 2**20,
        "dtype": f"{short(scorer.table_dtype)} tables, {short(scorer.dtype)} matmul",
        "seeds_used": summary["seeds_used"],
    }


def short(dtype: torch.dtype) -> str:
    return {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]


def agreement(args: argparse.Namespace) -> dict:
    """The campaign adapted as in `one_shard`, its first `AGREEMENT_GROUPS` row groups scored in float32 and
    in --precision: Spearman on float32's top 10% and the share of float32's top 1% kept."""
    base = UserBase(args.dataset)
    run, _ = adapt(base, base.uids(), args, "float32")
    exact = run.scorer
    assert isinstance(exact, CampaignScorer)
    reduced = CampaignScorer(exact.network, exact.dense, exact.tables, exact.campaign_ids,
                             ScoreConfig(precision=args.precision))
    scores: list[list[torch.Tensor]] = [[], []]
    for _, users in base.batches(range(min(AGREEMENT_GROUPS, base.file.num_row_groups))):
        for k, scorer in enumerate((exact, reduced)):
            scores[k] += [scorer(users.single[i : i + 4096], users.lists[i : i + 4096])
                          for i in range(0, len(users), 4096)]
    a, b = (torch.cat(s).double() for s in scores)
    top = torch.topk(a, len(a) // 10).indices
    rank = lambda x: x.argsort().argsort().double()  # noqa: E731
    ra, rb = rank(a[top]), rank(b[top])
    spearman = float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])
    k = len(a) // 100
    kept = len(np.intersect1d(torch.topk(a, k).indices.numpy(), torch.topk(b, k).indices.numpy())) / k
    return {"users": len(a), "spearman_top10": spearman, "top1_kept": kept}


def recommended_runs(base: UserBase, count: int, args: argparse.Namespace) -> dict[str, CampaignRun]:
    """`count` campaigns of the recommended method, as `prepare_campaigns` makes them (one shared network user
    side): the default network with random weights, random folded heads (design columns, topic weights, a
    weight on the network's logit) and a topic model fit on 20,000 of the base's users (2 passes: its cost
    to score does not depend on its fit), each campaign with its own copy of it, as each adaptation loads
    one (`TransferNetwork.bank`). Campaign k is the same in every call."""
    schema = base.schema
    torch.manual_seed(0)
    network = TransferNetwork(schema)
    sample = np.arange(min(20_000, len(base)))
    fields = torch.from_numpy(np.stack([np.random.default_rng(1).integers(1, f.vocab_size, max(count, 1))
                                        for f in schema.campaign_fields], 1)).int()
    campaigns = CampaignTable(np.arange(len(fields)), fields, np.array(["train"] * len(fields)),
                              np.zeros(len(fields), np.int64))
    topics = fit_topics(Features(schema, base.take(sample), campaigns), TopicConfig(passes=2, seed=0))
    trunks: dict[int, CampaignScorer] = {}
    runs = {}
    for k in range(count):
        rng = np.random.default_rng(100 + k)
        head = LinearHead(rng.normal(0, 0.1, design_width(schema)), -3.0, 0.1, 0.5,
                          rng.normal(0, 1, topics.word.shape[1]), dataclasses.replace(topics))
        scorer = LinearAdapted(network, head).scorer(fields[k], ScoreConfig(precision=args.precision), trunks)
        runs[f"c{k}"] = CampaignRun(scorer, np.zeros(0, np.int64), TopN(args.top_n))
    return runs


def many_campaigns(args: argparse.Namespace) -> dict:
    """One pass of `--campaigns` recommended campaigns over the shard's users, in this process."""
    started = time.perf_counter()
    base = UserBase(args.dataset)
    runs = recommended_runs(base, args.campaigns, args)
    prepared = time.perf_counter()
    groups = base.shard_groups(args.shard, args.shards)
    cpu_before = time.process_time()
    tops = score_shard(base, runs, groups)
    scored = time.perf_counter()
    score_cpu = time.process_time() - cpu_before
    usage = resource.getrusage(resource.RUSAGE_SELF)
    scores, index = tops["c0"]
    frame = pd.DataFrame({"index": index.numpy(), "score": scores.numpy()})
    frame.to_parquet(args.part, index=False)
    users = int(base.starts[groups.stop] - base.starts[groups.start])
    return {"campaigns": args.campaigns, "users": users, "prepare_s": prepared - started, "score_s": scored - prepared,
            "cpu_s": usage.ru_utime + usage.ru_stime, "rss_gb": usage.ru_maxrss / 2**20,
            "scorings_per_s": users * args.campaigns / (scored - prepared),
            "scorings_per_cpu_s": users * args.campaigns / score_cpu}


def stored_mixes(args: argparse.Namespace) -> dict:
    """`--stored-mixes` for `--campaigns` campaigns, in this process: the score CPU time of a pass that infers
    and stores the mixes (into a fresh folder), one that infers them, one that reads them back."""
    base = UserBase(args.dataset)
    runs = recommended_runs(base, args.campaigns, args)
    groups = base.shard_groups(0, 1)
    folder = Path(args.output) / f"mixes-{args.campaigns}"
    shutil.rmtree(folder, ignore_errors=True)
    batches = sum(-(-int(base.starts[g + 1] - base.starts[g]) // 4096) for g in groups)
    users = int(base.starts[groups.stop] - base.starts[groups.start])
    result: dict = {"campaigns": args.campaigns, "users": users, "batches": batches}
    tops = {}
    for name, store in (("stored", True), ("inferred", False), ("read", True)):
        for run in runs.values():
            run.top = TopN(args.top_n)
        stores = mixes_stores(runs, str(folder)) if store else {}
        cpu = time.process_time()
        tops[name] = score_shard(base, runs, groups, mixes=stores)
        result[name] = time.process_time() - cpu
        if name == "read":
            assert [(s.read, s.written, s.stale) for s in stores.values()] == [(len(groups), 0, 0)]
    result["same_top"] = all(torch.equal(tops["read"][k][i], tops["inferred"][k][i]) and
                             torch.equal(tops["stored"][k][i], tops["inferred"][k][i])
                             for k in runs for i in (0, 1))
    return result


def mixes_passes(args: argparse.Namespace) -> None:
    """The `--stored-mixes` table: per count of campaigns, each pass's CPU-ms per batch and scorings per CPU-s."""
    print(f"\n{'recommended method: topic mixes':<40}{'users':>10}{'pass':>10}{'CPU s':>8}{'ms/batch':>10}"
          f"{'scorings/CPU-s':>16}{'x inferred':>12}  load")
    for count in (int(c) for c in args.campaigns_per_pass.split(",")):
        argv = [sys.executable, __file__, "--child", "--stored-mixes", "--dataset", args.dataset, "--output",
                args.output, "--top-n", str(args.top_n), "--precision", args.precision, "--campaigns", str(count)]
        r = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        for name in ("inferred", "stored", "read"):
            print(f"{f'{count} campaign(s)':<40}{r['users']:>10,}{name:>10}{r[name]:>8.1f}"
                  f"{1000 * r[name] / r['batches']:>10.1f}{r['users'] * count / r[name]:>16,.0f}"
                  f"{r['inferred'] / r[name]:>11.2f}x  {os.getloadavg()[0]:.2f}", flush=True)
        print(f"{'':<40}every campaign's top {args.top_n:,} read back "
              f"{'equals' if r['same_top'] else 'DIFFERS FROM'} the inferred one (indexes and scores, bit for bit)")


def passes(args: argparse.Namespace) -> None:
    """The recommended method's scorer: a pass of 1, 10, 50 ... campaigns over every user, each its own
    process; campaign 0's top N of each pass against the one-campaign pass's."""
    print(f"\n{'recommended method: campaigns in one pass':<44}{'users':>12}{'prepare':>9}{'score':>8}"
          f"{'scorings/s':>12}{'/ CPU-s':>12}{'CPU s':>8}{'peak RSS':>10}  load")
    tops = {}
    for count in (int(c) for c in args.campaigns_per_pass.split(",")):
        part = Path(args.output) / f"part-recommended-{count}.parquet"
        argv = [sys.executable, __file__, "--child", "--dataset", args.dataset, "--part", str(part), "--top-n",
                str(args.top_n), "--precision", args.precision, "--campaigns", str(count), "--shards", "1"]
        r = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        tops[count] = pd.read_parquet(part)
        print(f"{f'{count} campaign(s)':<44}{r['users']:>12,}{r['prepare_s']:>9.1f}{r['score_s']:>8.1f}"
              f"{r['scorings_per_s']:>12,.0f}{r['scorings_per_cpu_s']:>12,.0f}{r['cpu_s']:>8.1f}"
              f"{r['rss_gb']:>8.2f} GB  {os.getloadavg()[0]:.2f}", flush=True)
    if 1 in tops:
        same = [str(c) for c, top in tops.items() if c != 1 and top.equals(tops[1])]
        differ = [str(c) for c, top in tops.items() if c != 1 and not top.equals(tops[1])]
        print(f"campaign 0's top {args.top_n:,} (indexes and scores) equals the one-campaign pass's in the passes of "
              f"{', '.join(same) or '-'} campaigns; differs in {', '.join(differ) or 'none'}")


def child(args: argparse.Namespace, shard: int, shards: int, part: Path) -> dict:
    argv = [sys.executable, __file__, "--child", "--dataset", args.dataset, "--shard", str(shard), "--shards",
            str(shards), "--part", str(part), "--seeds", str(args.seeds), "--top-n", str(args.top_n),
            "--precision", args.precision, *(["--agreement"] if shard < 0 else [])]
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000_000)
    parser.add_argument("--seeds", type=int, default=2000, help="seed users of the campaign")
    parser.add_argument("--top-n", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--precision", choices=("auto", "float32", "float16", "bfloat16"), default="auto")
    parser.add_argument("--output", default="runs/expand_scale")
    parser.add_argument("--campaigns-per-pass", default="1,10,50",
                        help="the recommended method's passes: campaigns scored in one read of the users")
    parser.add_argument("--only-recommended", action="store_true", help="skip the MetaHeac campaign's runs")
    parser.add_argument("--stored-mixes", action="store_true",
                        help="only time the recommended passes with the users' topic mixes stored against inferred")
    parser.add_argument("--request-cost", default="", metavar="TIERS",
                        help="only time the request's parts: top N, tiers TIERS, tiers + the recall estimate")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--request", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tiers", default="", help=argparse.SUPPRESS)
    parser.add_argument("--holdout", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--campaigns", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--agreement", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.request:
            print(json.dumps(request_cost(args)))
        elif args.stored_mixes:
            print(json.dumps(stored_mixes(args)))
        elif args.campaigns:
            print(json.dumps(many_campaigns(args)))
        else:
            print(json.dumps(agreement(args) if args.agreement else one_shard(args)))
        return

    args.dataset = str(Path(args.output) / f"users-{args.users}")
    generated = user_base(args.dataset, args.users)
    print(f"user base {args.dataset}: " + (f"written in {generated:.0f} s" if generated else "reused") +
          f", {os.path.getsize(Path(args.dataset) / 'users.parquet') / 2**30:.2f} GiB; torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    if args.request_cost:
        request_costs(args)
        return
    if args.stored_mixes:
        mixes_passes(args)
        return
    if args.campaigns_per_pass:
        passes(args)
    if args.only_recommended:
        return
    rows = []
    whole = child(args, 0, 1, Path(args.output) / "part-whole.parquet")
    rows.append(("1 shard: every user", whole))
    parts, shard_rows = [], []
    for shard in range(args.shards):
        part = Path(args.output) / f"part-{shard}.parquet"
        shard_rows.append((f"  shard {shard + 1}/{args.shards}", child(args, shard, args.shards, part)))
        parts.append(pd.read_parquet(part))
    started = time.perf_counter()
    merged = merge_audiences(parts, args.top_n)
    merge_s = time.perf_counter() - started
    # the same audience: the 1-shard top in the merge's order (ties by uid), equal uid for uid and score for score
    whole_top = merge_audiences([pd.read_parquet(Path(args.output) / "part-whole.parquet")], args.top_n)
    same = whole_top.equals(merged)
    summed = ("users", "open_s", "adapt_s", "score_s", "total_s", "cpu_s")
    total = {key: sum(r[key] for _, r in shard_rows) for key in summed}
    total |= {"rss_gb": max(r["rss_gb"] for _, r in shard_rows), "dtype": whole["dtype"]}
    rows += shard_rows + [(f"{args.shards} shards one after another (+ merge {merge_s:.2f} s)", total)]

    print(f"\n{'run':<44}{'users':>12}{'open':>7}{'adapt':>7}{'score':>8}{'total':>8}{'users/s':>10}"
          f"{'CPU s':>8}{'peak RSS':>10}  dtype")
    for name, r in rows:
        print(f"{name:<44}{r['users']:>12,}{r['open_s']:>7.1f}{r['adapt_s']:>7.1f}{r['score_s']:>8.1f}"
              f"{r['total_s']:>8.1f}{r['users'] / r['total_s']:>10,.0f}{r['cpu_s']:>8.1f}{r['rss_gb']:>8.2f} GB"
              f"  {r['dtype']}")
    verdict = "meets" if whole["total_s"] < TARGET_S and whole["rss_gb"] < TARGET_GB else "MISSES"
    print(f"\n1 shard {verdict} the target (< {TARGET_S:.0f} s, < {TARGET_GB:.0f} GB); merged top {args.top_n:,} of "
          f"the shards {'equals' if same else 'DIFFERS FROM'} the 1-shard top; seeds used {whole['seeds_used']:,}")
    if args.precision != "float32":
        agree = child(args, -1, 1, Path(args.output) / "unused.parquet")
        print(f"{args.precision} against float32 on the first {agree['users']:,} users: Spearman on float32's top 10% "
              f"{agree['spearman_top10']:.5f}, float32's top 1% kept {agree['top1_kept']:.2%}")
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
