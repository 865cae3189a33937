"""The `generate` and `preprocess` steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from metaheac import storage
from metaheac.data.config import PreprocessConfig
from metaheac.data.errors import InputError
from metaheac.data.official import import_official
from metaheac.data.preprocess import preprocess_raw
from metaheac.steps.base import Step, arg

_DEFAULTS = PreprocessConfig()


@dataclass
class Generate(Step):
    """Write a synthetic dataset in the raw Tencent Look-alike format, with planted structure."""

    name: ClassVar[str] = "generate"
    output: str = arg(help="folder (local or gs://) to write userFeature.data, adFeature.csv, train.csv, "
                      "test1_truth.csv into")
    users: int = arg(20_000, help="number of users")
    campaigns: int = arg(64, help="number of campaigns")
    seed: int = arg(2020, help="random seed: the same seed writes the same files")
    setting: str = arg("", help="a named preset of the audience structure: transfer or specific "
                       "(empty: the plain defaults)")

    def run(self) -> dict:
        from metaheac.data.synthetic import generate, setting_config

        try:
            config = setting_config(self.setting, users=self.users, campaigns=self.campaigns, seed=self.seed)
        except ValueError as error:
            raise InputError(f"--setting: {error}") from None
        return generate(self.output, config)


@dataclass
class Preprocess(Step):
    """Turn raw Tencent files (or the official processed pickles) into the canonical dataset."""

    name: ClassVar[str] = "preprocess"
    memory_gb: ClassVar[int] = 16
    input: str = arg(help="folder (local, gs:// or /gcs/) holding the input files")
    output: str = arg(help="dataset folder to write (local, gs:// or /gcs/); published atomically")
    source: Literal["raw", "official"] = arg("raw", help="raw Tencent files, or the official pickles")
    cold_threshold: int = arg(_DEFAULTS.cold_threshold, help="test campaigns with at most this many seed "
                              "positives are cold (the paper's T); -1: the test campaigns' median")
    test_fraction: float = arg(_DEFAULTS.test_fraction, help="share of campaigns held out for testing")
    seed: int = arg(_DEFAULTS.seed, help="seed of the train/test campaign split")
    on_error: Literal["fail", "skip"] = arg(_DEFAULTS.on_error, help="on a malformed line: stop with its "
                                            "file and line, or skip it and count it in the provenance")
    allow_pickle: bool = arg(False, help="allow unpickling the official pickles (runs code from the files: "
                             "only for files you trust)")

    def config(self) -> PreprocessConfig:
        return dataclasses.replace(
            _DEFAULTS,
            cold_threshold=self.cold_threshold,
            test_fraction=self.test_fraction,
            seed=self.seed,
            on_error=self.on_error,
        )

    def run(self) -> dict:
        output = storage.normalize(self.output)
        if self.source == "official":
            return import_official(self.input, output, self.config(), allow_pickle=self.allow_pickle)
        return preprocess_raw(self.input, output, self.config())
