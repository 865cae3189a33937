"""The methods of the paper's table (DESIGN.md section 5), by name: which network, how its general model
is trained, and whether adaptation starts from it or from scratch.

- "none": no general model. LR and "MLP one-stage" are trained per campaign from a fresh network.
- "joint": plain joint pre-training on every training campaign's stage-1 rows (`training/joint.py`).
- "meta": MAML meta-training (`training/meta.py`).
Every method is then adapted per campaign with the same protocol (`metaheac.adaptation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from metaheac.adaptation import AdaptConfig
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Features, Rows
from metaheac.model.baselines import MLP, LogisticRegression, MMoE, SharedBottom
from metaheac.model.config import ModelConfig
from metaheac.model.heac import HybridExpertsCritics
from metaheac.training.config import MetaTrainConfig
from metaheac.training.joint import JointTrainConfig, joint_train
from metaheac.training.meta import meta_train

Training = Literal["none", "joint", "meta"]


@dataclass(frozen=True)
class MethodSpec:
    network: Callable[[DatasetSchema, ModelConfig], nn.Module]
    training: Training
    config_changes: dict[str, Any] = field(default_factory=dict)  # the ablations' ModelConfig edits

    @property
    def from_scratch(self) -> bool:
        """Whether each campaign is adapted from a freshly initialised network."""
        return self.training == "none"

    def build(self, schema: DatasetSchema, config: ModelConfig | None = None) -> nn.Module:
        return self.network(schema, replace(config or ModelConfig(), **self.config_changes))


METHODS: dict[str, MethodSpec] = {
    "LR": MethodSpec(LogisticRegression, "none"),
    "MLP one-stage": MethodSpec(MLP, "none"),
    "MLP+pre-training": MethodSpec(MLP, "joint"),
    "Shared-Bottom+pre-training": MethodSpec(SharedBottom, "joint"),
    "MMoE+pre-training": MethodSpec(MMoE, "joint"),
    "MetaHeac": MethodSpec(HybridExpertsCritics, "meta"),
    "MetaHeac w/o HC": MethodSpec(HybridExpertsCritics, "meta", {"critics": 1}),
    "MetaHeac w/o HE": MethodSpec(HybridExpertsCritics, "meta", {"experts": 1}),
    "MetaHeac w/o Meta": MethodSpec(HybridExpertsCritics, "joint"),
}


def method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(repr(m) for m in METHODS)}")
    return METHODS[name]


def parse_methods(text: str) -> list[str]:
    """'all' or comma-separated method names; an unknown name fails here, before any work."""
    methods = list(METHODS) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    for name in methods:
        method(name)
    return methods


def adapt_config(name: str, config: AdaptConfig | None = None) -> AdaptConfig:
    """The adaptation protocol for a method: `config` (default: official), from scratch where it has no
    general model."""
    return replace(config or AdaptConfig(), from_scratch=method(name).from_scratch)


def train_general_model(
    name: str,
    features: Features,
    train_rows: Rows,
    model_config: ModelConfig | None = None,
    meta_config: MetaTrainConfig | None = None,
    joint_config: JointTrainConfig | None = None,
    seed: int = 2020,
    checkpoint_uri: str | None = None,
    progress: bool = True,
) -> nn.Module:
    """The method's general model, initialised with `seed` and trained on `train_rows` (the training
    campaigns' stage-1 rows, sorted by campaign). For "none" methods it is the untrained network, which
    adaptation only uses as the architecture to re-initialise per campaign (see `adapt_config`).

    With `checkpoint_uri`, meta-training writes checkpoints there and resumes from one it finds; joint
    training (one pass over the rows) does not checkpoint.
    """
    spec = method(name)
    with torch.random.fork_rng(devices=[]):  # seeds the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = spec.build(features.schema, model_config)
    if spec.training == "joint":
        joint_train(model, features, train_rows, joint_config, progress=progress)
    elif spec.training == "meta":
        meta_train(model, features, train_rows, meta_config, checkpoint_uri, resume=True, progress=progress)
    return model
