"""The method contract (docs/architecture.md, "The method contract"): a method's network, how its general
model is trained, how it adapts to a campaign, and its own settings, saved with the model.

- "none": no general model: each campaign is trained from a fresh network (or fit from scratch).
- "joint": plain joint pre-training on every training campaign's stage-1 rows (`training/joint.py`).
- "meta": MAML meta-training (`training/meta.py`).
Every method adapts per campaign with `metaheac.adaptation`'s protocol unless it overrides `adapt_campaigns`.
The methods themselves live in their packages (`metaheac.linear.method`, `metaheac.recommended.method`) or,
the networks' own, in the registry (`metaheac.methods`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pandas as pd
import torch

from metaheac import adaptation
from metaheac.adaptation import AdaptConfig, AdaptedModel
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Features, Rows
from metaheac.model.config import ModelConfig
from metaheac.model.heac import HybridExpertsCritics
from metaheac.model.network import Network
from metaheac.runtime.phases import phase
from metaheac.training.config import MetaTrainConfig
from metaheac.training.joint import JointTrainConfig, joint_train
from metaheac.training.meta import meta_train

Training = Literal["none", "joint", "meta"]


@dataclass(frozen=True)
class Method:
    """A method: its network builder, how its general model is trained, how it adapts to a campaign.

    A new method is an instance (or a subclass overriding `train` / `fit_extras` and/or `adapt_campaigns`)
    added to `metaheac.methods.METHODS`, and its name to `method_names.METHOD_NAMES`; the steps call only
    these hooks. A method with settings of its own beside `ModelConfig` (a typed config, as the recommended
    method's `RecommendedConfig`) overrides the four settings hooks: `build` with them, `settings_of` a
    general model (what config.json records), `read_settings` (config.json back), `parse_settings` (a
    user's JSON).
    """

    name: str
    network: Callable[[DatasetSchema, ModelConfig], Network]
    training: Training
    config_changes: dict[str, Any] = field(default_factory=dict)  # the ablations' ModelConfig edits

    @property
    def from_scratch(self) -> bool:
        """Whether each campaign is adapted from a freshly initialised network."""
        return self.training == "none"

    def build(self, schema: DatasetSchema, config: ModelConfig | None = None, settings: Any = None) -> Network:
        """The method's network of `config` (and its own `settings`, for a method that has them)."""
        if settings is not None:
            raise TypeError(f"{self.name} has no settings of its own (got {type(settings).__name__})")
        return self.network(schema, replace(config or ModelConfig(), **self.config_changes))

    def settings_of(self, network: Network) -> dict[str, Any] | None:
        """The settings a general model of this method was built and fit with, as config.json records them
        (`model.store.save_model`'s `settings`); None for a method without settings."""
        return None

    def read_settings(self, info: Mapping[str, Any]) -> Any:
        """The settings recorded in a model's config.json `info` (`settings_of`), for `build`."""
        return None

    def parse_settings(self, raw: Mapping[str, Any]) -> Any:
        """The method's settings from a user's JSON object of fields to change (none: only {} is valid)."""
        if raw:
            raise ValueError(f"{self.name} has no settings of its own: got {sorted(raw)}")
        return None

    def train(
        self,
        features: Features,
        train_rows: Rows,
        model_config: ModelConfig | None = None,
        meta_config: MetaTrainConfig | None = None,
        joint_config: JointTrainConfig | None = None,
        seed: int = 2020,
        checkpoint_uri: str | None = None,
        progress: bool = True,
        settings: Any = None,
    ) -> Network:
        """The general model, initialised with `seed` and trained on `train_rows` (the training campaigns'
        stage-1 rows, sorted by campaign). For "none" methods it is the untrained network, which
        adaptation only uses as the architecture to re-initialise per campaign (see `adapt_config`).

        With `checkpoint_uri`, meta-training writes checkpoints there and resumes from one it finds;
        joint training (one pass over the rows) does not checkpoint. `settings`: the method's own (default:
        its defaults).
        """
        with torch.random.fork_rng(devices=[]):  # seeds the init without touching the caller's RNG
            torch.manual_seed(seed)
            model = self.build(features.schema, model_config, settings)
        if self.training == "joint":
            with phase("joint training"):
                joint_train(model, features, train_rows, joint_config, progress=progress)
        elif self.training == "meta":
            if not isinstance(model, HybridExpertsCritics):
                raise TypeError(f"{self.name}: meta-training takes the HybridExpertsCritics network")
            with phase("meta-training"):
                meta_train(model, features, train_rows, meta_config, checkpoint_uri, resume=True, progress=progress)
        self.fit_extras(model, features, train_rows, seed)
        return model

    def fit_extras(self, model: Network, features: Features, train_rows: Rows, seed: int) -> None:
        """What a method fits on the training campaigns besides its network (none by default)."""

    def adapt_config(self, config: AdaptConfig | None = None) -> AdaptConfig:
        """The adaptation protocol: `config` (default: official), from scratch where there is no general model."""
        return replace(config or AdaptConfig(), from_scratch=self.from_scratch)

    def adapt_campaigns(
        self, general_model: Network, features: Features, seeds: dict[int, Rows], config: AdaptConfig | None = None
    ) -> Iterator[tuple[int, AdaptedModel]]:
        """(campaign, adapted model) for every campaign in `seeds`; the default is the official protocol."""
        return adaptation.adapt_campaigns(general_model, features, seeds, self.adapt_config(config))

    def adapt_and_score(
        self,
        general_model: Network,
        features: Features,
        stage1: Rows,
        stage2: Rows,
        config: AdaptConfig | None = None,
        progress: bool = True,
    ) -> pd.DataFrame:
        """The evaluation protocol with this method's adaptation (`adaptation.adapt_and_score_campaigns`)."""
        config = self.adapt_config(config)
        return adaptation.adapt_and_score_campaigns(
            general_model, features, stage1, stage2, config, progress, adapt=self.adapt_campaigns
        )
