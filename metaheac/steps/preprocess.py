"""The `generate` and `preprocess` steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from metaheac.data.config import PreprocessConfig
from metaheac.data.errors import InputError, as_input_error
from metaheac.data.official import import_official
from metaheac.data.preprocess import preprocess_raw
from metaheac.data.spec import TablesSpec, load_spec
from metaheac.data.tables import preprocess_tables
from metaheac.runtime.memory import GENERATE_BYTES_PER_ROW, GENERATE_BYTES_PER_USER, check_fits
from metaheac.runtime.outputs import claim
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
            summary = generate(output, config)
        # the generator's split of all campaigns at their median; preprocess picks its own threshold (the
        # median of its test campaigns), and a second number would only disagree with it
        return {k: v for k, v in summary.items() if k not in ("suggested_cold_threshold", "cold_campaigns",
                                                              "hot_campaigns")}


@dataclass
class Preprocess(Step):
    """Turn an advertiser's tables (a spec naming users, campaigns and events), the raw Tencent files or the
    official processed pickles into the canonical dataset."""

    name: ClassVar[str] = "preprocess"
    artifacts: ClassVar = {"input": Artifact("Dataset"), "output": Artifact("Dataset", output=True)}
    resources: ClassVar = Resources(memory_gb=16)
    output: str = arg(help="dataset folder to write (local, gs:// or /gcs/); published atomically")
    input: str | None = arg(None, help="folder (local, gs:// or /gcs/) holding the raw Tencent files or the "
                            "official pickles; with --source tables, the folder holding the tables the spec names "
                            "by relative paths (default: the spec's folder)")
    source: Literal["raw", "official", "tables"] = arg("raw", help="raw Tencent files, the official pickles, "
                                                       "or the tables a --spec names")
    spec: str | None = arg(None, help="with --source tables: the spec file (YAML or JSON, local or gs://) naming "
                           "the users, campaigns and events tables and how to read them")
    cold_threshold: int | None = arg(None, help="test campaigns with at most this many seed positives are "
                                     "cold (the paper's T; default: the spec's, else the median seed-positive count "
                                     "of the test campaigns, so both kinds exist; the paper uses 2000 on the real "
                                     "Tencent data)", minimum=MEDIAN)  # -1: the median, as not given
    test_fraction: float | None = arg(None, help="share of campaigns held out for testing (default: the spec's, "
                                      f"else {_DEFAULTS.test_fraction})",
                                      minimum=0, maximum=1, strict=True)  # both splits exist
    seed: int | None = arg(None, help=f"seed of the train/test campaign split (default: the spec's, else "
                           f"{_DEFAULTS.seed})")
    on_error: Literal["fail", "skip"] = arg(_DEFAULTS.on_error, help="on a malformed line: stop with its "
                                            "file and line, or skip it and count it in the provenance (with "
                                            "--source tables, a spec's `on_error: skip` skips too)")
    allow_pickle: bool = arg(False, help="allow unpickling the official pickles (runs code from the files: "
                             "only for files you trust)")
    overwrite: bool = arg(False, help="replace an existing output of another metaheac step")

    def config(self) -> PreprocessConfig:
        return dataclasses.replace(
            _DEFAULTS,
            cold_threshold=MEDIAN if self.cold_threshold is None else self.cold_threshold,
            test_fraction=_DEFAULTS.test_fraction if self.test_fraction is None else self.test_fraction,
            seed=_DEFAULTS.seed if self.seed is None else self.seed,
            on_error=self.on_error,
        )

    def tables_spec(self, uri: str) -> TablesSpec:
        """The spec at `uri`, with the arguments given here in place of its own."""
        spec = load_spec(uri, self.input)
        split = dataclasses.replace(
            spec.split,
            seed=spec.split.seed if self.seed is None else self.seed,
            test_fraction=spec.split.test_fraction if self.test_fraction is None else self.test_fraction,
        )
        return dataclasses.replace(
            spec,
            split=split,
            cold_threshold=spec.cold_threshold if self.cold_threshold is None else self.cold_threshold,
            on_error="skip" if self.on_error == "skip" else spec.on_error,
        )

    def run(self) -> dict:
        if self.source == "tables":
            if self.spec is None:
                raise InputError("--source tables needs --spec SPEC: the file naming the tables and how to read them")
            spec = self.tables_spec(self.spec)
            inputs = [self.spec, *spec.table_uris, *([self.input] if self.input else [])]
            with claim(self.output, self.name, inputs, self.overwrite) as output:
                return preprocess_tables(self.spec, output, spec=spec)
        if self.input is None:
            raise InputError(f"--source {self.source} needs --input: the folder holding the input files")
        with claim(self.output, self.name, [self.input], self.overwrite) as output:
            if self.source == "official":
                return import_official(self.input, output, self.config(), allow_pickle=self.allow_pickle)
            return preprocess_raw(self.input, output, self.config())
