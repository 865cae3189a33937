"""The tiny meta-training setup shared by the meta-training, checkpoint and distributed tests."""

from __future__ import annotations

from dataclasses import replace

import torch

from metaheac.model.config import ModelConfig
from metaheac.model.heac import HybridExpertsCritics
from metaheac.training.config import MetaTrainConfig
from tests.tiny import TINY, tiny_features, tiny_rows

# Campaign 2 has fewer rows than two batches of 16 (padding); few campaigns, so tasks repeat campaigns
# and two tasks touch the same embedding rows.
COUNTS = [60, 45, 9, 80, 3]


def data(counts: list[int] = COUNTS):
    features = tiny_features(users=200, campaigns=len(counts))
    return features, tiny_rows(features, counts)


def model(config: ModelConfig = TINY, dtype: torch.dtype = torch.float64, seed: int = 0) -> HybridExpertsCritics:
    torch.manual_seed(seed)
    return HybridExpertsCritics(tiny_features().schema, config).to(dtype)


def config(**changes) -> MetaTrainConfig:
    base = MetaTrainConfig(task_count=3, batch_size=16, outer_lr=1e-2, inner_lr=0.1, device="cpu", seed=7)
    return replace(base, **changes)
