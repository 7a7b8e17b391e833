"""A fake Kubernetes API server on loopback holding one InferenceService, for the rollout tests.

The real kubernetes client does the HTTP; a PATCH is applied as the API server applies a JSON merge
patch (pipeline_tools.rollout.patches.merge_patch, which test_rollout_standard.py checks against `kubectl patch`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline_tools.rollout.cluster import MERGE_PATCH
from pipeline_tools.rollout.patches import merge_patch

ISVC_PATH = "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/diabetes"


class FakeApiServer(ThreadingHTTPServer):
    """Serves one InferenceService at ISVC_PATH and records every request."""

    def __init__(self, isvc: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), FakeApiHandler)
        self.isvc = isvc
        self.requests: list[dict[str, Any]] = []

    def patches(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "PATCH"]


class FakeApiHandler(BaseHTTPRequestHandler):
    server: FakeApiServer

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_request(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        content_type = self.headers.get("Content-Type")
        self.server.requests.append(
            {"method": method, "path": path, "query": query, "type": content_type, "body": body}
        )
        if path != ISVC_PATH:
            self.reply(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})
        elif method == "PATCH" and content_type != MERGE_PATCH:
            self.reply(415, {"kind": "Status", "status": "Failure", "code": 415})
        else:
            if method == "PATCH":
                self.server.isvc = merge_patch(self.server.isvc, body)
            self.reply(200, self.server.isvc)

    def do_GET(self) -> None:
        self.handle_request("GET")

    def do_PATCH(self) -> None:
        self.handle_request("PATCH")

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(isvc: dict[str, Any], kubeconfig: Path) -> Iterator[FakeApiServer]:
    """Serve `isvc` and write a kubeconfig (context namespace `ml`) that points at the server."""
    server = FakeApiServer(isvc)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "ml"}}],
                "current-context": "fake",
            }
        )
    )
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
