"""Every step by name: the CLI's sub-commands and the pipeline components."""

from __future__ import annotations

from metaheac.steps.base import Step
from metaheac.steps.demo import Demo
from metaheac.steps.engine import Adapt, Evaluate, Expand, Train
from metaheac.steps.preprocess import Generate, Preprocess

STEPS: dict[str, type[Step]] = {
    step.name: step for step in (Generate, Preprocess, Train, Adapt, Evaluate, Expand, Demo)
}
