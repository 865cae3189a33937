"""The methods of the paper's table, by name (`METHODS`): the networks' own, and those of the linear family
(`metaheac.linear.method`) and the recommended method (`metaheac.recommended.method`). The contract is
`metaheac.method.Method` (docs/architecture.md, "The method contract")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from metaheac.adaptation import AdaptConfig
from metaheac.data.schema import DatasetSchema
from metaheac.linear.head import CategoryNetwork
from metaheac.linear.method import CampaignLR, CategoryLROnly, PooledLR, SklearnLR
from metaheac.method import Method
from metaheac.method_names import RECOMMENDED, check_method
from metaheac.model import store
from metaheac.model.baselines import MLP, LogisticRegression, MMoE, SharedBottom
from metaheac.model.config import ModelConfig
from metaheac.model.heac import HybridExpertsCritics
from metaheac.model.network import Network
from metaheac.recommended.method import TransferLR
from metaheac.recommended.network import TransferNetwork


@dataclass(frozen=True)
class EarlyStopped(Method):
    """Adapts from scratch as a practitioner would: a fifth of the seeds held out, up to 40 epochs of
    batches of 128, the epoch of least held-out loss kept, patience 3 (not the official 2 epochs of 512)."""

    def adapt_config(self, config: AdaptConfig | None = None) -> AdaptConfig:
        return replace(super().adapt_config(config), epochs=40, batch_size=128, holdout=0.2, patience=3)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        CampaignLR("LR", LogisticRegression, "none"),
        EarlyStopped("MLP one-stage", MLP, "none"),
        Method("MLP+pre-training", MLP, "joint"),
        Method("Shared-Bottom+pre-training", SharedBottom, "joint"),
        Method("MMoE+pre-training", MMoE, "joint"),
        Method("MetaHeac", HybridExpertsCritics, "meta"),
        Method("MetaHeac w/o HC", HybridExpertsCritics, "meta", {"critics": 1}),
        Method("MetaHeac w/o HE", HybridExpertsCritics, "meta", {"experts": 1}),
        Method("MetaHeac w/o Meta", HybridExpertsCritics, "joint"),
        SklearnLR("sklearn LR", LogisticRegression, "none"),
        PooledLR("pooled LR", CategoryNetwork, "none"),
        CategoryLROnly("Category LR", CategoryNetwork, "none"),
        TransferLR(RECOMMENDED, TransferNetwork, "meta"),
    )
}


def method(name: str) -> Method:
    return METHODS[check_method(name)]


def build_network(name: str, schema: DatasetSchema, config: ModelConfig, info: Mapping[str, Any]) -> Network:
    """The network of the method named `name`, with the settings its config.json `info` records (how
    `model.store` rebuilds a saved model)."""
    spec = method(name)
    return spec.build(schema, config, spec.read_settings(info))


def load_model(uri: str, device: torch.device | str = "cpu") -> tuple[Network, dict[str, Any]]:
    """A general model saved by `model.store.save_model`, rebuilt by its method, and its config.json."""
    return store.load_model(uri, build_network, device)
