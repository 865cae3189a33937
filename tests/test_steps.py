"""The steps through the CLI, on a small generated dataset: the chain, its outputs, and expand's errors."""

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest

from metaheac.cli import main, parse_step
from metaheac.data.dataset import load_campaign_frame, load_schema
from metaheac.data.errors import InputError
from metaheac.recommended.config import RecommendedConfig
from metaheac.recommended.topics import TopicConfig
from metaheac.steps.base import Step, arg
from metaheac.steps.catalog import STEPS
from metaheac.steps.engine import (
    CPU_TRAIN_MEMORY_GB,
    Adapt,
    Evaluate,
    Train,
    cpu_train_memory_gb,
    empty_split_notes,
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """generate -> preprocess -> train (LR, MetaHeac) -> adapt (2 shards) -> evaluate, all through `main`."""
    root = tmp_path_factory.mktemp("chain")
    raw, dataset = root / "raw", root / "dataset"
    assert main(["generate", "--output", str(raw), "--users", "1500", "--campaigns", "12", "--seed", "3"]) == 0
    assert main(["preprocess", "--input", str(raw), "--output", str(dataset), "--cold-threshold", "15"]) == 0
    scores = []
    for method in ("LR", "MetaHeac"):
        model = root / method
        assert main(["train", "--dataset", str(dataset), "--output", str(model), "--method", method,
                     "--max-steps", "3", "--embedding-dim", "8", "--device", "cpu"]) == 0
        for shard in (0, 1):
            scores.append(root / f"scores-{method}-{shard}")
            assert main(["adapt", "--dataset", str(dataset), "--model", str(model), "--output", str(scores[-1]),
                         "--shard", str(shard), "--shards", "2", "--device", "cpu"]) == 0
    assert main(["evaluate", "--scores", ",".join(map(str, scores)), "--output", str(root / "eval")]) == 0
    return root, dataset


def test_chain_writes_metrics_table_and_report(chain):
    root, dataset = chain
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert list(metrics) == ["LR", "MetaHeac"]
    test_campaigns = (load_campaign_frame(str(dataset))["split"] != "train").sum()
    assert metrics["MetaHeac"]["cold"]["campaigns"] + metrics["MetaHeac"]["hot"]["campaigns"] == test_campaigns
    assert "MetaHeac" in (root / "eval" / "table.txt").read_text()
    assert (root / "eval" / "report.html").read_text().count("<img") >= 3
    config = json.loads((root / "MetaHeac" / "config.json").read_text())
    assert config["method"] == "MetaHeac" and config["extra"]["meta_config"]["max_steps"] == 3
    phases = config["extra"]["phases"]
    assert [p["name"] for p in phases] == ["load data", "meta-training"]
    assert all(p["seconds"] > 0 and p["cpu_seconds"] > 0 and p["peak_rss_gb"] > 0 for p in phases)
    shards = [pd.read_parquet(root / f"scores-MetaHeac-{s}" / "scores.parquet") for s in (0, 1)]
    assert not set(shards[0]["campaign"]) & set(shards[1]["campaign"])  # shards split the campaigns


def test_expand_excludes_seeds_and_counts_unknown_uids(chain, tmp_path):
    root, dataset = chain
    users = pd.read_parquet(dataset / "users.parquet", columns=["uid"])["uid"]
    (tmp_path / "seeds.txt").write_text("\n".join(map(str, [*users[:20], 999_999_999_999])) + "\n")
    aid = int(load_campaign_frame(str(dataset))["aid"].iloc[0])
    out = tmp_path / "audience.parquet"

    def expand(output: Path) -> int:
        return main(["expand", "--dataset", str(dataset), "--model", str(root / "MetaHeac"), "--seeds",
                     str(tmp_path / "seeds.txt"), "--aid", str(aid), "--top-n", "50", "--output", str(output),
                     "--device", "cpu", "--min-seeds", "20"])

    assert expand(out) == 0
    audience = pd.read_parquet(out)
    assert list(audience.columns) == ["uid", "score", "rank"] and audience["rank"].tolist() == list(range(1, 51))
    assert len(audience) == 50 and audience["score"].is_monotonic_decreasing
    assert not set(audience["uid"]) & set(users[:20])
    assert expand(out) == 0  # its own audience: replaced, as a step replaces its own folder
    audience.to_parquet(tmp_path / "foreign.parquet")
    assert expand(tmp_path / "foreign.parquet") == 2  # a file it did not write: only with --overwrite


def test_expand_takes_the_same_request_as_expand_shard(chain, tmp_path):
    """Tiers, exclusion lists and the seed minimum, parsed and applied by the same code as the pipeline's."""
    root, dataset = chain
    users = pd.read_parquet(dataset / "users.parquet", columns=["uid"])["uid"]
    (tmp_path / "seeds.txt").write_text("\n".join(map(str, users[:40])) + "\n")
    pd.DataFrame({"user_id": users[100:130]}).to_parquet(tmp_path / "optouts.parquet")
    aid = int(load_campaign_frame(str(dataset))["aid"].iloc[0])
    out = tmp_path / "audience.parquet"
    argv = ["expand", "--dataset", str(dataset), "--model", str(root / "MetaHeac"), "--seeds",
            str(tmp_path / "seeds.txt"), "--aid", str(aid), "--output", str(out), "--device", "cpu",
            "--tiers", "20,60", "--exclude", f"{tmp_path / 'optouts.parquet'}#user_id"]
    assert main([*argv, "--min-seeds", "41"]) == 2 and not out.exists()
    assert main([*argv, "--min-seeds", "40"]) == 0
    audience = pd.read_parquet(out)
    assert list(audience.columns) == ["uid", "score", "rank", "tier"] and len(audience) == 60
    assert audience["tier"].astype(str).tolist() == ["20"] * 20 + ["60"] * 40
    assert not set(audience["uid"]) & (set(users[:40]) | set(users[100:130]))


@pytest.mark.parametrize(
    ("seeds", "extra", "message"),
    [
        ("", [], "empty"),
        ("1\n2\n", [], "none of the"),
        (None, ["--top-n", "10000000", "--allow-small-seeds"], "top_n"),
        (None, [], "2 known seed users (distinct, 0 unknown uids not counted), below the minimum of 100"),
        (None, ["--tiers", "5%,1%", "--allow-small-seeds"], "--tiers: tiers must increase"),
        (None, ["--ad-fields", "advertiserId=1"], "exactly one of --aid"),
        ("12x\n", [], "one integer uid"),
    ],
)
def test_expand_errors_are_one_line(chain, tmp_path, capsys, seeds, extra, message):
    root, dataset = chain
    users = pd.read_parquet(dataset / "users.parquet", columns=["uid"])["uid"]
    (tmp_path / "seeds.txt").write_text(seeds if seeds is not None else f"{users[0]}\n{users[1]}\n")
    aid = int(load_campaign_frame(str(dataset))["aid"].iloc[0])
    code = main(["expand", "--dataset", str(dataset), "--model", str(root / "MetaHeac"), "--seeds",
                 str(tmp_path / "seeds.txt"), "--aid", str(aid), "--output", str(tmp_path / "a.parquet"),
                 "--device", "cpu", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err.lower()
    assert not (tmp_path / "a.parquet").exists()


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert main(["preprocess", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metaheac preprocess: error: missing input file") and len(err.splitlines()) == 1


@pytest.mark.parametrize("step", [Train(dataset="d", output="o", method="LR", max_steps=2),
                                  Adapt(dataset="d", model="m", output="o", shard=1, shards=3),
                                  Evaluate(scores="a,b", output="o")])
def test_to_argv_round_trips_through_the_cli(step):
    assert parse_step(step.to_argv()) == step


def test_optional_arguments_are_none_unless_given():
    step = parse_step(["train", "--dataset", "d", "--output", "o"])
    assert step.max_steps is None and step.checkpoint is None
    assert "--max-steps" not in step.to_argv() and "--checkpoint" not in step.to_argv()
    assert parse_step(["train", "--dataset", "d", "--output", "o", "--max-steps", "5"]).max_steps == 5
    with pytest.raises(InputError, match="^--max-steps 0: must be >= 1$"):  # checked as the step is made
        parse_step(["train", "--dataset", "d", "--output", "o", "--max-steps", "0"])
    (max_steps,) = [a for a in Train.arguments() if a.name == "max_steps"]
    assert (max_steps.kind, max_steps.optional, max_steps.required) == (int, True, False)
    with pytest.raises(SystemExit):
        parse_step(["train", "--dataset", "d", "--output", "o", "--max-steps", "many"])


def test_a_step_argument_type_the_shells_cannot_carry_is_refused():
    @dataclasses.dataclass
    class Odd(Step):
        name: ClassVar[str] = "odd"
        flag: bool | None = arg(None, help="an optional flag")

    with pytest.raises(TypeError, match="step argument flag"):
        Odd.arguments()


def test_only_meta_training_gets_a_gpu_and_cpu_memory_fits_the_dataset(chain, tmp_path):
    _, dataset = chain
    assert Train.resources_for({"method": "MetaHeac", "dataset": str(dataset)}).gpu == 1
    for method in ("LR", "MLP+pre-training", "MetaHeac w/o Meta"):
        resources = Train.resources_for({"method": method, "dataset": str(dataset)})
        assert resources.gpu == 0 and 2 <= resources.memory_gb < CPU_TRAIN_MEMORY_GB  # a tiny dataset
    unread = Train.resources_for({"method": "LR", "dataset": str(tmp_path / "not-yet")})
    assert unread.memory_gb == CPU_TRAIN_MEMORY_GB
    schema = load_schema(str(dataset))
    schema.provenance["counts"]["users"] = 11_000_000  # the Tencent data's users: GBs of ids
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "schema.json").write_text(schema.to_json())
    assert cpu_train_memory_gb(str(tmp_path / "big")) > 4


def test_train_settings_change_the_methods_own_config_and_are_saved(chain, tmp_path, capsys):
    _, dataset = chain
    settings = '{"residual_lr": false, "topics": {"topics": 4}}'
    step = parse_step(["train", "--dataset", "d", "--output", "o", "--settings", settings])
    assert step.method_settings() == RecommendedConfig(residual_lr=False, topics=TopicConfig(topics=4))
    assert Train(dataset="d", output="o").method_settings() is None  # the method's defaults
    for bad, message in (('{"residual": false}', "residual"), ("[1]", "JSON object"), ("{", "--settings")):
        assert main(["train", "--dataset", str(dataset), "--output", str(tmp_path / "bad"), "--settings", bad]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["train", "--dataset", str(dataset), "--output", str(tmp_path / "lr"), "--method", "LR",
                 "--settings", '{"residual_lr": false}', "--device", "cpu"]) == 2  # LR has no settings of its own
    assert "LR has no settings" in capsys.readouterr().err


def test_an_empty_split_says_why():
    scores = {"LR": pd.DataFrame({"campaign": [1], "user": [1], "label": [1], "score": [0.5], "split": ["test_cold"]})}
    (note,) = empty_split_notes(scores, 2000)
    assert note.startswith("hot: no campaigns, no test campaign has more seed positives than the cold threshold (2000)")
    assert empty_split_notes({"LR": scores["LR"].assign(split="test_hot")}, None)[0].startswith("cold: no campaigns")
    assert not empty_split_notes({"LR": pd.concat([scores["LR"], scores["LR"].assign(split="test_hot")])}, 5)


def test_every_step_has_help_for_every_argument():
    for step in STEPS.values():
        assert step.__doc__ and all(argument.help for argument in step.arguments()), step.name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "nowhere", "--output", "o", "--method", "Foo"], "unknown method 'Foo'"),
        (["adapt", "--dataset", "nowhere", "--model", "m", "--output", "o", "--shard", "3", "--shards", "2"],
         "--shard 3 is not in 0..1"),
        (["demo", "--methods", "LR,Foo"], "unknown method 'Foo'"),
    ],
)
def test_argument_mistakes_fail_before_any_work_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_another_networks_checkpoint_is_refused_a_finished_model_is_replaced(chain, tmp_path, capsys):
    root, dataset = chain
    argv = ["train", "--dataset", str(dataset), "--output", str(tmp_path / "m"), "--max-steps", "2",
            "--embedding-dim", "8", "--device", "cpu"]
    checkpoint = ["--checkpoint", str(tmp_path / "checkpoint")]
    assert main([*argv, *checkpoint]) == 0
    assert main([*argv[:-4], "--embedding-dim", "4", "--device", "cpu", *checkpoint]) == 2  # resumes it
    assert "trained with other network" in capsys.readouterr().err
    assert main(argv) == 0  # a finished run leaves no checkpoint in its output: another network trains over it
    assert main([*argv[:-4], "--embedding-dim", "4", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"]["embedding_dim"] == 4
    assert not (tmp_path / "m" / "checkpoint").exists()
