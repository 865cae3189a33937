"""The online stage (docs/architecture.md, "Data flow"): fine-tune the general model on one campaign's seed
rows, score users.

The official protocol copies the whole model per campaign and runs Adam (lr 1e-3) for 2 epochs over
the seed rows, shuffled, in batches of 512. This module gives the same result without the copy. Only
embedding rows that some seed row reads can get a gradient, and Adam never moves a row whose gradient
has always been zero; so the rows the seed rows read are gathered once into a small local table (one
row per (table, id)), trained with a copy of the dense parameters (0.55M of the 22M at the defaults),
and kept as the campaign's overlay on the general tables, which all campaigns share: `AdaptedModel`.
`tests/test_adaptation.py` holds the equality with the plain copy + Adam loop (the oracle).

Campaigns adapt one at a time: batching several small ones into one step (a leading campaign axis on
the dense parameters, as meta-training does) is slower on CPU, as padding to the largest campaign and
large fresh allocations cost more than the per-step overhead it saves (bench/README.md, "Measurements
behind the code").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from metaheac.data.tensors import Batch, Features, Rows
from metaheac.model.embedding import TableLayout, embed_campaigns, mean_weights, pool_one_table, pool_user_tables
from metaheac.model.network import Network
from metaheac.model.scoring import CampaignScorer, ScoreConfig, UserScorer

# network scorers by general network (`id`): campaigns prepared together share their network's user side
Trunks = dict[int, CampaignScorer]


@dataclass(frozen=True)
class AdaptConfig:
    lr: float = 1e-3  # Adam
    epochs: int = 2
    batch_size: int = 512
    seed: int = 2020  # with the campaign index, seeds its shuffling (and its init when from scratch)
    from_scratch: bool = False  # start each campaign from a fresh network (methods without a general model)
    score_batch_size: int | None = None  # users per scoring batch; None: see `score`
    # Early stopping: hold out this share of the seed rows (stratified), train up to `epochs` and keep the
    # epoch of least held-out loss, stopping after `patience` epochs without a better one. 0: the
    # official fixed epochs on every seed row.
    holdout: float = 0.0
    patience: int = 3

    def __post_init__(self) -> None:
        if min(self.epochs, self.batch_size, self.score_batch_size or 1, self.patience) < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size, score_batch_size and patience must be >= 1 and lr > 0")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")


def campaign_seed(seed: int, campaign: int) -> int:
    """A campaign's own seed: distinct for every (seed, campaign) pair."""
    return int(np.random.SeedSequence([seed, campaign]).generate_state(1)[0])


class AdaptedModel(nn.Module):
    """A general network adapted to one campaign: its own dense parameters, and the embedding rows its
    seed rows read, the only ones adaptation can change (per table: ids and rows), over the general
    tables, which are shared, not copied.

    Inference only, on the general network's device: the network stays a submodule and is never written
    to. Reading it puts the changed rows into copies of the tables they belong to, once per call
    (a memcpy of the tables: ~10 ms at the Tencent sizes), so score many rows per call.
    """

    def __init__(
        self,
        network: Network,
        dense: dict[str, torch.Tensor],
        overlay: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        super().__init__()
        self.network, self.dense, self.overlay = network, dense, overlay

    @classmethod
    def unchanged(cls, network: Network) -> AdaptedModel:
        return cls(network, {name: w.detach() for name, w in network.dense_parameters().items()})

    def tables(self) -> list[torch.Tensor]:
        """Every table's adapted weight (the general one where nothing changed), in `tables()` order."""
        general = [t.weight.detach() for t in self.network.embeddings.tables()]
        if self.overlay is None:
            return general
        return [
            w.index_put((ids,), rows) if len(ids) else w for w, (ids, rows) in zip(general, self.overlay, strict=True)
        ]

    def user(self, tables: list[torch.Tensor], single_ids: torch.Tensor, list_ids: torch.Tensor) -> torch.Tensor:
        """Pooled user field embeddings [..., F_u, d] from `tables()` and ids [..., S], [..., L]."""
        embeddings = self.network.embeddings
        return pool_user_tables(tables[: embeddings.n_user_fields], single_ids, list_ids, embeddings.list_lengths)

    def campaign(self, tables: list[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        """Campaign field embeddings [..., F_c, d] from `tables()` and ids [..., F_c]."""
        return embed_campaigns(tables[self.network.embeddings.n_user_fields :], ids)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Probabilities [B]."""
        tables = self.tables()
        user = self.user(tables, batch.user_single, batch.user_lists)
        return self.network.predict(self.dense, user, self.campaign(tables, batch.campaign))

    def network_scorer(self, campaign_ids: torch.Tensor, config: ScoreConfig | None = None) -> CampaignScorer:
        """The adapted network's fast scorer of batches of users (`model.scoring`) for campaign fields
        `campaign_ids` [F_c]."""
        return CampaignScorer(self.network, self.dense, self.tables(), campaign_ids, config)

    def scorer(
        self, campaign_ids: torch.Tensor, config: ScoreConfig | None = None, trunks: Trunks | None = None
    ) -> UserScorer:
        """This campaign's scorer of a user base's batches (ids [B, S], [B, L] -> probabilities [B]), as
        `expand_shard` scores; a method whose `score` differs provides its own, which must agree with `score`
        (`tests/test_scorers.py`). `trunks`: what campaigns prepared together share, filled as they are."""
        return self.network_scorer(campaign_ids, config)

    def score(
        self, features: Features, campaign: int, users: torch.Tensor, batch_size: int | None = None
    ) -> torch.Tensor:
        """Probabilities [len(users)] on `campaign`, as `adapt` and `expand` score; its embeddings are computed
        once. The default batch is 4096 users on CPU (bigger batches spill the caches; bench/README.md) and
        65536 on a GPU."""
        device = next(self.network.parameters()).device
        batch_size = batch_size or (4096 if device.type == "cpu" else 65536)
        table = features.to(device).users
        tables = self.tables()
        campaign_emb = self.campaign(tables, features.campaigns.fields[campaign].to(device)[None])  # [1, K_c, d]
        return torch.cat(
            [
                self.network.predict(self.dense, self.user(tables, table.single[c], table.lists[c]), campaign_emb)
                for c in users.to(device).split(batch_size)
            ]
        )


def _fresh(network: Network, seed: int) -> Network:
    """A newly initialised network of the same architecture, device and dtype."""
    like = next(network.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(network)(network.schema, network.config)
    return fresh.to(device=like.device, dtype=like.dtype)


def _holdout(label: torch.Tensor, share: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) row indexes: `share` of each class held out, at least one row of a class with two."""
    train, held = [], []
    for cls in (0.0, 1.0):
        index = torch.nonzero(label == cls).flatten()
        index = index[torch.randperm(len(index), generator=generator, device=index.device)]
        k = min(max(1, round(share * len(index))), len(index) - 1) if len(index) > 1 else 0
        held.append(index[:k])
        train.append(index[k:])
    return torch.cat(train), torch.cat(held)


def _adapt(network: Network, features: Features, campaign: int, rows: Rows, config: AdaptConfig) -> AdaptedModel:
    """Adapt `network` to one campaign through a local table of the rows its seed rows read (module doc)."""
    device, users = rows.label.device, features.users
    user_ids = torch.cat([users.single[rows.user], users.lists[rows.user]], dim=-1).long()  # [n, K_u]
    campaign_ids = features.campaigns.fields[campaign].long()  # [K_c]
    embeddings = network.embeddings
    n_single, lengths = len(embeddings.user_single), embeddings.list_lengths
    layout = TableLayout(embeddings, device)
    keys = torch.cat([layout.user_keys(user_ids).flatten(), layout.campaign_keys(campaign_ids)])
    unique, inverse = torch.unique(keys, return_inverse=True)  # sorted: by table, then id
    table_ids = layout.table_ids(unique)
    local = layout.read(table_ids).requires_grad_()
    local_user = inverse[: user_ids.numel()].view_as(user_ids)
    local_campaign = inverse[user_ids.numel() :]
    weights = mean_weights(user_ids[:, n_single:], lengths, local.dtype)

    dense = {name: w.detach().clone().requires_grad_() for name, w in network.dense_parameters().items()}
    optimizer = torch.optim.Adam([local, *dense.values()], lr=config.lr, fused=True)  # one pass per step
    generator = torch.Generator(device).manual_seed(campaign_seed(config.seed, campaign))

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        ids = local_user[index]
        user = pool_one_table(local, ids[:, :n_single], ids[:, n_single:], weights[index], lengths)
        probability = network.predict(dense, user, F.embedding(local_campaign, local)[None])  # one campaign
        return F.binary_cross_entropy(probability, rows.label[index].to(probability.dtype))

    train = torch.arange(len(rows), device=device)
    held = train[:0]
    if config.holdout > 0:
        train, held = _holdout(rows.label, config.holdout, generator)
    best, best_loss, waited = None, float("inf"), 0
    for _ in range(config.epochs):
        for index in train[torch.randperm(len(train), generator=generator, device=device)].split(config.batch_size):
            loss = loss_of(index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if len(held):
            with torch.no_grad():
                held_loss = float(loss_of(held))
            if held_loss < best_loss:
                best_loss, waited = held_loss, 0
                best = [local.detach().clone(), *(w.detach().clone() for w in dense.values())]
            elif (waited := waited + 1) >= config.patience:
                break
    if best is not None:
        with torch.no_grad():
            for w, kept in zip([local, *dense.values()], best, strict=True):
                w.copy_(kept)
    overlay = list(zip(table_ids, local.detach().split([len(i) for i in table_ids]), strict=True))
    return AdaptedModel(network, {name: w.detach() for name, w in dense.items()}, overlay)


def adapt_campaigns(
    general_model: Network, features: Features, seeds: dict[int, Rows], config: AdaptConfig | None = None
) -> Iterator[tuple[int, AdaptedModel]]:
    """(campaign, adapted model) for every campaign in `seeds` (campaign index -> its seed rows), one at a
    time; a campaign without seed rows keeps its starting network. Runs where the general model lives."""
    config = config or AdaptConfig()
    device = next(general_model.parameters()).device
    features = features.to(device)
    for campaign, rows in seeds.items():
        network = _fresh(general_model, campaign_seed(config.seed, campaign)) if config.from_scratch else general_model
        if len(rows):
            yield campaign, _adapt(network, features, campaign, rows.to(device), config)
        else:
            yield campaign, AdaptedModel.unchanged(network)


Adapter = Callable[[Network, Features, dict[int, Rows], AdaptConfig], Iterator[tuple[int, AdaptedModel]]]


def adapt(
    general_model: Network, features: Features, seed_rows: Rows, config: AdaptConfig | None = None
) -> AdaptedModel:
    """The general model fine-tuned on one campaign's seed rows; the general model is left as it was."""
    campaigns = seed_rows.campaign.unique().tolist()
    if len(campaigns) != 1:
        raise ValueError(
            f"adapt takes the seed rows of one campaign, got {len(campaigns)} campaigns: "
            "use adapt_campaigns for several"
        )
    ((_, model),) = adapt_campaigns(general_model, features, {campaigns[0]: seed_rows}, config)
    return model


@torch.inference_mode()
def score(
    model: Network | AdaptedModel, features: Features, campaign: int, users: torch.Tensor, batch_size: int | None = None
) -> torch.Tensor:
    """Probabilities [len(users)] that each user (index) converts on `campaign` (index), in batches.

    `model` is an `AdaptedModel` (which scores through its `score`, a method's own adaptation may
    override it) or a plain network.
    """
    adapted = model if isinstance(model, AdaptedModel) else AdaptedModel.unchanged(model)
    return adapted.score(features, campaign, users, batch_size)


def _by_campaign(rows: Rows) -> dict[int, Rows]:
    order = torch.argsort(rows.campaign, stable=True)
    ordered = rows.select(order)
    campaigns, counts = torch.unique_consecutive(ordered.campaign, return_counts=True)
    ends = counts.cumsum(0).tolist()
    return {
        c: ordered.select(slice(e - k, e)) for c, k, e in zip(campaigns.tolist(), counts.tolist(), ends, strict=True)
    }


def adapt_and_score_campaigns(
    general_model: Network,
    features: Features,
    stage1: Rows,
    stage2: Rows,
    config: AdaptConfig | None = None,
    progress: bool = True,
    adapt: Adapter = adapt_campaigns,
) -> pd.DataFrame:
    """The evaluation protocol: adapt on each campaign's stage-1 rows (with `adapt`, a method's own
    adaptation; default this module's), score its stage-2 rows.

    Returns one row per stage-2 row: campaign, user (indexes), label, score.
    """
    config = config or AdaptConfig()
    targets = _by_campaign(stage2)
    given = _by_campaign(stage1)
    empty = stage1.select(slice(0, 0))
    seeds = {c: given.get(c, empty) for c in targets}
    frames = []
    with tqdm(total=len(targets), disable=not progress, desc="adapt+score", unit="campaign") as bar:
        for campaign, model in adapt(general_model, features, seeds, config):
            rows = targets[campaign]
            scores = score(model, features, campaign, rows.user, config.score_batch_size)
            frames.append(
                pd.DataFrame(
                    {
                        "campaign": np.full(len(rows), campaign, dtype=np.int64),
                        "user": rows.user.cpu().numpy(),
                        "label": rows.label.cpu().numpy(),
                        "score": scores.float().cpu().numpy(),
                    }
                )
            )
            bar.update()
    columns = {"campaign": np.int64, "user": np.int64, "label": np.float32, "score": np.float32}
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns)).astype(columns)
