"""Every step by name: the CLI's sub-commands and the pipeline components.

Steps import on first use, so `metaheac preprocess` never loads torch (a third of its memory)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from metaheac.steps.base import Step

_WHERE = {
    "generate": "metaheac.steps.preprocess:Generate",
    "preprocess": "metaheac.steps.preprocess:Preprocess",
    "train": "metaheac.steps.engine:Train",
    "adapt": "metaheac.steps.engine:Adapt",
    "evaluate": "metaheac.steps.engine:Evaluate",
    "expand": "metaheac.steps.engine:Expand",
    "demo": "metaheac.steps.demo:Demo",
    "publish": "metaheac.steps.online:Publish",
    "expand_shard": "metaheac.steps.online:ExpandShard",
    "merge_audiences": "metaheac.steps.online:MergeAudiences",
}


class _Steps(Mapping[str, type[Step]]):
    def __getitem__(self, name: str) -> type[Step]:
        module, _, attribute = _WHERE[name].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)


STEPS: Mapping[str, type[Step]] = _Steps()
