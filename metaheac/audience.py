"""Scoring a whole user base for a few campaigns, at the scale of a real one (10M users), in bounded memory.

- `UserBase` reads the dataset's users.parquet one row group at a time: a shard is a contiguous block of
  row groups and never loads the rest; `take` streams the groups holding a few chosen users (the seeds),
  and keeps the shard's own groups decoded for scoring when asked (`keep`).
- `CampaignScorer` scores one adapted campaign. For MetaHeac, the first expert layer G(u) @ W0 (80% of a
  row's FLOPs) is split by field: G(u) @ W0 = sum_f E_f(u) @ W0_f, and a field's E_f(u) is a weighted sum
  of its table's rows, so for a field whose table fits the memory budget (`ScoreConfig.project_mb`),
  (T_f @ W0_f) is computed once per campaign and the row's share is a lookup in it; the other fields go
  through the matmul. Same arithmetic, reassociated. The lookups are bound by memory traffic: "auto"
  stores the pre-multiplied tables in float16 (half the bytes: the bag runs 1.9x faster; it sums in
  float32 and rounds its result to float16, a relative error of ~5e-4 on the first layer). Where the CPU
  has native bf16 (AVX512-BF16 / AMX), the matmul runs in bf16 ("auto"); elsewhere bf16 is emulated and
  hundreds of times slower, so "auto" keeps float32 there. "float32" is exact.
  The rest of the network runs through `HybridExpertsCritics.score_head`, one expert at a time.
- `score_shard` scores independent batches on worker threads (one torch thread each) while the next row
  group is decoded; `TopN` keeps a campaign's N best users over the batches; shards' tops merge into the
  global top N.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from metaheac.adaptation import AdaptedModel, Adapter, adapt_campaigns
from metaheac.data.dataset import SCHEMA_FILE, USERS_FILE, fetch
from metaheac.data.loading import user_table
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import CampaignTable, Features, UserTable
from metaheac.expand import (
    CampaignFields,
    CampaignVocab,
    ExpandConfig,
    adapt_to_seeds,
    audience_frame,
    campaign_field_ids,
    plan_seeds,
)
from metaheac.linear.lr import list_values
from metaheac.model.embedding import mean_weights
from metaheac.model.heac import CampaignGates, HybridExpertsCritics
from metaheac.model.network import Network
from metaheac.recommended.head import LinearAdapted
from metaheac.threads import one_thread_workers

Precision = Literal["auto", "float32", "float16", "bfloat16"]


@dataclass(frozen=True)
class ScoreConfig:
    batch_size: int = 4096  # users per forward pass (CPU caches; see `adaptation.score`)
    # float32: exact; float16: pre-multiplied tables in float16; bfloat16: that and the large-field matmul in
    # bf16; auto: float16 tables, and the bf16 matmul where the CPU has it natively (module doc)
    precision: Precision = "auto"
    # Memory a campaign may spend on pre-multiplied tables: user fields are projected smallest table first
    # while they fit, the rest go through the matmul. Each table row costs (first layer + d) values: every
    # field at the Tencent sizes takes 0.37 GB in float16 (0.73 in float32; kw1 alone 0.61) and scored
    # 1.03-1.4x faster than the small fields only (float32, A/B runs on a shared machine): a projected lookup
    # costs less than its share of the matmul.
    project_mb: float = 1024.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.project_mb < 0:
            raise ValueError("batch_size must be >= 1 and project_mb >= 0")


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: Precision, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(dtype of the pre-multiplied tables, dtype of the large-field matmul)."""
    if precision == "float32":
        return torch.float32, torch.float32
    native = precision == "auto" and (device.type == "cuda" or native_bf16())
    return torch.float16, torch.bfloat16 if precision == "bfloat16" or native else torch.float32


# float16 tables keep values below this (a 16th of float16's largest): a campaign whose pre-multiplied rows
# exceed it keeps float32 tables, so that no sum of a row's lookups can overflow
_FLOAT16_SAFE = 65504.0 / 16
_PROJECT_ROWS = 65536  # table rows multiplied at a time: a bounded temporary (~150 MB for kw1's 512 columns)


def _project(tables: list[torch.Tensor], blocks: tuple[torch.Tensor, ...], fields: list[int], n_user: int,
             dtype: torch.dtype) -> torch.Tensor | None:
    """[T_f @ W0_f | T_f / F_u] for the `fields`, end to end, in `dtype`; None when float16 would overflow.
    One lookup then gives a field's share of the first layer and of the user mean."""
    hidden, d = blocks[0].shape[1], tables[0].shape[1]
    rows = sum(tables[f].shape[0] for f in fields)
    out = torch.empty((max(rows, 1), hidden + d), dtype=dtype, device=tables[0].device)
    at = 0
    for f in fields:
        for chunk in tables[f].split(_PROJECT_ROWS):
            product = chunk @ blocks[f]
            if dtype == torch.float16 and len(product) and max(-product.min(), product.max()) > _FLOAT16_SAFE:
                return None
            out[at : at + len(chunk), :hidden] = product
            out[at : at + len(chunk), hidden:] = chunk / n_user
            at += len(chunk)
    if not rows:
        out.zero_()
    return out


class UserBase:
    """A dataset's users, read by Parquet row group (row i of the file is user index i)."""

    def __init__(self, dataset_uri: str) -> None:
        folder = fetch(dataset_uri, [SCHEMA_FILE, USERS_FILE])
        self.schema = DatasetSchema.from_json((folder / SCHEMA_FILE).read_text(), source=dataset_uri)
        self.path: Path = folder / USERS_FILE
        self.file = pq.ParquetFile(self.path)
        self._local = threading.local()  # a ParquetFile per thread: one is not safe to read from two at once
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # group g: [starts[g], starts[g+1])
        self._single = [f.name for f in self.schema.user_single]
        self._lists = [f.name for f in self.schema.user_lists]
        self._keep: range = range(0)
        self._kept: dict[int, UserTable] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def shard_groups(self, shard: int, shards: int) -> range:
        """Shard `shard` of `shards`: a contiguous block of row groups (as even as the groups allow)."""
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
        groups = self.file.num_row_groups
        return range(shard * groups // shards, (shard + 1) * groups // shards)

    def uids(self) -> np.ndarray:
        """Every user's raw uid (one int64 column: 80 MB at 10M users)."""
        return pq.read_table(self.path, columns=["uid"]).column("uid").to_numpy()

    def keep(self, groups: range) -> None:
        """Keep these row groups decoded from their first read (a `take`) until `batches` yields them: a
        shard's users are then decoded once, by its seeds' take, not again to be scored. Memory: about
        230 bytes a kept user at the Tencent sizes (2.3 GB for a shard of 10M)."""
        self._keep = groups

    def group(self, g: int, rows: np.ndarray | None = None) -> UserTable:
        """Row group g as tensors (only `rows`, positions within the group, when given)."""
        kept = self._kept.get(g)
        if kept is None and g in self._keep:
            kept = self._kept[g] = self._decode(g)
        if kept is None:
            return self._decode(g, rows)
        if rows is None:
            return kept
        picked = torch.from_numpy(rows)
        return UserTable(kept.uid[rows], kept.single[picked], kept.lists[picked])

    def _decode(self, g: int, rows: np.ndarray | None = None) -> UserTable:
        if not hasattr(self._local, "file"):
            self._local.file = pq.ParquetFile(self.path, memory_map=True)
        # one thread per group: groups are decoded in parallel (`take`) or beside scoring's threads, and
        # Arrow's own pool on top of them spent more time in the kernel than decoding
        table = self._local.file.read_row_group(g, columns=["uid", *self._single, *self._lists], use_threads=False)
        return user_table(table if rows is None else table.take(rows), self.schema)

    def batches(self, groups: range) -> Iterator[tuple[int, UserTable]]:
        """(index of the first user, its row group's users) for each group, one group in memory at a time
        (but those kept)."""
        for g in groups:
            kept = self._kept.pop(g, None)
            yield int(self.starts[g]), self._decode(g) if kept is None else kept

    def take(self, indexes: np.ndarray) -> UserTable:
        """The users at sorted, distinct `indexes` (at least one), reading only the row groups that hold them,
        on torch's thread count of threads (Arrow and NumPy release the GIL: seeds spread over a 10M-user
        base touch every row group)."""
        group_of = np.searchsorted(self.starts, indexes, side="right") - 1

        def part(g: int) -> UserTable:
            return self.group(g, indexes[group_of == g] - self.starts[g])

        with ThreadPoolExecutor(torch.get_num_threads()) as pool:
            parts = list(pool.map(part, np.unique(group_of).tolist()))
        return UserTable(
            np.concatenate([p.uid for p in parts]),
            torch.cat([p.single for p in parts]),
            torch.cat([p.lists for p in parts]),
        )


class TopN:
    """The N best (score, user index) pairs seen so far; ties keep no particular order."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._scores: list[torch.Tensor] = []
        self._index: list[torch.Tensor] = []
        self._held = 0

    def add(self, scores: torch.Tensor, index: torch.Tensor) -> None:
        if len(scores) > self.n:  # only a batch's own N best can make the top N
            scores, picked = torch.topk(scores, self.n)
            index = index[picked]
        self._scores.append(scores)
        self._index.append(index)
        self._held += len(scores)
        if self._held > 4 * self.n:  # bound the memory; reduce rarely
            self._reduce()

    def _reduce(self) -> None:
        scores, index = torch.cat(self._scores), torch.cat(self._index)
        if len(scores) > self.n:
            scores, picked = torch.topk(scores, self.n)
            index = index[picked]
        self._scores, self._index, self._held = [scores], [index], len(scores)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, user indexes), best first."""
        if not self._scores:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        self._reduce()
        scores, order = torch.sort(self._scores[0], descending=True, stable=True)
        return scores, self._index[0][order]


def _columns(columns: list[int], device: torch.device) -> slice | torch.Tensor:
    """A selector of these id columns: a slice (a view, no copy) where they are contiguous."""
    if columns and columns == list(range(columns[0], columns[-1] + 1)):
        return slice(columns[0], columns[-1] + 1)
    return torch.tensor(columns, dtype=torch.long, device=device)


def _offsets(tables: list[torch.Tensor], widths: list[int], device: torch.device) -> torch.Tensor:
    """For tables laid end to end, each id column's table offset (a table's `width` columns share it)."""
    starts = np.cumsum([0] + [t.shape[0] for t in tables])[:-1]
    return torch.tensor([int(o) for o, w in zip(starts, widths, strict=True) for _ in range(w)], dtype=torch.int32,
                        device=device)


class CampaignScorer:
    """One adapted campaign, ready to score batches of users (module doc: the split first layer)."""

    def __init__(self, model: AdaptedModel, campaign_ids: torch.Tensor, config: ScoreConfig | None = None) -> None:
        config = config or ScoreConfig()
        network = model.network
        device = next(network.parameters()).device
        self.model, self.network, self.campaign_ids = model, network, campaign_ids
        self.table_dtype, self.dtype = resolve_precision(config.precision, device)
        tables = model.tables()
        embeddings = network.embeddings
        n_user, n_single = embeddings.n_user_fields, len(embeddings.user_single)
        self.lengths = embeddings.list_lengths
        self.campaign_emb = model.campaign(tables, campaign_ids.to(device)[None])  # [1, F_c, d]
        self._local = threading.local()  # per scoring thread: a conversion buffer
        self.split = isinstance(network, HybridExpertsCritics)
        if not self.split:
            return
        # field f's id columns in [single | lists]; a field is "small" when its table is pre-multiplied
        widths = [1] * n_single + self.lengths
        starts = np.cumsum([0, *widths])
        tables = tables[:n_user]
        d = tables[0].shape[1]
        w0, b0 = (model.dense[name] for name in HybridExpertsCritics.FIRST_LAYER)
        # a campaign whose float16 rows would overflow keeps float32 ones: twice its budget, rarely
        row_bytes = (w0.shape[1] + d) * torch.finfo(self.table_dtype).bits // 8
        small, budget = [], config.project_mb * 2**20
        for f in sorted(range(n_user), key=lambda f: tables[f].shape[0]):
            budget -= tables[f].shape[0] * row_bytes
            if budget < 0:
                break
            small.append(f)
        small.sort()
        self.large = [f for f in range(n_user) if f not in small]
        self.small_columns = _columns([c for f in small for c in range(starts[f], starts[f + 1])], device)
        self.large_columns = _columns([c for f in self.large for c in range(starts[f], starts[f + 1])], device)
        blocks = w0.split(d)  # W0_f: field f's rows of the first layer
        projected = _project(tables, blocks, small, n_user, self.table_dtype)
        if projected is None:  # too large for float16
            self.table_dtype = torch.float32
            projected = _project(tables, blocks, small, n_user, self.table_dtype)
        assert projected is not None  # float32 never declines
        self.small_table = projected
        self.small_offsets = _offsets([tables[f] for f in small], [widths[f] for f in small], device)
        # the large fields' tables end to end, pooled in one call: a bag per (user, field), [B * fields, d]
        self.large_table = torch.cat([tables[f] for f in self.large]) if self.large else tables[0][:0]
        self.large_offsets = _offsets([tables[f] for f in self.large], [widths[f] for f in self.large], device)
        large_widths = [widths[f] for f in self.large]
        self.large_bags = torch.tensor(np.cumsum([0, *large_widths])[:-1], dtype=torch.int32, device=device)
        self.large_width = sum(large_widths)
        self.large_w0 = torch.cat([blocks[f] for f in self.large]).to(self.dtype) if self.large else None
        self.hidden, self.n_user = w0.shape[1], n_user
        # the first layer's bias, in the rows of a field every user looks up once with weight 1 (a single
        # field) when one is pre-multiplied: one add fewer per batch
        folded = next((f for f in small if f < n_single), None)
        self.b0 = b0 if folded is None else None  # added per batch only when not folded
        if folded is not None:
            at = sum(tables[f].shape[0] for f in small[: small.index(folded)])
            self.small_table[at : at + tables[folded].shape[0], : self.hidden] += b0.to(self.table_dtype)
        self.gates = cast(HybridExpertsCritics, network).campaign_gates(model.dense, self.campaign_emb)

    @torch.inference_mode()
    def __call__(self, single: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        """Probabilities [B] for users' ids [B, S] and [B, L]."""
        if not self.split:
            user = self.model.user(self.model.tables(), single, lists)
            return self.network.predict(self.model.dense, user, self.campaign_emb)
        heac = cast(HybridExpertsCritics, self.network)  # the split path runs only for it (__init__)
        return heac.score_head(self.model.dense, *self.pool(single, lists), self.gates)

    def pool(self, single: torch.Tensor, lists: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The split path's user side: the experts' first layer before its ReLU [B, n * h] and the mean user
        embedding [B, d]."""
        ids = torch.cat([single, lists], 1).int()  # embedding_bag takes int32 ids: no int64 copy
        ones = torch.ones(single.shape, dtype=torch.float32)
        weights = torch.cat([ones, mean_weights(lists, self.lengths, torch.float32)], 1)
        if len(self.small_offsets):
            pooled = F.embedding_bag(ids[:, self.small_columns] + self.small_offsets, self.small_table, mode="sum",
                                     per_sample_weights=weights[:, self.small_columns].to(
                                         self.table_dtype, memory_format=torch.contiguous_format))
            if pooled.dtype != torch.float32:  # into this thread's buffer: a new one each batch page-faults
                buffer = getattr(self._local, "pooled", None)
                if buffer is None or buffer.shape[0] < len(pooled):
                    buffer = self._local.pooled = torch.empty(pooled.shape, device=pooled.device)
                pooled = buffer[: len(pooled)].copy_(pooled)
        else:
            pooled = torch.zeros((len(ids), self.small_table.shape[1]))
        expert_input = pooled[:, : self.hidden]  # views of `pooled`, added to in place
        if self.b0 is not None:
            expert_input.add_(self.b0)
        user_mean = pooled[:, self.hidden :]
        if self.large:
            n = len(ids)
            starts = torch.arange(0, n * self.large_width, self.large_width, dtype=torch.int32, device=ids.device)
            bags = (starts[:, None] + self.large_bags).flatten()
            flat = F.embedding_bag((ids[:, self.large_columns] + self.large_offsets).flatten(), self.large_table,
                                   bags, mode="sum", per_sample_weights=weights[:, self.large_columns].flatten(),
                                   ).view(n, -1)  # [B, large fields * d]
            w0 = self.large_w0
            assert w0 is not None  # set whenever there are large fields
            if self.dtype == torch.float32:
                expert_input.addmm_(flat, w0)
            else:
                expert_input.add_((flat.to(self.dtype) @ w0).float())
            user_mean.add_(flat.view(n, len(self.large), -1).sum(1), alpha=1 / self.n_user)
        return expert_input, user_mean


class _LastMixes(threading.local):
    """Per scoring thread, the topic mixes of the last batch: every campaign of a shard scores the same batch
    tensors in turn (`score_shard`), so their mixes are inferred once. The batch is held, so its identity
    cannot be reused by a later one while it is the key."""

    key: tuple[object, torch.Tensor] | None = None
    mixes: torch.Tensor | None = None


_last_mixes = _LastMixes()


class LinearHeadScorer:
    """A campaign of the recommended method (`LinearAdapted`): its linear head, a bag of 1-dim weights over
    the users' ids, plus its weights on the users' topic mixes and on the general network's logit. It scores
    as the one-campaign case of `LinearHeads`, so alone or among many it gives the same scores."""

    def __init__(self, model: LinearAdapted, campaign_ids: torch.Tensor, config: ScoreConfig | None = None,
                 trunks: dict[int, CampaignScorer] | None = None) -> None:
        self.head = model.head
        self.general = model.network
        self.trunk: CampaignScorer | None = None
        self.gates: CampaignGates | None = None
        if model.head.general_weight:
            # The general network's user side is the same for every campaign (its own tables and weights):
            # campaigns of one network prepared together share one (`trunks`, by network), and with it one
            # set of pre-multiplied tables. Only the gates are the campaign's.
            trunks = {} if trunks is None else trunks
            key = id(model.network)
            self.trunk = trunks[key] = trunks.get(key) or CampaignScorer(model, campaign_ids, config)
            if self.trunk.split:
                heac = cast(HybridExpertsCritics, model.network)
                self.gates = heac.campaign_gates(model.dense, model.campaign(model.tables(), campaign_ids[None]))
            else:  # no split path: the campaign's own network scorer
                self.trunk = CampaignScorer(model, campaign_ids, config)
        self.dtype = self.trunk.dtype if self.trunk else torch.float32
        schema = model.network.schema
        fields = [*schema.user_single, *schema.user_lists]
        starts = np.cumsum([0] + [f.vocab_size for f in fields])[:-1]
        widths = [1] * len(schema.user_single) + list(schema.list_lengths)
        self.offsets = torch.from_numpy(np.repeat(starts, widths)).int()  # each id column's first design column
        self.weight = torch.from_numpy(model.head.weight).float()[:, None]
        self.topics = model.head.topics if model.head.topic_weight is not None else None
        self._alone: LinearHeads | None = None

    @property
    def network(self) -> CampaignScorer | None:
        """The network's scorer, where the head has a weight on its logit."""
        return self.trunk

    def __call__(self, single: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        if self._alone is None:
            self._alone = LinearHeads([self])
        return self._alone(single, lists)[:, 0]


class LinearHeads:
    """Many campaigns of the recommended method scored in one read of a batch of users, as one sparse
    product of the users' ids (and topic mixes) with every campaign's folded linear head side by side,
    [design columns + topics, campaigns]; where heads weigh the general network's logit, its user side
    (first layer, experts through the critics' layer, the gates' user share) is computed once and only the
    gates are per campaign (`HybridExpertsCritics.score_gated`). Each campaign's column is computed as it
    is alone: the bag's columns are independent sums, the rest is per campaign."""

    def __init__(self, scorers: list[LinearHeadScorer]) -> None:
        first = scorers[0]
        self.scorers, self.offsets = scorers, first.offsets
        # one topic model, or none, for all: a bag's sum order depends on its entries, so a head scores alike
        # alone and in the group only with the same entries
        topics = {id(s.topics): s.topics for s in scorers}
        if len(topics) > 1:
            raise ValueError("LinearHeads: the heads have different topic models (or some none); group them apart")
        self.topics = scorers[0].topics
        weight = torch.cat([s.weight for s in scorers], 1)  # [design columns, campaigns]
        if self.topics is not None:
            topic_weight = torch.stack([torch.from_numpy(s.head.topic_weight).float() for s in scorers
                                        if s.head.topic_weight is not None], 1)
            weight = torch.cat([weight, topic_weight])  # a user's mix is a bag of weighted topic rows
        self.weight = weight.contiguous()
        self.bias = torch.tensor([s.head.bias for s in scorers], dtype=torch.float32)
        self.networked = [k for k, s in enumerate(scorers) if s.trunk is not None]
        trunks = {id(scorers[k].trunk): scorers[k].trunk for k in self.networked if scorers[k].gates is not None}
        self.trunk = next(iter(trunks.values()), None)  # one network: its trunk (any one gives the same)
        self.heac = cast(HybridExpertsCritics, first.general)

    def _mixes(self, lists: torch.Tensor, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        key = _last_mixes.key
        if _last_mixes.mixes is None or key is None or key[0] is not self.topics or key[1] is not lists:
            assert self.topics is not None
            _last_mixes.mixes = self.topics.mixes(ids, values > 0)
            _last_mixes.key = (self.topics, lists)
        return _last_mixes.mixes

    @torch.inference_mode()
    def __call__(self, single: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
        """Probabilities [B, campaigns]."""
        ids = torch.cat([single, lists], 1).int() + self.offsets
        values = torch.cat([torch.ones(single.shape), list_values(lists, torch.float32)], 1)
        if self.topics is not None:
            mixes = self._mixes(lists, ids, values).float()
            topics = torch.arange(mixes.shape[1], dtype=torch.int32) + (len(self.weight) - mixes.shape[1])
            ids = torch.cat([ids, topics.expand(len(ids), -1)], 1)
            values = torch.cat([values, mixes], 1)
        logit = F.embedding_bag(ids, self.weight, mode="sum", per_sample_weights=values) + self.bias
        if self.networked:
            shared = None
            if self.trunk is not None:
                dense = self.trunk.model.dense
                expert_input, user_mean = self.trunk.pool(single, lists)
                shared = (self.heac.expert_critics(dense, expert_input), dense["gate_user_w"].T @ user_mean.T)
            for k in self.networked:
                scorer = self.scorers[k]
                assert scorer.trunk is not None
                if shared is not None and scorer.gates is not None:
                    p = self.heac.score_gated(scorer.trunk.model.dense, *shared, scorer.gates)
                else:
                    p = scorer.trunk(single, lists)
                general = torch.logit(p.double().clamp(1e-7, 1 - 1e-7)).float()
                logit[:, k] += scorer.head.general_weight * general
        return torch.sigmoid(logit)


def campaign_scorer(
    model: AdaptedModel, campaign_ids: torch.Tensor, config: ScoreConfig | None = None,
    trunks: dict[int, CampaignScorer] | None = None,
) -> CampaignScorer | LinearHeadScorer:
    """The scorer of an adapted campaign; `trunks` (see `LinearHeadScorer`) lets campaigns of the recommended
    method share their general network's user side."""
    if isinstance(model, LinearAdapted):
        return LinearHeadScorer(model, campaign_ids, config, trunks)
    return CampaignScorer(model, campaign_ids, config)


@dataclass
class CampaignRun:
    """One campaign scored over a user shard: its scorer, the users kept out of its audience and what it keeps."""

    scorer: CampaignScorer | LinearHeadScorer
    excluded: np.ndarray  # sorted user indexes: the seeds and the known negatives (`SeedPlan.excluded`)
    top: TopN


def failed(error: Exception) -> dict:
    """A campaign's summary when its request cannot be served: the error on one line, and what was known of
    its seeds (`SeedRequestError.counts`)."""
    return {"status": "failed", "error": " ".join(str(error).split()), **getattr(error, "counts", {})}


@dataclass(frozen=True)
class CampaignRequest:
    """One campaign to expand: its ad fields (`expand.campaign_field_ids`), seed uids and negative uids (None:
    sampled from the non-seeds)."""

    campaign_fields: CampaignFields
    seed_uids: np.ndarray
    negative_uids: np.ndarray | None = None


def prepare_campaigns(
    general_model: Network,
    base: UserBase,
    uid_index: pd.Index,
    campaigns: CampaignTable,
    requests: dict[str, CampaignRequest],
    top_n: int,
    config: ExpandConfig | None = None,
    score_config: ScoreConfig | None = None,
    vocab: CampaignVocab | None = None,
    adapt: Adapter = adapt_campaigns,
) -> tuple[dict[str, CampaignRun], dict[str, dict]]:
    """Adapt the general model to each campaign's seeds by the method's `adapt`. The seed and negative users
    of every campaign are read in one pass (`uid_index`: `base.uids()` as a pd.Index): a row group is
    decoded once for all campaigns, not once for each. Returns the runs to give `score_shard` and, for
    every request, a summary: status "ok" and what was used, or status "failed" and a one-line error for a
    request that cannot be served (ValueError), which fails that campaign alone."""
    config = config or ExpandConfig()
    summaries: dict[str, dict] = {}
    plans = {}
    resolved = {}
    for name, request in requests.items():  # the campaign first: its error is the first one to fix
        try:
            resolved[name] = campaign_field_ids(base.schema, campaigns, request.campaign_fields, vocab)
            plans[name] = plan_seeds(uid_index, request.seed_uids, request.negative_uids, top_n, config)
        except ValueError as error:
            summaries[name] = failed(error)
    chosen = {name: np.union1d(plan.seeds, plan.negatives) for name, plan in plans.items()}
    runs: dict[str, CampaignRun] = {}
    trunks: dict[int, CampaignScorer] = {}  # the recommended method's campaigns share their network's user side
    if chosen:
        every = np.unique(np.concatenate(list(chosen.values())))
        # torch.optim's first use imports torch._dynamo (~2 s of Python): do it while Arrow decodes the users
        warm = threading.Thread(target=importlib.import_module, args=("torch._dynamo",), daemon=True)
        warm.start()
        users = base.take(every)
        warm.join()
    for name, plan in plans.items():
        started = time.perf_counter()
        at = torch.from_numpy(np.searchsorted(every, chosen[name]))
        features = Features(base.schema, UserTable(users.uid[at.numpy()], users.single[at], users.lists[at]),
                            campaigns)

        def local(indexes: np.ndarray, name: str = name) -> np.ndarray:  # index in the campaign's users
            return np.asarray(np.searchsorted(chosen[name], indexes))

        ids, existing, unknown_fields = resolved[name]
        try:
            model = adapt_to_seeds(general_model, features, (ids, existing), local(plan.seeds), local(plan.negatives),
                                   config, adapt)
        except ValueError as error:
            summaries[name] = failed(error)
            continue
        runs[name] = CampaignRun(campaign_scorer(model, ids, score_config, trunks), plan.excluded, TopN(top_n))
        summaries[name] = {"status": "ok", **plan.summary, "unknown_campaign_fields": unknown_fields,
                           "adapt_seconds": round(time.perf_counter() - started, 3)}
    return runs, {name: summaries[name] for name in requests}


def prepare_campaign(
    general_model: Network,
    base: UserBase,
    uid_index: pd.Index,
    campaigns: CampaignTable,
    campaign_fields: CampaignFields,
    seed_uids: np.ndarray,
    top_n: int,
    config: ExpandConfig | None = None,
    score_config: ScoreConfig | None = None,
    vocab: CampaignVocab | None = None,
    negative_uids: np.ndarray | None = None,
    adapt: Adapter = adapt_campaigns,
) -> tuple[CampaignRun, dict]:
    """`prepare_campaigns` for one campaign: its run and summary; ValueError on a request that cannot be
    served."""
    runs, summaries = prepare_campaigns(general_model, base, uid_index, campaigns,
                                        {"": CampaignRequest(campaign_fields, seed_uids, negative_uids)}, top_n,
                                        config, score_config, vocab, adapt)
    if "" not in runs:
        raise ValueError(summaries[""]["error"])
    return runs[""], summaries[""]


def linear_groups(runs: dict[str, CampaignRun]) -> list[tuple[list[str], LinearHeads]]:
    """The recommended method's campaigns among `runs`, grouped by general network and topic model: each
    group scores a batch in one pass (`LinearHeads`)."""
    by_key: dict[tuple[int, int], list[str]] = {}
    for name, run in runs.items():
        if isinstance(run.scorer, LinearHeadScorer):
            by_key.setdefault((id(run.scorer.general), id(run.scorer.topics)), []).append(name)
    return [(names, LinearHeads([cast(LinearHeadScorer, runs[n].scorer) for n in names]))
            for names in by_key.values()]


def score_shard(
    base: UserBase, runs: dict[str, CampaignRun], groups: range, batch_size: int = 4096, workers: int | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every campaign's top (scores, user indexes) among the users of `groups`, best first; its excluded users
    (seeds, known negatives) never appear. Each row group is read and decoded once for all campaigns, while
    the previous one is scored.

    Batches are scored by `workers` threads (default: torch's thread count), each running torch on one
    thread: on 2 cores, one batch's ops split over 2 threads keep them waiting on each other (~1.2x one
    thread); independent batches keep both busy (~1.9x). The tops are added in batch order."""
    if not runs:
        return {}
    together = linear_groups(runs)
    grouped = {name for names, _ in together for name in names}
    alone = [name for name in runs if name not in grouped]

    def score(single: torch.Tensor, lists: torch.Tensor) -> list[torch.Tensor]:
        scores = {name: runs[name].scorer(single, lists).float() for name in alone}
        for names, heads in together:
            scores.update(zip(names, heads(single, lists).unbind(1), strict=True))
        return [scores[name] for name in runs]

    def keep(first: int, scores: list[torch.Tensor]) -> None:
        index = torch.arange(first, first + len(scores[0]))
        for run, batch in zip(runs.values(), scores, strict=True):
            excluded = run.excluded[(run.excluded >= first) & (run.excluded < first + len(batch))]
            if len(excluded):
                kept = torch.ones(len(batch), dtype=torch.bool)
                kept[torch.from_numpy(excluded - first)] = False
                run.top.add(batch[kept], index[kept])
            else:
                run.top.add(batch, index)

    with one_thread_workers(workers) as pool:
        torch.set_num_threads(1)  # this thread only adds to the tops
        # a group's batches are queued before the last group's results are collected, so the workers never
        # wait at a group's end; decoding the next group overlaps scoring this one
        pending: list[tuple[int, Future[list[torch.Tensor]]]] = []
        for start, users in base.batches(groups):
            queued = [
                (start + offset, pool.submit(score, users.single[offset : offset + batch_size],
                                             users.lists[offset : offset + batch_size]))
                for offset in range(0, len(users), batch_size)
            ]
            for first, scores in pending:
                keep(first, scores.result())
            pending = queued
        for first, scores in pending:
            keep(first, scores.result())
    return {name: run.top.result() for name, run in runs.items()}


def merge_audiences(parts: list[pd.DataFrame], top_n: int) -> pd.DataFrame:
    """The global top N (`audience_frame`) of shards' tops (each a frame with uid and score): as each shard
    kept its own N best, the best N of their union are the best N of all users."""
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"uid": [], "score": []})
    frame = frame.sort_values(["score", "uid"], ascending=[False, True], kind="stable").head(top_n)
    return audience_frame(frame["uid"].to_numpy(), frame["score"].to_numpy())
