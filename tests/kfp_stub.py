"""A loopback stand-in for the KFP API server (v2beta1 REST), for tests of `submit` and `schedule`.

No real KFP API server runs in these tests: it needs Kubernetes. This one listens on 127.0.0.1, records
every request the real `kfp.Client` sends, and answers from a route table with the JSON shapes of the
v2beta1 API, so the tests check what our CLI asks the server for and that it reads the answers.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)


Answer = Any | Callable[[Request], Any]  # a JSON body, or a function of the request giving one


@dataclass
class KfpStub:
    """Routes are (METHOD, path regex) -> answer; the first match wins; no match answers 404."""

    routes: dict[tuple[str, str], Answer] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path, r.path)]

    def answer(self, request: Request) -> tuple[int, Any]:
        self.requests.append(request)
        for (method, pattern), answer in self.routes.items():
            if method == request.method and re.fullmatch(pattern, request.path):
                return 200, answer(request) if callable(answer) else answer
        return 404, {"error": f"no route for {request.method} {request.path}", "code": 5}


def default_routes(pipelines: list[dict] | None = None) -> dict[tuple[str, str], Answer]:
    """A server with no experiments and the given pipelines (a list of {pipeline_id, display_name})."""
    experiment = {"experiment_id": "exp-1", "display_name": "metaheac"}
    return {
        ("GET", f"{API}/healthz"): {"multi_user": False},
        ("GET", f"{API}/experiments"): {"experiments": [], "total_size": 0},
        ("POST", f"{API}/experiments"): lambda r: {**experiment, "display_name": r.json()["display_name"]},
        ("POST", f"{API}/runs"): lambda r: {"run_id": "run-1", "display_name": r.json()["display_name"]},
        ("GET", f"{API}/pipelines"): {"pipelines": pipelines or [], "total_size": len(pipelines or [])},
        ("POST", f"{API}/pipelines/upload"): lambda r: {"pipeline_id": "pipe-1", "display_name": r.query["name"][0]},
        ("GET", f"{API}/pipelines/[^/]+/versions"): {"pipeline_versions": [{"pipeline_version_id": "ver-1"}]},
        ("POST", f"{API}/pipelines/upload_version"): {"pipeline_version_id": "ver-2", "pipeline_id": "pipe-1"},
        ("POST", f"{API}/recurringruns"): lambda r: {**r.json(), "recurring_run_id": "rr-1"},
        ("GET", f"{API}/recurringruns"): {
            "recurringRuns": [
                {
                    "recurring_run_id": "rr-1",
                    "display_name": "nightly",
                    "mode": "ENABLE",
                    "trigger": {"cron_schedule": {"cron": "0 0 3 * * *"}},
                    "pipeline_version_reference": {"pipeline_id": "pipe-1"},
                }
            ],
        },
        ("POST", f"{API}/recurringruns/[^/]+:(disable|enable)"): {},
        ("DELETE", f"{API}/recurringruns/[^/]+"): {},
    }


@contextmanager
def kfp_stub(routes: dict[tuple[str, str], Answer] | None = None) -> Iterator[KfpStub]:
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
