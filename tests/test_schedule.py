"""Submitting and scheduling: cron, macros, the local foreground scheduler, and the requests to a KFP server.

No real KFP API server runs here (it needs Kubernetes): `submit` and `schedule` talk to a loopback stub
(tests/kfp_stub.py) through the real kfp.Client, and the tests check what it was sent.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from pathlib import Path

import kfp_server_api
import pytest

from metaheac.cli import main as metaheac
from pipelines import cron, remote
from pipelines.cli import main
from pipelines.dag import TrainingOptions
from pipelines.local import run_schedule
from tests.kfp_stub import API, KfpStub, Request, default_routes, kfp_stub
from tests.pipeline_helpers import TINY_PARAMS, params

UTC = dt.UTC


def test_cron_takes_kfp_six_fields_seconds_first() -> None:
    assert cron.validate("0 0 3 * * *") == "0 0 3 * * *"
    with pytest.raises(ValueError, match="has 5 fields; KFP wants 6, seconds first"):
        cron.validate("0 3 * * *")
    with pytest.raises(ValueError, match="is not a valid cron"):
        cron.validate("0 0 25 * * *")
    start = dt.datetime(2024, 1, 1, 2, 59, 59, tzinfo=UTC)
    times = cron.fire_times("0 0 3 * * *", start)
    assert [next(times), next(times)] == [dt.datetime(2024, 1, day, 3, tzinfo=UTC) for day in (1, 2)]


def test_macros_are_substituted_as_kfp_does() -> None:
    scheduled, now = dt.datetime(2024, 5, 6, 3, 0, 0), dt.datetime(2024, 5, 6, 3, 0, 7)
    value = "gs://b/raw/[[ScheduledTime.2006-01-02]]/run-[[Index]]-[[CurrentTime]]-[[ScheduledTime]]"
    assert cron.substitute(value, 3, scheduled, now) == "gs://b/raw/2024-05-06/run-3-20240506030007-20240506030000"


def test_local_schedule_keeps_going_after_a_failed_run() -> None:
    clock = [dt.datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)]
    slept: list[float] = []
    seen: list[tuple[int, dt.datetime]] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += dt.timedelta(seconds=seconds)

    def run(index: int, scheduled: dt.datetime) -> str:
        seen.append((index, scheduled))
        clock[0] += dt.timedelta(seconds=2.5)  # each run overruns the next fire time: it is skipped
        if index == 1:
            raise RuntimeError("task preprocess failed")
        return "ok"

    assert run_schedule("* * * * * *", run, max_runs=3, clock=lambda: clock[0], sleep=sleep) == (2, 1)
    assert [i for i, _ in seen] == [1, 2, 3]
    assert [t.second for _, t in seen] == [1, 4, 7]  # one a second, no backfill of the missed seconds
    assert slept == [0.5, 0.5, 0.5]


def test_local_schedule_runs_the_pipeline_failing_then_passing(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The first run's input is missing, so that run fails; the schedule goes on and the second run passes."""
    assert metaheac(["generate", "--output", str(tmp_path / "raw-2"), "--users", str(TINY_PARAMS["generate_users"]),
                     "--campaigns", str(TINY_PARAMS["generate_campaigns"])]) == 0
    names = {p.name for p, _ in TrainingOptions(source="input").parameters()}
    argv = ["schedule", "create", "--local", "--cron", "* * * * * *", "--max-runs", "2",
            "--output", str(tmp_path / "runs"), "--source", "input", "--shards", "1",
            f"--param=input_uri={tmp_path}/raw-[[Index]]", *params(names)]
    assert main(argv) == 1  # one of its runs failed
    out = capsys.readouterr().out.strip()
    assert out.endswith("1 runs succeeded, 1 failed")
    first, second = sorted(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    assert first.name.startswith("metaheac-") and second.name.startswith("metaheac-")
    assert not (first / "evaluate" / "output" / "report.html").exists() and (first / "logs" / "preprocess.log").exists()
    assert f"report: {second / 'evaluate' / 'output' / 'report.html'}" in out.splitlines()  # each run's own


def test_the_stub_refuses_what_the_api_models_refuse() -> None:
    stub = KfpStub(default_routes())

    def post(path: str, body: object) -> tuple[int, object]:
        return stub.answer(Request("POST", f"{API}{path}", {}, json.dumps(body).encode(), "application/json"))

    assert post("/runs", {"display_name": "r", "runtime_config": {"pipeline_root": "gs://b"}})[0] == 200
    status, answer = post("/runs", {"display_name": "r", "runtime_config": {"pipelin_root": "gs://b"}})
    assert status == 400 and "V2beta1RuntimeConfig has no field pipelin_root" in str(answer)
    status, answer = post("/recurringruns", {"display_name": "n", "max_concurency": 1})
    assert status == 400 and "max_concurency" in str(answer)
    assert post("/experiments", {"display_name": "e"})[1] == {"display_name": "e", "experiment_id": "exp-1"}


def test_submit_sends_the_compiled_pipeline() -> None:
    with kfp_stub() as stub:
        argv = ["submit", "--host", stub.url, "--experiment", "lookalike", "--pipeline-root", "gs://b/root",
                "--service-account", "metaheac", "--run-name", "try", "--param", "generate_users=3000"]
        assert main(argv) == 0
    (experiment,) = stub.calls("POST", f"{API}/experiments")
    assert experiment.json()["display_name"] == "lookalike"
    (run,) = stub.calls("POST", f"{API}/runs")
    body = run.json()
    assert body["display_name"] == "try" and body["experiment_id"] == "exp-1"
    assert body["service_account"] == "metaheac"
    assert body["runtime_config"] == {"parameters": {"generate_users": 3000}, "pipeline_root": "gs://b/root"}
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "metaheac"


def test_schedule_uploads_a_version_and_pins_it() -> None:
    with kfp_stub() as stub:
        argv = ["schedule", "create", "--host", stub.url, "--name", "nightly", "--cron", "0 0 3 * * *",
                "--max-concurrency", "2", "--service-account", "metaheac", "--param", "generate_users=3000"]
        assert main(argv) == 0
    (upload,) = stub.calls("POST", f"{API}/pipelines/upload")
    assert upload.query["name"] == ["metaheac"] and b"pipelineInfo" in upload.body
    body = stub.calls("POST", f"{API}/recurringruns")[0].json()
    assert body["pipeline_version_reference"] == {"pipeline_id": "pipe-1", "pipeline_version_id": "ver-1"}
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert (body["max_concurrency"], body["no_catchup"], body["mode"]) == (2, True, "ENABLE")
    assert body["runtime_config"]["parameters"] == {"generate_users": 3000}
    assert body["service_account"] == "metaheac"


def test_schedule_of_an_existing_pipeline_latest_or_pinned() -> None:
    existing = [kfp_server_api.V2beta1Pipeline(pipeline_id="pipe-1", display_name="metaheac")]
    with kfp_stub(default_routes(existing)) as stub:
        assert main(["schedule", "create", "--host", stub.url, "--name", "n", "--cron", "0 0 3 * * *", "--latest",
                     "--catchup"]) == 0
        assert len(stub.calls("POST", f"{API}/pipelines/upload_version")) == 1  # a new version of the pipeline
        body = stub.calls("POST", f"{API}/recurringruns")[-1].json()
        assert body["pipeline_version_reference"] == {"pipeline_id": "pipe-1"}  # no version: always the latest
        assert body["no_catchup"] is False
        assert main(["schedule", "create", "--host", stub.url, "--name", "n", "--cron", "0 0 3 * * *",
                     "--version-id", "ver-7"]) == 0
        assert len(stub.calls("POST", f"{API}/pipelines/upload_version")) == 1  # pinned: nothing uploaded
        body = stub.calls("POST", f"{API}/recurringruns")[-1].json()
        assert body["pipeline_version_reference"] == {"pipeline_id": "pipe-1", "pipeline_version_id": "ver-7"}


def test_schedule_list_pause_resume_delete(capsys: pytest.CaptureFixture[str]) -> None:
    with kfp_stub() as stub:
        assert main(["schedule", "list", "--host", stub.url]) == 0
        assert capsys.readouterr().out.split("\t") == ["rr-1", "nightly", "ENABLE", "0 0 3 * * *", "version latest\n"]
        for action in ("pause", "resume", "delete"):
            assert main(["schedule", action, "rr-1", "--host", stub.url]) == 0
    assert [(r.method, r.path) for r in stub.requests if "recurringruns/" in r.path] == [
        ("POST", f"{API}/recurringruns/rr-1:disable"),
        ("POST", f"{API}/recurringruns/rr-1:enable"),
        ("DELETE", f"{API}/recurringruns/rr-1"),
    ]


def test_a_server_that_never_answers_fails_fast() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="no KFP API server answers at http://127.0.0.1"):
            remote.connect(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5)
        assert time.monotonic() - started < 5


def test_an_unknown_host_is_named_without_the_client_s_objects() -> None:
    with pytest.raises(ConnectionError, match="no KFP API server answers at https://kfp-host.invalid") as error:
        remote.connect("https://kfp-host.invalid", timeout_s=2)
    assert " object at 0x" not in str(error.value) and "kfp-host.invalid" in str(error.value)


def test_remote_commands_need_a_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedule", "list"]) == 2
    assert "--host is required" in capsys.readouterr().err
    with kfp_stub({}) as stub:  # a server without the API: healthz answers 404
        assert main(["schedule", "pause", "rr-1", "--host", stub.url]) == 2
    assert "no KFP API server answers" in capsys.readouterr().err
