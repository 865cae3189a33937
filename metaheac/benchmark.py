"""Every method of the quality table trained and evaluated in one process, on tensors: the paper's rows, the
honest baselines (`LR`, `MLP one-stage` with early stopping, `Category LR`) and the recommended method.
Each general model is trained once and shared by the rows that start from it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cache

import numpy as np
import pandas as pd
import torch

from metaheac.adaptation import AdaptConfig
from metaheac.data.tensors import Features, Rows
from metaheac.linear import CategoryLR, LinearConfig, campaign_lr, design, fit_category_lr
from metaheac.method_names import RECOMMENDED
from metaheac.methods import method
from metaheac.model.config import ModelConfig
from metaheac.model.network import Network
from metaheac.training.config import MetaTrainConfig
from metaheac.training.joint import JointTrainConfig
from metaheac.transfer import TransferBank, fit_transfer, general_logit, train_bank, transfer_config

log = logging.getLogger(__name__)

Scorer = Callable[[torch.Tensor], np.ndarray]  # users -> scores


def _by_campaign(rows: Rows) -> dict[int, Rows]:
    campaigns = rows.campaign.unique().tolist()
    return {c: rows.select(rows.campaign == c) for c in campaigns}


def fit_and_score(fit: Callable[[int, Rows], Scorer], stage1: Rows, stage2: Rows) -> pd.DataFrame:
    """Scored stage-2 rows (campaign, user, label, score) of every campaign, each fit on its stage-1 rows."""
    seeds = _by_campaign(stage1)
    frames = []
    for campaign, rows in _by_campaign(stage2).items():
        scores = fit(campaign, seeds[campaign])(rows.user)
        frames.append(pd.DataFrame({"campaign": campaign, "user": rows.user.numpy(), "label": rows.label.numpy(),
                                    "score": scores.astype(np.float64)}))
    return pd.concat(frames, ignore_index=True)


def evaluate_methods(
    methods: list[str],
    features: Features,
    train: Rows,
    tests: dict[str, tuple[Rows, Rows]],
    seed: int = 2020,
    linear_config: LinearConfig | None = None,
) -> dict[str, pd.DataFrame]:
    """{method: scored test rows with their split}, `tests` being {split: (stage-1 rows, stage-2 rows)}."""
    linear_config = linear_config or LinearConfig(seed=seed)
    meta = MetaTrainConfig(seed=seed, device="cpu")
    joint = JointTrainConfig(seed=seed, device="cpu")
    general: dict[str, Network] = {}

    def network(name: str) -> Network:
        if name not in general:
            general[name] = method(name).train(features, train, meta_config=meta, joint_config=joint, seed=seed,
                                               progress=False)
        return general[name]

    @cache
    def category_lr() -> CategoryLR:  # also the bank's first models
        return fit_category_lr(features, train, linear_config)

    @cache
    def bank() -> TransferBank:
        return train_bank(features, train, category_lr(), ModelConfig(), seed)

    def lr(campaign: int, rows: Rows) -> Scorer:
        model = campaign_lr(features, rows, linear_config)
        return lambda users: model.logit(design(features, users))

    def by_category(campaign: int, rows: Rows) -> Scorer:
        model = category_lr().model(features, campaign)
        return lambda users: model.logit(design(features, users))

    def recommended(campaign: int, rows: Rows) -> Scorer:
        net = network("MetaHeac")
        head = fit_transfer(net, bank(), features, campaign, rows, transfer_config(seed))
        topics = bank().topics
        return lambda users: head.logit(design(features, users), general_logit(net, features, campaign, users),
                                        topics.of_users(features, users))

    fits = {"LR": lr, "Category LR": by_category, RECOMMENDED: recommended}
    results = {}
    for name in methods:
        started = time.perf_counter()
        frames = []
        for split, (stage1, stage2) in tests.items():
            if name in fits:
                frame = fit_and_score(fits[name], stage1, stage2)
            else:
                frame = method(name).adapt_and_score(network(name), features, stage1, stage2,
                                                     AdaptConfig(seed=seed), progress=False)
            frames.append(frame.assign(split=split))
        results[name] = pd.concat(frames, ignore_index=True)
        log.info("%s: %.0f s (training included where it came first)", name, time.perf_counter() - started)
    return results
