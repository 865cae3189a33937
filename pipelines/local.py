"""The whole pipeline on this machine with `kfp.local`, once or on a cron schedule in the foreground.

Every task runs as a subprocess of this Python (SubprocessRunner without a venv: the tasks' image is
ignored, their code comes from this environment). kfp.local turns the pipeline root into a local path (a
gs:// root would become a folder named "gs:"), so a local run always writes under a local folder:
<output>/<run id>/<pipeline>-<time>/<task>/<output name>.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import local
from kfp.dsl.graph_component import GraphComponent

from pipelines import cron

log = logging.getLogger(__name__)


def run_id(name: str, when: dt.datetime, index: int | None = None) -> str:
    """A run's id and the name of its folder: `<name>[-<index>]-<UTC time>`."""
    stamp = when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{name}-{stamp}" if index is None else f"{name}-{index:04d}-{stamp}"


def run_local(pipeline: GraphComponent, arguments: dict[str, Any], root: Path) -> Path:
    """Run the whole DAG under `root`; returns the run's folder. A failed task raises RuntimeError."""
    root.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        # kfp.local would otherwise make a /tmp/kfp-workspace-* folder per run and never remove it.
        workspace_root=str(root / "workspace"),
        raise_on_error=True,
    )
    with warnings.catch_warnings():
        # Intended: our image's code is this environment's, so kfp.local need not warn that it is not Python's.
        warnings.filterwarnings("ignore", "You may be attemping to run a task that uses custom", RuntimeWarning)
        pipeline(**arguments)
    folders = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(f"{pipeline.name}-")]
    return max(folders, key=lambda p: p.stat().st_mtime)


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
        sleep(max(0.0, (scheduled - clock()).total_seconds()))
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
