"""`python -m pipelines`: compile, submit, schedule and run the MetaHeac pipeline.

    python -m pipelines run-local --output runs/ --param generate_users=5000
    python -m pipelines compile --methods "MetaHeac,MLP one-stage" --shards 4 --publish
    python -m pipelines compile --pipeline expand --shards 4 --campaign-groups 2
    python -m pipelines submit --host http://localhost:8080 --pipeline-root gs://BUCKET/pipeline-root \\
        --service-account metaheac
    python -m pipelines schedule create --host http://localhost:8080 --name nightly --cron "0 0 3 * * *"
    python -m pipelines schedule create --local --cron "0 */10 * * * *" --output runs/ --max-runs 3
    python -m pipelines schedule list --host http://localhost:8080
    python -m pipelines schedule pause --host http://localhost:8080 RECURRING_RUN_ID
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import kfp
from kfp import compiler

from components.spec import CPU_IMAGE, CUDA_IMAGE, GpuScheduling, pinned
from pipelines import cron, remote
from pipelines.dag import TrainingOptions
from pipelines.expansion import ExpansionOptions
from pipelines.local import LOGS, LocalRun, run_local, run_schedule
from pipelines.options import PipelineOptions, build_pipeline

_DEFAULT_GPU = GpuScheduling()
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


# Each pipeline by its --pipeline name; a flag is made of each of its own shape fields.
PIPELINES: dict[str, type[PipelineOptions]] = {"train": TrainingOptions, "expand": ExpansionOptions}


def _shape_fields() -> dict[str, list[tuple[str, dataclasses.Field]]]:
    """Every pipeline's own fields by name, with the pipelines that have each."""
    fields: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for pipeline, options in PIPELINES.items():
        for field in options.own_fields():
            fields.setdefault(field.name, []).append((pipeline, field))
    return fields


def _add_shape_flag(group: argparse._ArgumentGroup, name: str, owners: list[tuple[str, dataclasses.Field]]) -> None:
    kind = get_type_hints(PIPELINES[owners[0][0]])[name]
    text = "; ".join(f"{pipeline}: {field.metadata['help']} (default {field.default!r})" for pipeline, field in owners)
    flag = f"--{name.replace('_', '-')}"
    if kind is bool:
        group.add_argument(flag, action="store_true", default=None, help=text)
    elif get_origin(kind) is Literal:
        group.add_argument(flag, choices=get_args(kind), help=text)
    else:  # parsed by the field's `parse` when it has one (`_options`), else by its type
        group.add_argument(flag, type=kind if kind in (int, float, str) else str, help=text)


def _add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pipeline shape (fixed at compile time)")
    group.add_argument("--pipeline", choices=tuple(PIPELINES), default="train",
                       help="train: the offline stage (train, adapt, evaluate); expand: the online stage "
                       "(every seed set's audience)")
    for name, owners in _shape_fields().items():
        _add_shape_flag(group, name, owners)
    names = " or ".join(options.name for options in PIPELINES.values())
    group.add_argument("--pipeline-name", help=f"the pipeline's name (on a server, versions are uploaded under "
                       f"it; default {names})")
    group.add_argument("--image", help=f"image of the CPU steps: NAME@sha256:..., or a tag, written as the digest "
                       f"the local docker or podman has for it (default {CPU_IMAGE}, as is)")
    group.add_argument("--cuda-image", help=f"image of the GPU steps, the same way (default {CUDA_IMAGE})")
    group.add_argument("--accelerator-type", default=_DEFAULT_GPU.accelerator, help="GPU resource of the train step")
    group.add_argument("--gpus", type=int, help="GPUs of the train task (default: the step's); more than one "
                       "trains data-parallel, one process per GPU")
    group.add_argument("--gpu-node-selector", default="=".join(_DEFAULT_GPU.node_selector),
                       help="LABEL=VALUE of the GPU node pool")
    group.add_argument("--gpu-toleration", default=_DEFAULT_GPU.toleration,
                       help="taint key (effect NoSchedule) of the GPU node pool")
    group.add_argument("--no-cache", action="store_true", help="run every task even when a cached result exists")


def _add_allow_failures(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-failures", action="store_true", help="expand: exit 0 when some campaigns failed "
                        "(default: exit 1, after writing the others' audiences)")


def _add_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a pipeline parameter, e.g. generate_users=5000 (`compile` lists them all)")


def _options(args: argparse.Namespace) -> PipelineOptions:
    """The chosen pipeline's options: the shared shell options and the shape flags given, each of which must be
    one of that pipeline's own fields."""
    options = PIPELINES[args.pipeline]
    own = {field.name: field for field in options.own_fields()}
    shape = {}
    for name, owners in _shape_fields().items():
        text = getattr(args, name)
        if text is None:
            continue
        if name not in own:
            pipelines = " or ".join(f"--pipeline {pipeline}" for pipeline, _ in owners)
            flag = f"--{name.replace('_', '-')}"
            raise ValueError(f"{flag} is an option of {pipelines}, not of --pipeline {args.pipeline}")
        parse = own[name].metadata["parse"]
        shape[name] = parse(text) if parse else text
    label, _, value = args.gpu_node_selector.partition("=")
    return options(
        name=args.pipeline_name or options.name,
        image=pinned(args.image) if args.image else CPU_IMAGE,
        cuda_image=pinned(args.cuda_image) if args.cuda_image else CUDA_IMAGE,
        gpu=GpuScheduling(args.accelerator_type, (label, value), args.gpu_toleration, args.gpus),
        caching=not args.no_cache,
        **shape,
    )


def _coerce(kind: type, name: str, text: str) -> Any:
    if kind is bool:
        if text.lower() not in _TRUE | _FALSE:
            raise ValueError(f"--param {name}: expected true or false, got {text!r}")
        return text.lower() in _TRUE
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--param {name}: expected {kind.__name__}, got {text!r}") from None


def _arguments(options: PipelineOptions, pairs: list[str], render: Callable[[str], str] = str) -> dict[str, Any]:
    """Typed pipeline arguments from NAME=VALUE pairs; `render` rewrites each value first (schedule macros)."""
    kinds = {p.name: p.annotation for p, _ in options.parameters()}
    required = {p.name for p, _ in options.parameters() if p.default is p.empty}
    arguments = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in kinds:
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(kinds))}")
        arguments[name] = _coerce(kinds[name], name, render(text))
    missing = required - set(arguments)
    if missing:
        raise ValueError(f"missing --param for {', '.join(sorted(missing))}")
    return arguments


def _compile(options: PipelineOptions, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(options), str(path))
    return path


def _client(args: argparse.Namespace) -> kfp.Client:
    if not args.host:
        raise ValueError("--host is required to reach a KFP API server")
    return remote.connect(args.host, args.namespace)


def cmd_compile(args: argparse.Namespace) -> None:
    options = _options(args)
    print(_compile(options, Path(args.output)))
    for parameter, text in options.parameters():
        default = "required" if parameter.default is parameter.empty else f"default {parameter.default!r}"
        print(f"  {parameter.name} ({parameter.annotation.__name__}, {default}): {' '.join(text.split())}")


class CampaignsFailed(Exception):
    """An expansion run whose campaigns did not all succeed (exit 1; --allow-failures: 0)."""


def _show_campaigns(summary_html: Path) -> list[dict]:
    """Each campaign of an expansion run on one line, then the counts; returns the campaigns' rows."""
    rows = json.loads(summary_html.with_name("summary.json").read_text())["campaigns"]
    width = max(len(r["campaign"]) for r in rows) + 2
    for row in rows:
        audience = (f"audience {row['audience']:,} users (seeds: {row['seeds_used']:,} known, "
                    f"{row['unknown_seed_uids']:,} unknown)")
        line = {"ok": audience,
                "reused": f"{audience}: nothing changed since it was written",
                "ineligible": f"last audience kept, stale ({row['audience']:,} users): {row['error']}",
                "failed": row["error"]}[row["status"]]
        print(f"  {row['campaign']:<{width}} {row['status']:<10} {line}")
    statuses = ["ok", "failed", *sorted({r["status"] for r in rows} - {"ok", "failed"})]
    print("campaigns: " + ", ".join(f"{sum(r['status'] == k for r in rows)} {k}" for k in statuses))
    if any(r["audience"] for r in rows):
        print(f"audiences: {summary_html.parent / 'audiences'}/<campaign>.parquet (uid, score, rank, tier)")
    return rows


def _show(run: LocalRun, allow_failures: bool = False) -> None:
    """After the task lines: the table or the campaigns once, then where the report, the logs and the run
    are; raises CampaignsFailed after that when a campaign failed and `allow_failures` is not set."""
    for table in run.tables:
        print(f"\n{table.read_text().rstrip()}\n")
        print(f"report: {table.with_name('report.html')}")
    rows = [row for summary in run.summaries for row in _show_campaigns(summary)]
    for summary in run.summaries:
        print(f"summary: {summary} (and summary.json)")
    print(f"logs: {run.folder / LOGS}/<task>.log")
    print(f"run: {run.folder}")
    failed = [r["campaign"] for r in rows if r["status"] == "failed"]
    if failed and not allow_failures:
        written = sum(r["status"] == "ok" for r in rows)
        raise CampaignsFailed(f"{len(failed)} of {len(rows)} campaigns failed ({', '.join(failed)}; reasons above), "
                              f"{written} audiences written: exit 1 (--allow-failures: 0)")


def cmd_run_local(args: argparse.Namespace) -> None:
    options = _options(args)
    arguments = _arguments(options, args.param)
    pipeline = build_pipeline(options)
    print(f"{options.name}: running the pipeline here with kfp.local under {args.output} "
          f"(a task whose inputs and arguments are unchanged since an earlier run is reused)")
    _show(run_local(pipeline, arguments, Path(args.output), options.caching), args.allow_failures)


def cmd_submit(args: argparse.Namespace) -> None:
    options = _options(args)
    arguments = _arguments(options, args.param)
    client = _client(args)
    with tempfile.TemporaryDirectory() as tmp:
        package = _compile(options, Path(tmp) / "pipeline.yaml")
        run = remote.submit(client, package, arguments, args.experiment, args.run_name, args.pipeline_root,
                            args.service_account)
    print(run)


def cmd_schedule_create(args: argparse.Namespace) -> None:
    options = _options(args)
    expression = cron.validate(args.cron)
    if args.local:
        _schedule_local(args, options, expression)
        return
    if not args.name:
        raise ValueError("--name is required for a recurring run on a KFP server")
    schedule = remote.Schedule(
        name=args.name,
        cron=expression,
        experiment=args.experiment,
        arguments=_arguments(options, args.param),
        max_concurrency=args.max_concurrency,
        no_catchup=not args.catchup,
        pipeline_root=args.pipeline_root,
        service_account=args.service_account,
    )
    client = _client(args)
    if args.version_id:
        pipeline_id = client.get_pipeline_id(options.name)
        if pipeline_id is None:
            raise ValueError(f"no pipeline named {options.name!r} on {args.host} (see --pipeline-name)")
        version_id = args.version_id
    else:
        with tempfile.TemporaryDirectory() as tmp:
            package = _compile(options, Path(tmp) / "pipeline.yaml")
            pipeline_id, version_id = remote.upload(client, package, options.name)
    created = remote.create_schedule(client, schedule, pipeline_id, None if args.latest else version_id)
    print(created.recurring_run_id)


def _schedule_local(args: argparse.Namespace, options: PipelineOptions, expression: str) -> None:
    now = dt.datetime.now().astimezone()  # fail now, not at the first fire time, on a malformed --param:
    _arguments(options, args.param, lambda text: cron.substitute(text, 1, now, now))
    pipeline = build_pipeline(options)
    output = Path(args.output)

    def run(index: int, scheduled: dt.datetime) -> Path:
        now = dt.datetime.now().astimezone()
        arguments = _arguments(options, args.param, lambda text: cron.substitute(text, index, scheduled, now))
        print(f"run {index} (scheduled {scheduled.isoformat()}):")
        done = run_local(pipeline, arguments, output, options.caching)
        _show(done, args.allow_failures)
        return done.folder

    succeeded, failed = run_schedule(expression, run, args.max_runs)
    print(f"{succeeded} runs succeeded, {failed} failed")
    if failed:
        raise CampaignsFailed(f"{failed} of {succeeded + failed} scheduled runs failed (their reasons are above)")


def cmd_schedule_list(args: argparse.Namespace) -> None:
    for run in remote.list_schedules(_client(args), args.experiment):
        trigger = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else "-"
        reference = run.pipeline_version_reference
        version = (reference.pipeline_version_id or "latest") if reference else "-"
        print(f"{run.recurring_run_id}\t{run.display_name}\t{run.mode}\t{trigger}\tversion {version}")


def _schedule_action(method: str) -> Callable[[argparse.Namespace], None]:
    def action(args: argparse.Namespace) -> None:
        getattr(_client(args), method)(args.id)
        print(args.id)

    return action


def _add_server(parser: argparse.ArgumentParser, experiment: str | None = "metaheac") -> None:
    parser.add_argument("--host", help="KFP API endpoint, e.g. http://localhost:8080")
    parser.add_argument("--namespace", help="the user namespace of a multi-user KFP")
    parser.add_argument("--experiment", default=experiment, help="KFP experiment")


def _add_run_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline-root", help="where artifacts go, e.g. gs://BUCKET/pipeline-root")
    parser.add_argument("--service-account", help="Kubernetes service account of the run's pods (GCS access)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("compile", help="write the pipeline's IR YAML")
    p.add_argument("--output", default="runs/metaheac-pipeline.yaml", help="YAML file to write")
    _add_pipeline_options(p)
    p.set_defaults(func=cmd_compile)

    p = commands.add_parser("run-local", help="run the whole DAG here with kfp.local")
    p.add_argument("--output", default="runs", help="folder for the run's outputs (local)")
    _add_pipeline_options(p)
    _add_params(p)
    _add_allow_failures(p)
    p.set_defaults(func=cmd_run_local)

    p = commands.add_parser("submit", help="start one run on a KFP server")
    _add_server(p)
    _add_run_settings(p)
    p.add_argument("--run-name", help="display name of the run")
    _add_pipeline_options(p)
    _add_params(p)
    p.set_defaults(func=cmd_submit)

    schedule = commands.add_parser("schedule", help="recurring runs").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    p = schedule.add_parser("create", help="create a recurring run (or, with --local, run one here)")
    p.add_argument("--cron", required=True, help="six fields, seconds first: '0 0 3 * * *' is 03:00 daily")
    p.add_argument("--local", action="store_true", help="run the pipeline here with kfp.local, in the foreground")
    p.add_argument("--output", default="runs", help="--local: folder for the runs, one sub-folder per run id")
    p.add_argument("--max-runs", type=int, help="--local: stop after this many runs (default: never)")
    p.add_argument("--name", help="display name of the recurring run")
    _add_server(p)
    _add_run_settings(p)
    p.add_argument("--max-concurrency", type=int, default=1, help="runs of this schedule at once (1 to 10)")
    p.add_argument("--catchup", action="store_true", help="after a pause, backfill every missed time")
    version = p.add_mutually_exclusive_group()
    version.add_argument("--latest", action="store_true",
                         help="upload this pipeline, then always run the pipeline's latest version")
    version.add_argument("--version-id", help="pin an existing version of the pipeline instead of uploading")
    _add_pipeline_options(p)
    _add_params(p)
    _add_allow_failures(p)
    p.set_defaults(func=cmd_schedule_create)

    p = schedule.add_parser("list", help="list recurring runs")
    _add_server(p, experiment=None)
    p.set_defaults(func=cmd_schedule_list)
    for action, method in (("pause", "disable_recurring_run"), ("resume", "enable_recurring_run"),
                           ("delete", "delete_recurring_run")):
        p = schedule.add_parser(action, help=f"{action} a recurring run")
        p.add_argument("id", help="recurring run id (see `schedule list`)")
        _add_server(p, experiment=None)
        p.set_defaults(func=_schedule_action(method))
    return parser


def _interrupt(number: int, frame: object) -> None:
    """`kill PID` as Ctrl-C: the run's logs go to its folder, and kfp.local does not wait for its task (as it
    would on any other exception); kill -9 cannot be caught."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except CampaignsFailed as error:
        print(f"python -m pipelines: error: {error}", file=sys.stderr)
        return 1
    except (ValueError, ConnectionError, RuntimeError) as error:
        print(f"python -m pipelines: error: {error}", file=sys.stderr)
        return 2
    return 0
