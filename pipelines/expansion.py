"""The expansion DAG (the online stage): the user base -> expand_shard per (campaign group, user shard) ->
merge_audiences.

Like the training DAG, its shape is fixed at compile time (kfp.local gathers no ParallelFor outputs): G
campaign groups x S user shards tasks, each adapting its group's campaigns (every G-th seed set by name)
and keeping each one's top N among its shard's users; one merge keeps the global top N per campaign and
writes the audiences and the summary. The campaigns themselves are read at run time from the seed-set
folder, so the same pipeline serves any number of them.

Nothing is cached (`Step.cached` of both steps): the seed-set folder and the `latest` model keep their
URIs while what they hold changes.
Instead, with the `audiences` parameter (a stable folder, `metaheac.online.refresh`), a campaign whose request
(seed set, exclusions, tiers, model and users, by content) is unchanged since its audience was written
there reuses it, so a scheduled run re-expands only the campaigns that changed; a campaign whose seeds fell
below the minimum keeps its last audience, flagged stale.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfp import dsl

from components.kfp_tasks import Cluster, task
from components.spec import MAX_FAN_IN
from metaheac.steps.catalog import STEPS
from pipelines.options import Parameters, PipelineOptions, option, ordered

EXPAND_NAME = "metaheac-expand"
DATASET_PARAMETER = "dataset_uri"
_BOUND = {"dataset", "output", "shard", "shards", "group", "groups"}  # set by the DAG itself


@dataclass(frozen=True)
class ExpansionOptions(PipelineOptions):
    """The expansion pipeline's shape: its user shards and campaign groups."""

    name: str = EXPAND_NAME
    shards: int = option(2, "user shards: expand tasks per campaign group, each scoring one block of the users")
    campaign_groups: int = option(1, "expand tasks per user shard, each expanding every N-th campaign")

    def __post_init__(self) -> None:
        if self.shards < 1 or self.campaign_groups < 1:
            raise ValueError("an expansion pipeline needs at least one shard and one campaign group")
        if self.shards * self.campaign_groups > MAX_FAN_IN:
            raise ValueError(f"{self.shards * self.campaign_groups} tasks to merge is more than the {MAX_FAN_IN} "
                             "a merge takes: use fewer shards")

    def parameters(self) -> Parameters:
        return expand_parameters()

    def summary(self) -> str:
        return summary(self)

    def body(self) -> Callable[..., None]:
        return expand_body(self, self.cluster)


def expand_parameters() -> Parameters:
    """The pipeline's parameters: the user base's URI, and expand_shard's own arguments by their names."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [(inspect.Parameter(DATASET_PARAMETER, kind, annotation=str),
                   "canonical dataset URI (gs://) whose users are the candidates")]
    for argument in STEPS["expand_shard"].parameters():
        if argument.name not in _BOUND:
            default = inspect.Parameter.empty if argument.required else argument.default
            parameters.append((inspect.Parameter(argument.name, kind, default=default, annotation=argument.kind),
                               argument.help))
    return ordered(parameters)


def summary(options: ExpansionOptions) -> str:
    return (f"MetaHeac audience expansion of every seed set: {options.campaign_groups} campaign group(s) x "
            f"{options.shards} user shard(s), then one merge of each campaign's top N.")


def expand_body(options: ExpansionOptions, cluster: Cluster) -> Callable[..., None]:
    """The pipeline function (its signature is set by `options.build_pipeline`)."""
    names = [p.name for p, _ in expand_parameters()]

    def body(*values: Any) -> None:
        params = dict(zip(names, values, strict=True))
        users = dsl.importer(artifact_uri=params.pop(DATASET_PARAMETER), artifact_class=dsl.Dataset).output
        parts = []
        for group in range(options.campaign_groups):
            for shard in range(options.shards):
                label = f"expand-shard-{group + 1}of{options.campaign_groups}-users-{shard + 1}of{options.shards}"
                made = task("expand_shard", cluster, options.caching, label, dataset=users, shard=shard,
                            shards=options.shards, group=group, groups=options.campaign_groups, **params)
                made.set_display_name(
                    f"expand {group + 1}/{options.campaign_groups} users {shard + 1}/{options.shards}")
                parts.append(made.outputs["output"])
        merge = task("merge_audiences", cluster, options.caching, "merge-audiences", parts=parts,
                     audiences=params["audiences"])
        merge.set_display_name("merge audiences")

    return body
