"""The `demo` step: the whole chain in one process, on generated data, with the pipeline's own steps."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import ClassVar

from metaheac.data.errors import as_input_error
from metaheac.method_names import parse_methods
from metaheac.runtime import storage
from metaheac.runtime.outputs import claim
from metaheac.steps.base import Step, arg
from metaheac.steps.engine import Adapt, Evaluate, Train
from metaheac.steps.preprocess import Generate, Preprocess


def slug(method: str) -> str:
    """A method's name as a folder name: 'MLP+pre-training' -> 'mlp-pre-training'."""
    return re.sub(r"[^a-z0-9]+", "-", method.lower()).strip("-")


@dataclass
class Demo(Step):
    """Generate a synthetic dataset, preprocess it, train and adapt every method, evaluate: the paper's table."""

    name: ClassVar[str] = "demo"
    output: str = arg("runs/demo", help="folder for this run's data, models, scores and report (a new run-* inside)")
    users: int = arg(20_000, help="synthetic users")
    campaigns: int = arg(64, help="synthetic campaigns")
    methods: str = arg("all", help="comma-separated method names, or all")
    epochs: int = arg(1, help="training epochs of every general model", minimum=1)
    seed: int = arg(2020, help="seeds the data, the split, the initialisations and the adaptation")
    device: str = arg("auto", help="auto (CUDA when present), cpu or cuda")

    def run(self) -> dict:
        started = time.perf_counter()
        with as_input_error():
            methods = parse_methods(self.methods)
        with claim(storage.join(self.output, time.strftime("run-%Y%m%d-%H%M%S")), self.name) as run:
            return self.demo(methods, run, started)

    def demo(self, methods: list[str], run: str, started: float) -> dict:
        raw, dataset = storage.join(run, "raw"), storage.join(run, "dataset")
        Generate(output=raw, users=self.users, campaigns=self.campaigns, seed=self.seed).run()
        Preprocess(input=raw, output=dataset, seed=self.seed).run()
        scores = []
        for method in methods:
            model = storage.join(run, "models", slug(method))
            Train(dataset=dataset, output=model, method=method, epochs=self.epochs, seed=self.seed,
                  device=self.device).run()
            scores.append(storage.join(run, "scores", slug(method)))
            Adapt(dataset=dataset, model=model, output=scores[-1], seed=self.seed, device=self.device).run()
        result = Evaluate(scores=",".join(scores), output=storage.join(run, "evaluation"), dataset=dataset,
                          title=f"MetaHeac demo: {self.users:,} synthetic users, {self.campaigns} campaigns").run()
        return {**result, "run": run, "seconds": round(time.perf_counter() - started, 1)}
