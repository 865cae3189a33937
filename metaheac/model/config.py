"""The Hybrid Experts and Critics network's hyper-parameters, with the official defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
    # the recommended method's shared audience factors (metaheac/factors.py): per user and fit, and fits
    audience_factors: int = 32
    audience_factor_fits: int = 3
    user_topics: int = 32  # the recommended method's user topics (metaheac/topics.py)
    # the recommended method: a residual LR on the seeds' raw design after its head (transfer.fit_transfer);
    # on by default since it leads sklearn LR on MovieLens (bench/README.md)
    residual_lr: bool = True

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
        return cls(**{k: v for k, v in raw.items() if k != "dropout"})  # models saved before it went had it
