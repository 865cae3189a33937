"""A loopback stand-in for the KFP API server (v2beta1 REST), for tests of `submit` and `schedule`.

No real KFP API server runs in these tests: it needs Kubernetes. This one listens on 127.0.0.1, records
every request the real `kfp.Client` sends, and answers from a route table. It cannot drift from the API:
every answer is a `kfp_server_api` model (the client kfp ships, generated from the server's OpenAPI spec)
serialized as the client's own ApiClient does, and every JSON request body is read back into its model,
refusing a field the model lacks or a value it rejects (answered 400, so the client call fails).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp_server_api as api

API = "/apis/v2beta1"
_CLIENT = api.ApiClient()
_NESTED = re.compile(r"^(?:list\[(\w+)\]|(\w+))$")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)


def _check_fields(data: Any, model: str, where: str) -> None:
    """Refuse a JSON field the model (or a nested model) does not declare."""
    klass = getattr(api, model, None)
    if klass is None or not isinstance(data, dict):
        return
    by_json = {json_name: name for name, json_name in klass.attribute_map.items()}
    unknown = set(data) - set(by_json)
    if unknown:
        raise ValueError(f"{where}: {model} has no field {', '.join(sorted(unknown))}")
    for json_name, value in data.items():
        match = _NESTED.match(klass.openapi_types[by_json[json_name]])
        if match and match[1]:
            for i, item in enumerate(value or []):
                _check_fields(item, match[1], f"{where}.{json_name}[{i}]")
        elif match:
            _check_fields(value, match[2], f"{where}.{json_name}")


def parse(request: Request, model: str) -> Any:
    """The request's JSON body as the API model `model`; ValueError if the model would not have it."""
    _check_fields(request.json(), model, model)
    return _CLIENT.deserialize(SimpleNamespace(data=request.body.decode()), model)


def _created(model: Any, **ids: str) -> Any:
    for name, value in ids.items():
        setattr(model, name, value)
    return model


Handler = Callable[[Request], Any]  # gives the answer: a kfp_server_api model, or None for an empty body


@dataclass
class KfpStub:
    """Routes are (METHOD, path regex) -> handler; the first match wins; no match answers 404."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path, r.path)]

    def answer(self, request: Request) -> tuple[int, Any]:
        self.requests.append(request)
        for (method, pattern), handler in self.routes.items():
            if method == request.method and re.fullmatch(pattern, request.path):
                try:
                    model = handler(request)
                except ValueError as error:  # a request the API's models refuse
                    return 400, {"error": str(error), "code": 3}
                return 200, {} if model is None else _CLIENT.sanitize_for_serialization(model)
        return 404, {"error": f"no route for {request.method} {request.path}", "code": 5}


def default_routes(pipelines: list[api.V2beta1Pipeline] | None = None) -> dict[tuple[str, str], Handler]:
    """A server with no experiments and the given pipelines."""
    pipelines = pipelines or []
    recurring = api.V2beta1RecurringRun(
        recurring_run_id="rr-1",
        display_name="nightly",
        mode=api.RecurringRunMode.ENABLE,
        trigger=api.V2beta1Trigger(cron_schedule=api.V2beta1CronSchedule(cron="0 0 3 * * *")),
        pipeline_version_reference=api.V2beta1PipelineVersionReference(pipeline_id="pipe-1"),
    )
    return {
        ("GET", f"{API}/healthz"): lambda r: api.V2beta1GetHealthzResponse(multi_user=False),
        ("GET", f"{API}/experiments"): lambda r: api.V2beta1ListExperimentsResponse(experiments=[], total_size=0),
        ("POST", f"{API}/experiments"): lambda r: _created(parse(r, "V2beta1Experiment"), experiment_id="exp-1"),
        ("POST", f"{API}/runs"): lambda r: _created(parse(r, "V2beta1Run"), run_id="run-1"),
        ("GET", f"{API}/pipelines"): lambda r: api.V2beta1ListPipelinesResponse(pipelines=pipelines,
                                                                              total_size=len(pipelines)),
        ("POST", f"{API}/pipelines/upload"): lambda r: api.V2beta1Pipeline(pipeline_id="pipe-1",
                                                                          display_name=r.query["name"][0]),
        ("GET", f"{API}/pipelines/[^/]+/versions"): lambda r: api.V2beta1ListPipelineVersionsResponse(
            pipeline_versions=[api.V2beta1PipelineVersion(pipeline_version_id="ver-1", pipeline_id="pipe-1")]),
        ("POST", f"{API}/pipelines/upload_version"): lambda r: api.V2beta1PipelineVersion(
            pipeline_version_id="ver-2", pipeline_id="pipe-1"),
        ("POST", f"{API}/recurringruns"): lambda r: _created(parse(r, "V2beta1RecurringRun"), recurring_run_id="rr-1"),
        ("GET", f"{API}/recurringruns"): lambda r: api.V2beta1ListRecurringRunsResponse(recurring_runs=[recurring]),
        ("POST", f"{API}/recurringruns/[^/]+:(disable|enable)"): lambda r: None,
        ("DELETE", f"{API}/recurringruns/[^/]+"): lambda r: None,
    }


@contextmanager
def kfp_stub(routes: dict[tuple[str, str], Handler] | None = None) -> Iterator[KfpStub]:
    stub = KfpStub(routes if routes is not None else default_routes())

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(self.command, parts.path, parse_qs(parts.query), self.rfile.read(length),
                              self.headers.get("Content-Type", ""))
            status, body = stub.answer(request)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
