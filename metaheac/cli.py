"""The one command-line entry point: `metaheac <step> --arg value ...`, generated from the steps."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from metaheac.data.errors import InputError
from metaheac.runtime.cpus import use_cpu_limit
from metaheac.runtime.storage import StorageError, disk_full_error, is_disk_full
from metaheac.steps.base import Argument, Step
from metaheac.steps.catalog import STEPS


def _add(parser: argparse.ArgumentParser, argument: Argument) -> None:
    if argument.kind is bool:
        parser.add_argument(argument.flag, action="store_true", help=argument.help.replace("%", "%%"))
        return
    default = None if argument.required else argument.default
    # an optional argument's help says what happens when it is not given
    suffix = "" if argument.required or argument.optional else f" (default: {default})"
    parser.add_argument(
        argument.flag,
        type=argument.kind,
        required=argument.required,
        default=default,
        choices=argument.choices,
        help=(argument.help + suffix).replace("%", "%%"),  # argparse formats help with %
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI; with `only`, just that step's sub-command (so other steps' libraries are not imported)."""
    parser = argparse.ArgumentParser(prog="metaheac", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for step in [STEPS[only]] if only else STEPS.values():
        doc = (step.__doc__ or "").strip()
        summary = " ".join(doc.split("\n\n")[0].split())  # the whole first paragraph, not its first line
        child = sub.add_parser(step.name, help=summary, description=doc)
        for argument in step.arguments():
            _add(child, argument)
    return parser


def parse_step(argv: list[str]) -> Step:
    """The step the arguments name, built from them (and logging set up as they ask)."""
    named = [a for a in argv if not a.startswith("-")][:1]
    namespace = vars(build_parser(named[0] if named and named[0] in STEPS else None).parse_args(argv))
    logging.basicConfig(
        level=logging.DEBUG if namespace.pop("verbose") else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return STEPS[namespace.pop("step")](**namespace)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        step = parse_step(argv)
    except InputError as error:  # an argument out of its bounds
        print(f"metaheac {next((a for a in argv if a in STEPS), '')}: error: {error}", file=sys.stderr)
        return 2
    use_cpu_limit()  # a pod's CPU request, not its node's cores
    try:
        result = step.run()
    except (InputError, StorageError, OSError) as error:  # bad input or arguments, storage: one line; a bug: traceback
        if not isinstance(error, InputError | StorageError) and not is_disk_full(error):
            raise
        if logging.getLogger().isEnabledFor(logging.DEBUG):  # -v: the whole traceback
            raise
        if not isinstance(error, InputError | StorageError):  # a full disk, written outside `storage`
            error = disk_full_error(str(getattr(step, "output", "") or "the output"), error)
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank fails alike: one line in all
            print(f"metaheac {step.name}: error: {error}", file=sys.stderr)
        return 2
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        print(json.dumps(result, indent=2, default=str))
    elif int(os.environ.get("RANK", "0")) == 0:  # under torchrun: one line for the job, not one per rank
        print(summary_line(step.name, result))
    return 0


def summary_line(step: str, result: dict) -> str:
    """The step's result in one line: its scalar values; the nested ones are named, and -v prints them."""
    scalars = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
                        if not isinstance(v, dict | list | tuple))
    nested = [k for k, v in result.items() if isinstance(v, dict | list | tuple)]
    more = f" (with -v also: {', '.join(nested)})" if nested else ""
    return f"metaheac {step}: done: {scalars}{more}"


if __name__ == "__main__":
    sys.exit(main())
