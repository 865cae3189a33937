"""The recommended method, `MetaHeac+LR`, in the method contract (`metaheac.method.Method`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

from metaheac.adaptation import AdaptConfig, AdaptedModel
from metaheac.data.schema import DatasetSchema
from metaheac.data.tensors import Features, Rows
from metaheac.linear.head import LinearAdapted, LinearHead
from metaheac.linear.method import fit_each
from metaheac.method import Method
from metaheac.model.config import ModelConfig
from metaheac.model.network import Network
from metaheac.recommended.bank import train_bank
from metaheac.recommended.config import RecommendedConfig
from metaheac.recommended.fit import fit_transfer
from metaheac.recommended.network import TransferNetwork


@dataclass(frozen=True)
class TransferLR(Method):
    """The recommended method (package doc): the meta-trained network and the bank as the general model; per
    campaign, an L2 logistic regression on the seeds over their scores, pulled toward the campaign's
    category and advertiser prior. Its settings are a `RecommendedConfig`, saved with the model."""

    def build(self, schema: DatasetSchema, config: ModelConfig | None = None, settings: Any = None) -> Network:
        if settings is not None and not isinstance(settings, RecommendedConfig):
            raise TypeError(f"{self.name}: settings must be a RecommendedConfig, got {type(settings).__name__}")
        return TransferNetwork(schema, replace(config or ModelConfig(), **self.config_changes), settings)

    def settings_of(self, network: Network) -> dict[str, Any]:
        return cast(TransferNetwork, network).settings.to_dict()

    def read_settings(self, info: Mapping[str, Any]) -> RecommendedConfig:
        return RecommendedConfig.from_saved(info)

    def parse_settings(self, raw: Mapping[str, Any]) -> RecommendedConfig:
        return RecommendedConfig.from_dict(raw)

    def fit_extras(self, model: Network, features: Features, train_rows: Rows, seed: int) -> None:
        network = cast(TransferNetwork, model)
        network.settings = network.settings.seeded(seed)  # what config.json records
        network.store_bank(train_bank(features, train_rows, network.settings, seed))

    def adapt_campaigns(
        self, general_model: Network, features: Features, seeds: dict[int, Rows], config: AdaptConfig | None = None
    ) -> Iterator[tuple[int, AdaptedModel]]:
        seed = self.adapt_config(config).seed
        network = cast(TransferNetwork, general_model)
        bank = network.bank(features)

        def fit(campaign: int, rows: Rows) -> LinearHead:
            return fit_transfer(general_model, bank, features, campaign, rows, network.settings, seed)

        for campaign, head in fit_each(fit, seeds):
            yield campaign, LinearAdapted(general_model, head)
