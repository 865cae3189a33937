"""Every method of the quality table trained and evaluated in one process, on tensors, through the product's
path (`Method.train`, then `Method.adapt_and_score`, i.e. `adapt_campaigns`): the paper's rows, the honest
baselines and the recommended method. Each general model is trained once; the recommended method takes
the faithful MetaHeac row's meta-trained network when both run (the same seed gives the same network)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd

from metaheac.adaptation import AdaptConfig
from metaheac.data.tensors import Features, Rows
from metaheac.method_names import RECOMMENDED
from metaheac.methods import method
from metaheac.model.config import ModelConfig
from metaheac.model.network import Network
from metaheac.training.config import MetaTrainConfig
from metaheac.training.joint import JointTrainConfig

log = logging.getLogger(__name__)


def evaluate_methods(
    methods: list[str],
    features: Features,
    train: Rows,
    tests: dict[str, tuple[Rows, Rows]],
    seed: int = 2020,
    model_config: ModelConfig | None = None,
    settings: Mapping[str, Any] | None = None,
    meta_config: MetaTrainConfig | None = None,
) -> dict[str, pd.DataFrame]:
    """{method: scored test rows with their split}, `tests` being {split: (stage-1 rows, stage-2 rows)};
    every network built with `model_config` (default `ModelConfig()`), a method with settings of its own
    with `settings[its name]` (`Method.parse_settings`; default: its defaults), meta-training with
    `meta_config` (default `MetaTrainConfig()`) at `seed` on the CPU."""
    meta = dataclasses.replace(meta_config or MetaTrainConfig(), seed=seed, device="cpu")
    joint = JointTrainConfig(seed=seed, device="cpu")
    general: dict[str, Network] = {}

    def network(name: str) -> Network:
        if name in general:
            return general[name]
        chosen, own = method(name), (settings or {}).get(name)
        if name == RECOMMENDED and "MetaHeac" in methods:  # MetaHeac's meta-training, then the extras
            model = chosen.build(features.schema, model_config, own)
            model.load_state_dict(network("MetaHeac").state_dict(), strict=False)
            chosen.fit_extras(model, features, train, seed)
        else:
            model = chosen.train(features, train, model_config, meta, joint, seed=seed, progress=False, settings=own)
        general[name] = model
        return model

    results = {}
    for name in methods:
        started = time.perf_counter()
        frames = [method(name).adapt_and_score(network(name), features, stage1, stage2, AdaptConfig(seed=seed),
                                               progress=False).assign(split=split)
                  for split, (stage1, stage2) in tests.items()]
        results[name] = pd.concat(frames, ignore_index=True)
        log.info("%s: %.0f s (training included where it came first)", name, time.perf_counter() - started)
    return results
