"""Tiny random datasets as tensors (Features, Rows) with a planted, learnable signal, for fast model tests."""

from __future__ import annotations

import numpy as np
import torch

from metaheac.adaptation import AdaptConfig
from metaheac.data.schema import DatasetSchema, Field
from metaheac.data.tensors import CampaignTable, Features, Rows, UserTable
from metaheac.model.config import ModelConfig
from metaheac.online.expand import ExpandConfig

TINY = ModelConfig(embedding_dim=8, experts=3, critics=2, expert_hidden=(8, 6), gate_hidden=5)  # a tiny network
TINY_EXPAND = ExpandConfig(AdaptConfig(batch_size=16))


def tiny_schema() -> DatasetSchema:
    return DatasetSchema(
        user_single=[Field("age", 5), Field("gender", 3)],
        user_lists=[Field("interest1", 30, 4), Field("kw1", 50, 3)],
        campaign_fields=[Field("advertiserId", 7), Field("productType", 4)],
    )


def tiny_features(users: int = 300, campaigns: int = 8, seed: int = 0) -> Features:
    """Users with 0..length valid list ids (some lists empty); campaign fields in [1, vocab)."""
    rng = np.random.default_rng(seed)
    schema = tiny_schema()
    single = np.stack([rng.integers(0, f.vocab_size, users) for f in schema.user_single], 1)
    lists = []
    for f in schema.user_lists:
        valid = np.arange(f.length) < rng.integers(0, f.length + 1, (users, 1))
        lists.append(np.where(valid, rng.integers(1, f.vocab_size, (users, f.length)), 0))
    fields = np.stack([rng.integers(1, f.vocab_size, campaigns) for f in schema.campaign_fields], 1)
    return Features(
        schema,
        UserTable(
            1000 + np.arange(users), torch.from_numpy(single).int(), torch.from_numpy(np.concatenate(lists, 1)).int()
        ),
        CampaignTable(
            500 + np.arange(campaigns),
            torch.from_numpy(fields).int(),
            np.array(["train", "test_cold", "test_hot"] * campaigns, dtype=object)[:campaigns],
            np.zeros(campaigns, dtype=np.int64),
        ),
    )


def tiny_rows(features: Features, counts: list[int], seed: int = 0) -> Rows:
    """counts[c] rows for campaign c, sorted by campaign. The label is 1 with probability
    sigmoid(3 * user sign * campaign sign): the user's age parity against the campaign's advertiser parity."""
    rng = np.random.default_rng(seed)
    campaign = np.repeat(np.arange(len(counts)), counts)
    user = rng.integers(0, len(features.users), len(campaign))
    user_sign = np.where(features.users.single[user, 0].numpy() % 2 == 0, 1.0, -1.0)
    campaign_sign = np.where(features.campaigns.fields[campaign, 0].numpy() % 2 == 0, 1.0, -1.0)
    label = rng.random(len(campaign)) < 1 / (1 + np.exp(-3 * user_sign * campaign_sign))
    return Rows(torch.from_numpy(campaign), torch.from_numpy(user), torch.from_numpy(label.astype(np.float32)))


def with_category(values: list[int]) -> Features:
    """`tiny_features()` (whose campaigns have an advertiserId: 3, 2, 3, 4, 2, 2, 6, 3) with a `genre` campaign
    field (ids 1..3) holding `values`, one per campaign: the hierarchy is genre, then advertiserId (any names)."""
    features = tiny_features()
    schema = features.schema
    schema = type(schema)(schema.user_single, schema.user_lists, [*schema.campaign_fields, Field("genre", 4)],
                          hierarchy=["genre", "advertiserId"])
    fields = torch.cat([features.campaigns.fields, torch.tensor(values).int()[:, None]], 1)
    campaigns = features.campaigns
    return Features(schema, features.users, CampaignTable(campaigns.aid, fields, campaigns.split,
                                                           campaigns.seed_positives))
