"""The lookup's span: one `feature_lookup` span per request, under the request's span (MLServer's
server span), beside the runtime's `predict` span; its outcome says why a lookup failed."""

from __future__ import annotations

import secrets

import pytest

from harness.otlp import ReceivedSpan, TraceReceiver
from tests.features.support import launch, rest_by_id

SERVER_KIND = 2  # OTLP Span.SpanKind SPAN_KIND_SERVER


@pytest.fixture(scope="module")
def traced(pg, tmp_path_factory):
    receiver = TraceReceiver().start()
    server = launch(
        tmp_path_factory.mktemp("traced"),
        pg,
        {"by-id": {}},
        settings={"tracing_server": receiver.endpoint},
        env={"OTEL_BSP_SCHEDULE_DELAY": "100"},
    )  # export within 0.1 s
    try:
        server.wait_ready()
        yield server, receiver
    finally:
        server.kill()
        receiver.stop()


def _send(server, ids: list[str]) -> tuple[str, int]:
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    return trace_id, rest_by_id(server, "by-id", ids, headers={"traceparent": traceparent}).status_code


def _has(*names: str):
    return lambda spans: set(names) <= {s.name for s in spans} and any(s.kind == SERVER_KIND for s in spans)


def _by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in spans}


def test_one_lookup_span_under_the_request_span_beside_predict(traced):
    server, receiver = traced
    trace_id, status = _send(server, ["patient-0001", "patient-0002"])
    assert status == 200
    spans = receiver.wait_for(trace_id, _has("feature_lookup", "predict"))
    (request_span,) = [s for s in spans if s.kind == SERVER_KIND]
    by_name = _by_name(spans)
    assert [s.name for s in spans].count("feature_lookup") == 1
    lookup = by_name["feature_lookup"]
    assert lookup.parent_span_id == request_span.span_id
    assert by_name["predict"].parent_span_id == request_span.span_id
    assert lookup.attributes["rows"] == 2 and lookup.attributes["outcome"] == "ok"


def test_a_failed_lookup_span_carries_its_outcome(traced):
    server, receiver = traced
    trace_id, status = _send(server, ["ghost"])
    assert status == 400
    spans = receiver.wait_for(trace_id, _has("feature_lookup"))
    lookup = _by_name(spans)["feature_lookup"]
    assert lookup.attributes["outcome"] == "unknown_entity"
    assert "predict" not in _by_name(spans)  # refused before the computation
