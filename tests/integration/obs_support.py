"""Helpers of the observability suite: an OTLP/gRPC trace receiver, servers started with their own
settings, a /metrics scraper and the server's log as JSON lines.

Like the rest of the integration suite this never imports `mlserver` or `runtime`: the server is
a subprocess and is reached over loopback only.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import grpc
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client.parser import text_string_to_metric_families

from itest_support import MODELS_DIR, REPO_ROOT, Server

HTTP_TIMEOUT_S = 30.0


# ------------------------------------------------------------------------------ OTLP receiver


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]


def _attribute_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _received(span: trace_pb2.Span) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        kind=span.kind,
        attributes={a.key: _attribute_value(a.value) for a in span.attributes},
    )


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """The OpenTelemetry collector's trace service, keeping every span it is sent."""

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._server: Optional[grpc.Server] = None
        self.port = 0

    def Export(self, request, context):  # the gRPC method's name
        with self._lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    self._spans.extend(_received(s) for s in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def start(self) -> "TraceReceiver":
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self._spans if s.trace_id == trace_id]

    def wait_for(
        self, trace_id: str, done: Callable[[list[ReceivedSpan]], bool], timeout: float = 20.0
    ) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.trace(trace_id)
            if done(spans):
                return spans
            time.sleep(0.1)
        return self.trace(trace_id)


# --------------------------------------------------------------------------------- the server


# A server in its own directory (runtime/ linked, models chosen, own settings): the suite's one
# server class, started without waiting so that several can become ready side by side.
ObsServer = Server


def prepare_root(
    root: Path,
    settings: dict[str, Any],
    models: dict[tuple[str, str], Optional[dict[str, Any]]],
    logging_config: Optional[dict[str, Any]] = None,
) -> None:
    """A server directory: runtime/ linked, each model version linked (or copied with its own
    `parameters.extra` when one is given), settings.json and optionally its own logging.json."""
    root.mkdir(parents=True)
    (root / "runtime").symlink_to(REPO_ROOT / "runtime", target_is_directory=True)
    for (name, version), extra in models.items():
        source, target = MODELS_DIR / name / version, root / "models" / name / version
        target.parent.mkdir(parents=True, exist_ok=True)
        if extra is None:
            target.symlink_to(source, target_is_directory=True)
            continue
        # Copied, not linked: the runtime refuses artifacts that resolve outside the model dir.
        shutil.copytree(source, target)
        model_settings = json.loads((target / "model-settings.json").read_text())
        model_settings["parameters"]["extra"] = extra
        (target / "model-settings.json").write_text(json.dumps(model_settings))
    if logging_config is not None:
        (root / "logging.json").write_text(json.dumps(logging_config))
    (root / "settings.json").write_text(json.dumps(settings))


def start_server(root: Path, models: Iterable[tuple[str, str]], env: dict[str, str]) -> ObsServer:
    return Server.launch(root / "server.log", root=root, models=models, env=env)


# ------------------------------------------------------------------------------------ scraping


Samples = dict[tuple[str, frozenset], float]


def scrape(server: ObsServer) -> Samples:
    """Every sample on /metrics, parsed by prometheus_client: (name, labels) -> value."""
    text = requests.get(server.metrics_url, timeout=HTTP_TIMEOUT_S).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(ls) for (n, ls) in samples if n == name]


# ------------------------------------------------------------------------------------- the log


def log_lines(server: ObsServer) -> list[str]:
    return [line for line in server.log_path.read_text(encoding="utf-8").splitlines() if line]


def parse_log(server: ObsServer) -> list[dict[str, Any]]:
    """Every line the server wrote, each parsed as JSON; the first that is not fails the caller."""
    records = []
    for number, line in enumerate(log_lines(server), start=1):
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            where = f"{server.log_path}:{number}"
            raise AssertionError(f"{where} is not JSON ({exc}): {line!r}") from None
    return records
