"""The shells' help: its examples work as written and its summaries are whole sentences."""

from __future__ import annotations

import argparse
import shlex

import pytest

from metaheac.cli import build_parser as metaheac_parser
from metaheac.steps.catalog import STEPS
from pipelines import cli, cron


def _examples() -> list[str]:
    lines = (cli.__doc__ or "").replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip().startswith("python -m pipelines ")]


@pytest.mark.parametrize("example", _examples())
def test_pipelines_help_examples_parse_and_name_real_methods(example: str) -> None:
    args = cli.build_parser().parse_args(shlex.split(example)[3:])
    if hasattr(args, "methods"):
        cli._options(args)  # an unknown method name fails here
    if getattr(args, "cron", None):
        cron.validate(args.cron)
    for param in getattr(args, "param", []):
        assert "=" in param


def test_the_help_shows_its_examples() -> None:
    assert len(_examples()) >= 6
    assert all(example in cli.build_parser().format_help() for example in _examples()[:1])


def test_metaheac_help_summaries_are_whole_sentences() -> None:
    parser = metaheac_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    summaries = {choice.dest: choice.help for choice in sub._choices_actions}
    assert set(summaries) == set(STEPS)
    for name, summary in summaries.items():
        assert summary and summary.endswith((".", ")")), f"{name}: {summary!r}"
        assert summary == " ".join((STEPS[name].__doc__ or "").split("\n\n")[0].split())
