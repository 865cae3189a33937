"""The promotion gate of `publish` (the KFP best-practice "champion/challenger" pattern): a new general model
becomes LATEST only when it is not worse than the current LATEST by more than a tolerance, on the metric a
new campaign depends on: the cold GAUC (campaigns with few seed positives) of the model adapted by its
method. Both models are adapted and scored here, the same way, on the same held-out cold campaigns of the
dataset, so the two figures compare (a LATEST trained on other data cannot be adapted to it: no comparison,
no promotion without --force). A model that is not promoted is still published as a version, not made the
default. A publish without a dataset (by hand) is not gated: it is promoted, and its record says so."""

from __future__ import annotations

import math
from dataclasses import dataclass

from metaheac.adaptation import AdaptConfig
from metaheac.data.dataset import load_campaign_frame
from metaheac.data.errors import InputError
from metaheac.data.loading import load_features, load_rows
from metaheac.evaluation.metrics import summarize
from metaheac.methods import load_model, method
from metaheac.model.store import check_same_data

SPLIT = "test_cold"


@dataclass(frozen=True)
class GateConfig:
    tolerance: float = 0.005  # the GAUC a new model may lose against LATEST and still be promoted
    force: bool = False  # promote whatever the figures
    adapt: AdaptConfig = AdaptConfig()  # the paper's adaptation, seeded: both models adapt alike


def cold_gauc(model_uri: str, dataset: str, config: AdaptConfig) -> float:
    """The model's cold GAUC on the dataset's held-out cold campaigns (NaN when it has none);
    InputError when the model was trained on other data."""
    network, info = load_model(model_uri)
    features = load_features(dataset)
    check_same_data(info, features.schema, model_uri, dataset)
    campaigns = load_campaign_frame(dataset)
    chosen = sorted(campaigns.loc[campaigns["split"] == SPLIT, "campaign"])
    if not chosen:
        return math.nan
    stage1, stage2 = (load_rows(dataset, SPLIT, stage, chosen) for stage in (1, 2))
    frame = method(info["method"]).adapt_and_score(network, features, stage1, stage2, config)
    return float(summarize(frame.assign(split=SPLIT))["cold"]["gauc"])


def decide(candidate_uri: str, champion_uri: str | None, dataset: str, config: GateConfig) -> dict:
    """The gate's record: both figures, the tolerance, whether it was forced, the decision and why."""
    record: dict = {"metric": "cold_gauc", "tolerance": config.tolerance, "forced": config.force,
                    "candidate": None, "champion": None}  # a figure not computed, or NaN: None (JSON)
    if not dataset:
        # a publish outside a pipeline names no data: it moves the pointer, as it always did, and says so
        return record | {"promoted": True, "reason": "not compared: no --dataset to compare the models on"}
    candidate = cold_gauc(candidate_uri, dataset, config.adapt)
    record["candidate"] = None if math.isnan(candidate) else candidate
    if champion_uri is None:
        return record | {"promoted": True, "reason": "no LATEST yet: the first version is promoted"}
    try:
        champion = cold_gauc(champion_uri, dataset, config.adapt)
    except InputError as error:  # LATEST was trained on other fields: it cannot be adapted to this data
        return record | {"promoted": config.force, "reason": f"LATEST cannot be compared: {error}"}
    record["champion"] = None if math.isnan(champion) else champion
    if math.isnan(candidate) or math.isnan(champion):
        return record | {"promoted": config.force, "reason": f"no cold GAUC on {dataset} to compare"}
    better = candidate >= champion - config.tolerance
    reason = (f"cold GAUC {candidate:.4f} against LATEST's {champion:.4f}: "
              + ("within the tolerance" if better else f"worse by more than the tolerance {config.tolerance}"))
    return record | {"promoted": better or config.force, "reason": reason + ("; forced" if config.force else "")}
