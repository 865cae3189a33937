"""The whole pipeline on this machine with `kfp.local`, once or on a cron schedule in the foreground.

Every task runs as a subprocess of this Python (SubprocessRunner without a venv: the tasks' image is
ignored, their code comes from this environment). kfp.local turns the pipeline root into a local path (a
gs:// root would become a folder named "gs:"), so a local run always writes under a local folder, one
folder per run: <output>/<pipeline>-<time>/<task>/<output name>, and <output>/<pipeline>-<time>/logs/.

kfp.local prints each task's executor input and its whole output; here that goes to one log file per task
(logs/<task>.log) and the console gets one line per task. kfp.local 2.16 has no cache, so the components reuse
an unchanged step's result from an earlier run under the same output folder (metaheac/steps/reuse.py);
2.17's cache would replace it, but kfp 2.17 cannot be installed beside TorchX 0.7 (bench/README.md,
"kfp 2.17.3").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kfp import local
from kfp.dsl.graph_component import GraphComponent

from metaheac.steps import reuse
from pipelines import cron

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
# Every step has outputs. kfp.local says a task has none when it wrote no executor output: with the Docker
# API of podman, a container that failed can be removed (auto_remove) before its exit status is read, and
# kfp.local then counts it a success.
_NO_OUTPUTS = re.compile(r"Task '([^']+)' has no outputs")
LOST = "LOST"
LOGS = "logs"


@dataclass
class TaskLine:
    """One task of a local run, as the console shows it."""

    name: str
    status: str  # kfp.local's: SUCCESS or FAILURE
    seconds: float
    method: str = "-"
    reused: bool = False

    def __str__(self) -> str:
        state = "reused" if self.reused else ("ran" if self.status == "SUCCESS" else self.status.lower())
        return f"  {self.name:<34} {self.method:<27} {self.seconds:7.1f} s  {state}"


@dataclass
class LocalRun:
    folder: Path
    tasks: list[TaskLine] = field(default_factory=list)

    @property
    def tables(self) -> list[Path]:
        return sorted(self.folder.glob("evaluate*/output/table.txt"))

    @property
    def summaries(self) -> list[Path]:
        return sorted(self.folder.glob("merge-audiences*/output/summary.html"))


class _TaskLogs(io.TextIOBase):
    """kfp.local's console output split into one file per task (and pipeline.log for the rest), reporting
    each finished task to `done(name, status, seconds)`."""

    def __init__(self, folder: Path, done: Callable[[str, str, float], None]) -> None:
        self.folder, self.done = folder, done
        folder.mkdir(parents=True, exist_ok=True)
        self._pending = ""
        self._task: str | None = None
        self._started = 0.0
        self._files: dict[str, TextIO] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def _line(self, line: str) -> None:
        if started := _STARTED.search(line):
            self._task, self._started = started[1], time.perf_counter()
        name = self._task or "pipeline"
        if name not in self._files:
            self._files[name] = (self.folder / f"{name}.log").open("a")
        self._files[name].write(line + "\n")
        finished = _FINISHED.search(line)
        if finished and self._task:
            self._files[name].flush()
            self.done(self._task, finished[2], time.perf_counter() - self._started)
            self._task = None
        if lost := _NO_OUTPUTS.search(line):
            self.done(lost[1], LOST, 0.0)

    def close(self) -> None:
        if self._pending:
            self._line(self._pending)
        for stream in self._files.values():
            stream.close()
        super().close()


def _task_line(run_root: Path, pipeline: str, name: str, status: str, seconds: float) -> TaskLine:
    folders = sorted(run_root.glob(f"{pipeline}-*/{name}/{reuse.TASK_FILE}"), key=lambda p: p.stat().st_mtime)
    note = json.loads(folders[-1].read_text()) if folders else {}
    return TaskLine(name, status, seconds, note.get("method") or "-", bool(note.get("reused")))


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _runner(containers: bool, environment: dict[str, str]) -> local.SubprocessRunner | local.DockerRunner:
    if not containers:
        return local.SubprocessRunner(use_venv=False)
    # kfp.local mounts the pipeline root at its own path. The image's user (uid 10001) could not write a
    # folder of this machine's user, so the task runs as that user, HOME where any user may write.
    return local.DockerRunner(user=f"{os.getuid()}:{os.getgid()}", environment={**environment, "HOME": "/tmp"})


def run_local(pipeline: GraphComponent, arguments: dict[str, Any], root: Path, caching: bool = True,
              echo: Callable[[str], None] | None = None, containers: bool = False) -> LocalRun:
    """Run the whole DAG in a new folder under `root`, echoing one line per finished task (to stdout by
    default); returns the run. A failed task raises RuntimeError naming it, its error line and its log file.
    `containers`: each task in its image through the Docker API (DOCKER_HOST; podman serves one too)."""
    console = sys.stdout  # kfp.local's own output goes to the task logs below
    say = echo or (lambda line: print(line, file=console, flush=True))
    root.mkdir(parents=True, exist_ok=True)
    # absolute: a container sees the pipeline root at the same absolute path, with another working directory
    environment = {reuse.ENV: str(root.absolute() / ".reuse"), reuse.OFF: "0" if caching else "1"}
    local.init(
        runner=_runner(containers, environment),
        pipeline_root=str(root),
        # kfp.local would otherwise make a /tmp/kfp-workspace-* folder per run and never remove it.
        workspace_root=str(root / ".workspace"),
        raise_on_error=True,
    )
    tasks: list[TaskLine] = []

    def done(name: str, status: str, seconds: float) -> None:
        if status == LOST:
            next(t for t in tasks if t.name == name).status = LOST
            return
        tasks.append(_task_line(root, pipeline.name, name, status, seconds))
        say(str(tasks[-1]))

    staging = root / f".logs-{os.getpid()}"
    before = set(_run_folders(root, pipeline.name))
    logs = _TaskLogs(staging, done)
    failure: RuntimeError | ValueError | None = None
    finished = False
    try:
        with (
            _environment(**environment),
            contextlib.redirect_stdout(logs),
            warnings.catch_warnings(),
        ):
            # Intended: our image's code is this environment's, so kfp.local need not warn that it is not Python's.
            warnings.filterwarnings("ignore", "You may be attemping to run a task that uses custom", RuntimeWarning)
            try:
                pipeline(**arguments)
            except RuntimeError as error:
                failure = error
            except ValueError as error:  # kfp.local's, when a later task asks for a lost task's outputs
                if not any(t.status == LOST for t in tasks):
                    raise
                failure = error
        finished = True
    finally:  # interrupted too: the logs go where the README says they are, the run folder's logs/
        logs.close()
        folders = [p for p in _run_folders(root, pipeline.name) if p not in before]
        if folders:
            shutil.move(staging, folders[0] / LOGS)
            if not finished:
                say(f"interrupted: the logs so far are in {folders[0] / LOGS}")
    if not folders:  # kfp.local failed before its first task
        raise RuntimeError(f"the pipeline did not start: {failure} (its log: {staging})")
    run = LocalRun(folders[0], tasks)
    failed = [t for t in tasks if t.status != "SUCCESS"]
    if failure is not None or failed:
        name = failed[0].name if failed else "pipeline"
        task_log = run.folder / LOGS / f"{name}.log"
        lines = task_log.read_text().splitlines() if task_log.exists() else []
        errors = [line for line in lines if ": error: " in line]
        lost = failed and failed[0].status == LOST
        reason = errors[-1].strip() if errors else "it ended without writing its outputs" if lost else str(failure)
        raise RuntimeError(f"task {name} failed: {reason} (its log: {task_log})")
    return run


def _run_folders(root: Path, pipeline: str) -> list[Path]:
    """The run folders kfp.local made under `root` for this pipeline, newest first."""
    folders = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(f"{pipeline}-")]
    return sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)


def run_schedule(
    expression: str,
    run: Callable[[int, dt.datetime], Any],
    max_runs: int | None = None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now().astimezone(),
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, int]:
    """Call `run(index, scheduled_time)` at each time of a six-field cron, in the foreground.

    Like a KFP recurring run with max_concurrency=1 and no_catchup: one run at a time, and fire times
    missed while a run overran are skipped, not backfilled. A failed run is logged and the schedule goes
    on. Stops after `max_runs` runs (None: never); returns (succeeded, failed).
    """
    succeeded = failed = 0
    index = 0
    while max_runs is None or index < max_runs:
        scheduled = next(cron.fire_times(expression, clock()))
        wait = max(0.0, (scheduled - clock()).total_seconds())
        print(f"next run at {scheduled.isoformat(timespec='seconds')} (in {wait:.0f} s; Ctrl-C stops the schedule)",
              flush=True)
        sleep(wait)
        index += 1
        try:
            result = run(index, scheduled)
        except Exception as error:  # a failed run must not end the schedule
            failed += 1
            log.error("scheduled run %d (%s) failed, the schedule goes on: %s", index, scheduled.isoformat(), error,
                      exc_info=log.isEnabledFor(logging.DEBUG))
        else:
            succeeded += 1
            log.info("scheduled run %d (%s) succeeded: %s", index, scheduled.isoformat(), result)
    return succeeded, failed
