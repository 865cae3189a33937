"""The recommended method's settings, one typed config (`RecommendedConfig`) saved with its general model
(config.json's "settings", `metaheac.recommended.method.TransferLR`) and read back on load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from metaheac.recommended.factors import FactorConfig
from metaheac.recommended.topics import TopicConfig

# The four settings that were `ModelConfig` fields before the method had its own config: a config.json of
# then has them in its "model" object (and no "settings"). Old key -> (sub-config or None, field).
LEGACY_MODEL_KEYS = {
    "audience_factors": ("factors", "dim"),
    "audience_factor_fits": ("factors", "models"),
    "user_topics": ("topics", "topics"),
    "residual_lr": (None, "residual_lr"),
}


def _tuple(values: Any, name: str) -> tuple[float, ...]:
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise ValueError(f"RecommendedConfig.{name}: expected a list of numbers, got {values!r}")
    grid = tuple(float(v) for v in values)
    if not grid or min(grid) <= 0:
        raise ValueError(f"RecommendedConfig.{name}: need at least one C, every C > 0, got {values!r}")
    return grid


@dataclass(frozen=True)
class RecommendedConfig:
    """Every setting of the recommended method (the model: `metaheac.recommended`). The sub-configs' seeds
    are the training seed's (`seeded`); the per-campaign fits take theirs from the adaptation's."""

    factors: FactorConfig = field(default_factory=FactorConfig)  # the shared audience factors
    topics: TopicConfig = field(default_factory=TopicConfig)  # the users' topic model (LDA)
    # C grid of the topic models (per category, then advertiser, on the topic mix): a mix sums to 1, so its
    # weights need a light penalty to reach a logit's range
    topic_cs: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
    stats_rows: int = 20_000  # training rows sampled for the bank's logit mean and std
    # the per-campaign fit of the dense columns: a wide C grid (the dense columns need small ones), the
    # one-standard-error rule, and the bank's and priors' columns scaled by `scale`, so their penalty is lighter
    # than the factors' and topics' own
    cs: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    scale: float = 3.0
    # a residual LR on the seeds' raw design after the head (`fit.fit_transfer`); on by default since it
    # leads sklearn LR on MovieLens (bench/README.md); its grid needs no C
    # below 0.01 (the raw design's many columns)
    residual_lr: bool = True
    residual_cs: tuple[float, ...] = (0.01, 0.1, 1.0)
    # the meta-trained network's logit as a column of the per-campaign fit; false leaves it out, an ablation
    # (meta-training still runs): the same quality on the generator and MovieLens (bench/README.md, "Twelfth round")
    network_column: bool = True

    def __post_init__(self) -> None:
        for name in ("topic_cs", "cs", "residual_cs"):
            object.__setattr__(self, name, _tuple(getattr(self, name), name))  # JSON gives a list
        if self.stats_rows < 1 or self.scale <= 0:
            raise ValueError(f"RecommendedConfig: need stats_rows >= 1 and scale > 0, got {self.stats_rows} "
                             f"and {self.scale}")

    def seeded(self, seed: int) -> RecommendedConfig:
        """These settings with the sub-configs' seeds set to `seed`."""
        return replace(self, factors=replace(self.factors, seed=seed), topics=replace(self.topics, seed=seed))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RecommendedConfig:
        """From `to_dict`'s form, or any subset of its fields (the rest default); a ValueError names an unknown
        field."""
        known = {f.name for f in fields(cls)}
        subs = {"factors": FactorConfig, "topics": TopicConfig}
        unknown = sorted(set(raw) - known)
        for name, sub in subs.items():
            given = raw.get(name, {})
            if not isinstance(given, Mapping):
                raise ValueError(f"RecommendedConfig.{name}: expected an object, got {given!r}")
            unknown += [f"{name}.{k}" for k in sorted(set(given) - {f.name for f in fields(sub)})]
        if unknown:
            raise ValueError(f"RecommendedConfig: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
        changed = {k: v for k, v in raw.items() if k not in subs}
        return cls(**changed, **{name: sub(**raw.get(name, {})) for name, sub in subs.items()})

    @classmethod
    def from_saved(cls, info: Mapping[str, Any]) -> RecommendedConfig:
        """The settings a model's config.json `info` records: its "settings", or, written before they had
        their own key, the `LEGACY_MODEL_KEYS` of its "model" (the rest as the defaults, which they were)."""
        if info.get("settings") is not None:
            return cls.from_dict(info["settings"])
        model = info.get("model", {})
        raw: dict[str, Any] = {}
        for key, (sub, name) in LEGACY_MODEL_KEYS.items():
            if key in model:
                (raw.setdefault(sub, {}) if sub else raw)[name] = model[key]
        return cls.from_dict(raw)
