"""The dataset as tensors, the only form the training, adaptation and scoring code sees.

Users and campaigns are stored once; labelled rows only hold (campaign, user, label) indexes,
so a batch is three gathers and no pandas runs in a training loop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from metaheac.data.schema import DatasetSchema


@dataclass
class UserTable:
    """Every user, row i = user index i. Ids are field indexes (0 = missing / padding)."""

    uid: np.ndarray  # int64 [n_users], the raw user ids
    single: torch.Tensor  # int32 [n_users, n_single_fields]
    lists: torch.Tensor  # int32 [n_users, sum of list lengths], list fields side by side

    def __len__(self) -> int:
        return len(self.uid)


@dataclass
class CampaignTable:
    """Every campaign, row c = campaign index c."""

    aid: np.ndarray  # int64 [n_campaigns], the raw ad ids
    fields: torch.Tensor  # int32 [n_campaigns, n_campaign_fields]
    split: np.ndarray  # str [n_campaigns]: train | test_hot | test_cold
    seed_positives: np.ndarray  # int64 [n_campaigns]

    def __len__(self) -> int:
        return len(self.aid)


@dataclass
class Rows:
    """Labelled (campaign, user) rows, sorted by campaign."""

    campaign: torch.Tensor  # int64 [n]
    user: torch.Tensor  # int64 [n]
    label: torch.Tensor  # float32 [n], 0 or 1

    def __len__(self) -> int:
        return len(self.label)

    def select(self, index: torch.Tensor | slice) -> Rows:
        return Rows(self.campaign[index], self.user[index], self.label[index])

    def to(self, device: torch.device | str) -> Rows:
        return Rows(self.campaign.to(device), self.user.to(device), self.label.to(device))

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(
            torch.cat([p.campaign for p in parts]),
            torch.cat([p.user for p in parts]),
            torch.cat([p.label for p in parts]),
        )


@dataclass
class Batch:
    """Model input: one row per (campaign, user) pair, all int64."""

    user_single: torch.Tensor  # [B, n_single_fields]
    user_lists: torch.Tensor  # [B, sum of list lengths]
    campaign: torch.Tensor  # [B, n_campaign_fields]

    def __len__(self) -> int:
        return self.user_single.shape[0]


@dataclass
class Features:
    """Users and campaigns, on one device, ready to be gathered into batches."""

    schema: DatasetSchema
    users: UserTable
    campaigns: CampaignTable

    def batch(self, campaign: torch.Tensor, user: torch.Tensor) -> Batch:
        return Batch(
            self.users.single[user].long(),
            self.users.lists[user].long(),
            self.campaigns.fields[campaign].long(),
        )

    def fingerprint(self, rows: Rows) -> str:
        """A digest of the schema (provenance included), the tables and `rows`: what a checkpoint was
        trained on. Hashing reads every byte once (about a second per GB)."""
        digest = hashlib.blake2b(self.schema.to_json().encode(), digest_size=16)
        tensors = [self.users.single, self.users.lists, self.campaigns.fields, rows.campaign, rows.user, rows.label]
        for array in [self.users.uid, self.campaigns.aid, *(t.detach().cpu().contiguous().numpy() for t in tensors)]:
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()

    def to(self, device: torch.device | str) -> Features:
        users = UserTable(self.users.uid, self.users.single.to(device), self.users.lists.to(device))
        campaigns = CampaignTable(
            self.campaigns.aid,
            self.campaigns.fields.to(device),
            self.campaigns.split,
            self.campaigns.seed_positives,
        )
        return Features(self.schema, users, campaigns)
