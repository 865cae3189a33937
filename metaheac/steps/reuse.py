"""Local reuse of a step's result across pipeline runs, as KFP's cache does on a cluster.

`python -m pipelines run-local` and `schedule create --local` name a folder in METAHEAC_REUSE; a KFP
component then keys its step on the step, the package version, its parameters and its input artifacts'
keys. An artifact written by an earlier task carries that task's key in `<artifact>.key`; any other input
(an imported folder) is keyed by its URI, as KFP keys it. A cached step (`Step.cached`) whose key is in the
folder takes the earlier output (hard links, no copy) instead of running; METAHEAC_REUSE_OFF=1 (`--no-cache`)
runs every step but still records. Without METAHEAC_REUSE (a cluster, where KFP caches) nothing here does
anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metaheac import __version__
from metaheac.steps.base import Step

ENV = "METAHEAC_REUSE"
OFF = "METAHEAC_REUSE_OFF"
TASK_FILE = "task.json"  # what the local run's table shows of a task: its method and whether it was reused


def _artifact_key(uri: str) -> str:
    marker = Path(f"{uri}.key")
    return marker.read_text() if marker.exists() else f"uri:{uri}"


def key(step: type[Step], arguments: Mapping[str, Any]) -> str:
    """The step's cache key: the same for the same code version, parameters and inputs."""
    parts: dict[str, Any] = {"step": step.name, "version": __version__}
    for argument in step.arguments():
        value, artifact = arguments[argument.name], step.artifacts.get(argument.name)
        if artifact and artifact.output:
            continue
        parts[argument.name] = [_artifact_key(u) for u in str(value).split(",")] if artifact and value else value
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _link_tree(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, copy_function=os.link, dirs_exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)


def reuse(step: type[Step], arguments: Mapping[str, Any]) -> bool:
    """Fill the step's output from an earlier local run with its key; False when the step has to run."""
    index = os.environ.get(ENV)
    if not index or not step.cached or os.environ.get(OFF) == "1":
        return False
    entry = Path(index) / key(step, arguments)
    earlier = Path(entry.read_text()) if entry.exists() else None
    if earlier is None or not earlier.exists():
        return False
    _link_tree(earlier, Path(arguments["output"]))
    record(step, arguments)
    return True


def record(step: type[Step], arguments: Mapping[str, Any]) -> None:
    """After a run (or a reuse): mark the output with its key, and index it when the step may be reused."""
    index = os.environ.get(ENV)
    if not index:
        return
    output = Path(arguments["output"])
    step_key = key(step, arguments)
    Path(f"{output}.key").write_text(step_key)
    if step.cached:
        Path(index).mkdir(parents=True, exist_ok=True)
        staged = Path(index) / f".{step_key}.{os.getpid()}"
        staged.write_text(str(output.resolve()))
        staged.replace(Path(index) / step_key)  # atomic: a reader sees the old entry or the new one


def note(step: type[Step], arguments: Mapping[str, Any], reused: bool) -> None:
    """Write the task's line of the local run's table into its task folder (the output's parent): its
    method (adapt's is its model's) and whether it was reused."""
    if not os.environ.get(ENV):
        return
    method = arguments.get("method")
    if arguments.get("model"):
        from metaheac.model.store import read_model_info  # torch: only for the steps that load a model
        from metaheac.online.model_registry import resolve_model

        method = read_model_info(resolve_model(arguments["model"]).uri)["method"]
    task = Path(arguments["output"]).parent
    (task / TASK_FILE).write_text(json.dumps({"step": step.name, "method": method, "reused": reused}))
