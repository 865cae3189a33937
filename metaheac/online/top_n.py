"""A campaign's N best users over a shard's batches (`TopN`), and the shards' tops merged into the global
top N (`merge_audiences`), with each user's smallest reach tier."""

from __future__ import annotations

import pandas as pd
import torch

from metaheac.online.expand import (
    audience_frame,
)
from metaheac.online.tiers import Tier


class TopN:
    """The N best (score, user index) pairs seen so far; ties keep no particular order."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._scores: list[torch.Tensor] = []
        self._index: list[torch.Tensor] = []
        self._held = 0

    def add(self, scores: torch.Tensor, index: torch.Tensor) -> None:
        if len(scores) > self.n:  # only a batch's own N best can make the top N
            scores, picked = torch.topk(scores, self.n)
            index = index[picked]
        self._scores.append(scores)
        self._index.append(index)
        self._held += len(scores)
        if self._held > 4 * self.n:  # bound the memory; reduce rarely
            self._reduce()

    def _reduce(self) -> None:
        scores, index = torch.cat(self._scores), torch.cat(self._index)
        if len(scores) > self.n:
            scores, picked = torch.topk(scores, self.n)
            index = index[picked]
        self._scores, self._index, self._held = [scores], [index], len(scores)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, user indexes), best first."""
        if not self._scores:
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        self._reduce()
        scores, order = torch.sort(self._scores[0], descending=True, stable=True)
        return scores, self._index[0][order]


def merge_audiences(parts: list[pd.DataFrame], top_n: int, tiers: list[Tier] | None = None) -> pd.DataFrame:
    """The global top N (`audience_frame`) of shards' tops (each a frame with uid and score): as each shard
    kept its own N best, the best N of their union are the best N of all users. With `tiers` (the largest
    being N), each user's smallest tier is its `tier`: exact across shards, as the ranks are."""
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"uid": [], "score": []})
    frame = frame.sort_values(["score", "uid"], ascending=[False, True], kind="stable").head(top_n)
    return audience_frame(frame["uid"].to_numpy(), frame["score"].to_numpy(), tiers)
