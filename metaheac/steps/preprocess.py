"""The `generate` and `preprocess` steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from metaheac.data.config import PreprocessConfig
from metaheac.data.errors import as_input_error
from metaheac.data.official import import_official
from metaheac.data.preprocess import preprocess_raw
from metaheac.memory import GENERATE_BYTES_PER_ROW, GENERATE_BYTES_PER_USER, check_fits
from metaheac.outputs import claim
from metaheac.steps.base import Artifact, Resources, Step, arg

_DEFAULTS = PreprocessConfig()
MEDIAN = -1  # PreprocessConfig's "the test campaigns' median"


@dataclass
class Generate(Step):
    """Write a synthetic dataset in the raw Tencent Look-alike format, with planted structure."""

    name: ClassVar[str] = "generate"
    artifacts: ClassVar = {"output": Artifact("Dataset", output=True)}
    output: str = arg(help="folder (local or gs://) to write userFeature.data, adFeature.csv, train.csv, "
                      "test1_truth.csv into")
    users: int = arg(20_000, help="number of users")
    campaigns: int = arg(64, help="number of campaigns")
    seed: int = arg(2020, help="random seed: the same seed writes the same files")
    setting: str | None = arg(None, help="a named preset of the audience structure: transfer or specific "
                              "(default: the plain defaults)")
    overwrite: bool = arg(False, help="replace an existing output of another metaheac step")

    def run(self) -> dict:
        from metaheac.data.synthetic import generate, setting_config

        with as_input_error("--setting, --users or --campaigns: "):
            config = setting_config(self.setting or "", users=self.users, campaigns=self.campaigns, seed=self.seed)
        rows = config.campaigns * config.mean_rows_per_campaign * (1 + config.stage2_fraction)
        check_fits(f"generating {config.users:,} users and about {rows:,.0f} rows",
                   int(config.users * GENERATE_BYTES_PER_USER + rows * GENERATE_BYTES_PER_ROW))
        with claim(self.output, self.name, overwrite=self.overwrite) as output:
            return generate(output, config)


@dataclass
class Preprocess(Step):
    """Turn raw Tencent files (or the official processed pickles) into the canonical dataset."""

    name: ClassVar[str] = "preprocess"
    artifacts: ClassVar = {"input": Artifact("Dataset"), "output": Artifact("Dataset", output=True)}
    resources: ClassVar = Resources(memory_gb=16)
    input: str = arg(help="folder (local, gs:// or /gcs/) holding the input files")
    output: str = arg(help="dataset folder to write (local, gs:// or /gcs/); published atomically")
    source: Literal["raw", "official"] = arg("raw", help="raw Tencent files, or the official pickles")
    cold_threshold: int | None = arg(None, help="test campaigns with at most this many seed positives are "
                                     "cold (the paper's T; default: the median seed-positive count of the test "
                                     "campaigns, so both kinds exist; the paper uses 2000 on the real Tencent data)")
    test_fraction: float = arg(_DEFAULTS.test_fraction, help="share of campaigns held out for testing")
    seed: int = arg(_DEFAULTS.seed, help="seed of the train/test campaign split")
    on_error: Literal["fail", "skip"] = arg(_DEFAULTS.on_error, help="on a malformed line: stop with its "
                                            "file and line, or skip it and count it in the provenance")
    allow_pickle: bool = arg(False, help="allow unpickling the official pickles (runs code from the files: "
                             "only for files you trust)")
    overwrite: bool = arg(False, help="replace an existing output of another metaheac step")

    def config(self) -> PreprocessConfig:
        return dataclasses.replace(
            _DEFAULTS,
            cold_threshold=MEDIAN if self.cold_threshold is None else self.cold_threshold,
            test_fraction=self.test_fraction,
            seed=self.seed,
            on_error=self.on_error,
        )

    def run(self) -> dict:
        with claim(self.output, self.name, [self.input], self.overwrite) as output:
            if self.source == "official":
                return import_official(self.input, output, self.config(), allow_pickle=self.allow_pickle)
            return preprocess_raw(self.input, output, self.config())
