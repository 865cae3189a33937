"""Runs and recurring runs on a KFP API server, through `kfp.Client`."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kfp
import kfp_server_api
import requests

HEALTHZ = "/apis/v2beta1/healthz"
_OBJECT = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>: ")  # e.g. urllib3's HTTPSConnection


def connect(host: str, namespace: str | None = None, timeout_s: float = 10.0) -> kfp.Client:
    """A client of the KFP API server at `host`, or a ConnectionError naming it.

    kfp.Client's constructor calls the server's healthz without a timeout: refused at once on a closed
    port, but it hangs on a server that accepts and never answers. So ask once first, with a deadline.
    """
    url = host.rstrip("/") + HEALTHZ
    try:
        requests.get(url, timeout=timeout_s).raise_for_status()
    except requests.RequestException as error:
        raise ConnectionError(f"no KFP API server answers at {host} ({type(error).__name__}: {_why(error)})") from None
    return kfp.Client(host=host, namespace=namespace) if namespace else kfp.Client(host=host)


def _why(error: requests.RequestException) -> str:
    """The cause of a failed request in words: urllib3's own reason, without its connection object's repr."""
    cause = error.args[0] if error.args else error
    return _OBJECT.sub("", str(getattr(cause, "reason", cause)))


def submit(
    client: kfp.Client,
    package: Path,
    arguments: dict[str, Any],
    experiment: str,
    run_name: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> str:
    """Start one run of a compiled pipeline; returns its run id."""
    result = client.create_run_from_pipeline_package(
        str(package),
        arguments=arguments,
        run_name=run_name,
        experiment_name=experiment,
        pipeline_root=pipeline_root,
        service_account=service_account,
    )
    return result.run_id


def upload(client: kfp.Client, package: Path, pipeline_name: str) -> tuple[str, str]:
    """Upload a compiled pipeline as a new version of `pipeline_name` (created if missing).

    Returns (pipeline id, version id).
    """
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=pipeline_name).pipeline_id
        # a new pipeline comes with one version, made from the same package
        versions = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
        return pipeline_id, versions.pipeline_versions[0].pipeline_version_id
    version_name = f"{pipeline_name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    version = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id


@dataclass(frozen=True)
class Schedule:
    """A KFP recurring run."""

    name: str
    cron: str  # six fields, seconds first (see pipelines/cron.py)
    experiment: str
    arguments: dict[str, Any]
    max_concurrency: int = 1  # KFP accepts 1 to 10
    no_catchup: bool = True  # after a pause, run once for the missed times instead of once per missed time
    pipeline_root: str | None = None
    service_account: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrency <= 10:
            raise ValueError(f"max_concurrency must be 1 to 10 (KFP's limits), got {self.max_concurrency}")


def create_schedule(
    client: kfp.Client, schedule: Schedule, pipeline_id: str, version_id: str | None
) -> kfp_server_api.V2beta1RecurringRun:
    """Create a recurring run of a pipeline version, or of its latest version at each run (version_id None).

    kfp.Client.create_recurring_run insists on a version; the API server (KFP >= 2.5) takes a pipeline id
    alone to mean "the latest version", so this sends the request through the client's generated API.
    """
    experiment = client.create_experiment(schedule.experiment)
    body = kfp_server_api.V2beta1RecurringRun(
        display_name=schedule.name,
        experiment_id=experiment.experiment_id,
        pipeline_version_reference=kfp_server_api.V2beta1PipelineVersionReference(
            pipeline_id=pipeline_id, pipeline_version_id=version_id
        ),
        runtime_config=kfp_server_api.V2beta1RuntimeConfig(
            parameters=schedule.arguments, pipeline_root=schedule.pipeline_root
        ),
        trigger=kfp_server_api.V2beta1Trigger(cron_schedule=kfp_server_api.V2beta1CronSchedule(cron=schedule.cron)),
        max_concurrency=schedule.max_concurrency,
        no_catchup=schedule.no_catchup,
        mode=kfp_server_api.RecurringRunMode.ENABLE,
        service_account=schedule.service_account,
    )
    return client.recurring_runs.recurring_run_service_create_recurring_run(recurring_run=body)


def list_schedules(client: kfp.Client, experiment: str | None = None) -> list[kfp_server_api.V2beta1RecurringRun]:
    experiment_id = client.get_experiment(experiment_name=experiment).experiment_id if experiment else None
    runs: list[kfp_server_api.V2beta1RecurringRun] = []
    token = ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id)
        runs += page.recurring_runs or []
        token = page.next_page_token
        if not token:
            return runs
