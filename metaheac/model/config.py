"""The Hybrid Experts and Critics network's hyper-parameters, with the official defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Keys a saved config.json's "model" may hold that are no fields now: "dropout" (models saved before it went),
# and the recommended method's four settings of before it had its own config (read from there by
# `metaheac.recommended.config.RecommendedConfig.from_saved`).
RETIRED = ("dropout", "audience_factors", "audience_factor_fits", "user_topics", "residual_lr")


@dataclass(frozen=True)
class ModelConfig:
    """`experts=1` is the paper's "w/o HE" ablation, `critics=1` its "w/o HC".

    No dropout: the official code declares 0.2 but its forward never applies it, and the paper's numbers
    are reproduced without.
    """

    embedding_dim: int = 64
    experts: int = 8
    critics: int = 5
    expert_hidden: tuple[int, ...] = (64, 64)  # each layer Linear + ReLU
    gate_hidden: int = 64
    init_std: float = 1.0  # embeddings start as N(0, init_std^2); 1.0 is nn.Embedding's default, as official

    def __post_init__(self) -> None:
        if self.experts < 1 or self.critics < 1:
            raise ValueError(f"experts and critics must be >= 1, got {self.experts} and {self.critics}")
        if not self.expert_hidden or min(self.expert_hidden) < 1:
            raise ValueError(f"expert_hidden needs at least one positive width, got {self.expert_hidden}")
        object.__setattr__(self, "expert_hidden", tuple(self.expert_hidden))  # JSON gives a list

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        return cls(**{k: v for k, v in raw.items() if k not in RETIRED})
