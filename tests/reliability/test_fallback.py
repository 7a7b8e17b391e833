"""Fallback model and circuit breaker on a real server: the fallback answers when the primary
fails or is too slow, and never for a client's mistake; the breaker opens after repeated failures
(fast answers from the fallback, or a fast 503 without one) and closes again once probes succeed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from harness.repository import add_model, make_repository
from harness.server import Server
from tests.reliability.support import FAILING_RUNTIME, SLOW_RUNTIME, rest_infer, serve

BREAKER = {
    "breaker_failure_ratio": 0.5,
    "breaker_window": 4,
    "breaker_min_calls": 4,
    "breaker_open_s": 1.0,
    "breaker_probes": 2,
}


@pytest.fixture(scope="module")
def flag(tmp_path_factory):
    return tmp_path_factory.mktemp("fault") / "failing"


@pytest.fixture(scope="module")
def server(tmp_path_factory, flag):
    root = make_repository(tmp_path_factory.mktemp("fallback") / "repo", workers=0)
    add_model(root, "backup", source="diabetes/2")
    add_model(root, "primary", implementation=FAILING_RUNTIME, extra={"fallback_model": "backup", **BREAKER})
    add_model(root, "strict", implementation=FAILING_RUNTIME, extra=BREAKER)
    add_model(
        root, "slowpoke", implementation=SLOW_RUNTIME, extra={"fallback_model": "backup", "fallback_budget_ms": 50}
    )
    env = {"FAILING_RUNTIME_FLAG": str(flag), "SLOW_RUNTIME_DELAY_MS": "400"}
    yield from serve(root, env=env, ready=["backup", "primary", "strict", "slowpoke"])


def _answer(server: Server, model: str) -> dict:
    response = rest_infer(server, model)
    assert response.status_code == 200, response.text
    return response.json()


def _breaker(server: Server, model: str) -> float:
    return server.scrape()[("pipeline_breaker_state", frozenset({("model", model)}))]


def test_a_healthy_primary_answers_itself(server, flag):
    flag.unlink(missing_ok=True)
    doc = _answer(server, "primary")
    assert doc["model_name"] == "primary" and "served_by" not in (doc.get("parameters") or {})


def test_the_fallback_answers_a_failing_primary_then_the_breaker_opens_and_closes(server, flag):
    flag.touch()
    try:
        first = _answer(server, "primary")
        assert first["parameters"]["served_by"] == "backup:1" and first["parameters"]["fallback_reason"] == "error"
        assert first["outputs"][0]["data"] == _answer(server, "backup")["outputs"][0]["data"]
        for _ in range(3):
            _answer(server, "primary")
        assert _breaker(server, "primary") == 2  # open
        opened = _answer(server, "primary")
        assert opened["parameters"]["fallback_reason"] == "breaker_open"
    finally:
        flag.unlink()
    time.sleep(1.2)  # past breaker_open_s: half-open, the probes succeed
    for _ in range(2):
        assert "served_by" not in (_answer(server, "primary").get("parameters") or {})
    assert _breaker(server, "primary") == 0
    reasons = {
        dict(labels).get("reason")
        for (name, labels) in server.scrape()
        if name == "pipeline_fallbacks_total" and dict(labels).get("model") == "primary"
    }
    assert {"error", "breaker_open"} <= reasons


def test_a_clients_mistake_is_never_rescued(server, flag):
    flag.touch()
    try:
        bad = rest_infer(server, "primary", rows=[[0.0] * 9])
    finally:
        flag.unlink()
    assert bad.status_code == 400 and "expected 10 features" in bad.json()["error"]


def test_without_a_fallback_an_open_breaker_is_a_fast_503(server, flag):
    flag.touch()
    try:
        statuses = [rest_infer(server, "strict").status_code for _ in range(4)]
        assert statuses == [500] * 4
        started = time.monotonic()
        refused = rest_infer(server, "strict")
        took = time.monotonic() - started
    finally:
        flag.unlink()
    assert refused.status_code == 503 and "circuit breaker is open" in refused.json()["error"]
    assert took < 0.5


def test_a_slow_primary_is_answered_by_the_fallback_within_its_budget(server):
    started = time.monotonic()
    doc = _answer(server, "slowpoke")
    took = time.monotonic() - started
    assert doc["parameters"]["fallback_reason"] == "slow" and doc["parameters"]["served_by"] == "backup:1"
    assert took < 0.35, f"the fallback answered after {took:.2f} s; the primary takes 0.4 s"


def test_over_grpc_the_fallback_says_so_and_an_open_breaker_is_unavailable(server, flag):
    client = tgrpc.InferenceServerClient(server.grpc_url)
    tensor = tgrpc.InferInput("X", [1, 10], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 10)))
    flag.touch()
    try:
        result = client.infer("primary", [tensor])
        parameters = result.get_response().parameters
        assert parameters["served_by"].string_param == "backup:1"
        assert parameters["fallback_reason"].string_param in ("error", "breaker_open")
        codes = []
        for _ in range(6):
            try:
                client.infer("strict", [tensor])
            except InferenceServerException as refused:
                codes.append(refused.status())
        assert codes[-1] == "StatusCode.UNAVAILABLE", codes
    finally:
        flag.unlink()
        client.close()
    time.sleep(1.2)  # let both breakers half-open and close again for the other tests
    for model in ("primary", "strict"):
        for _ in range(2):
            rest_infer(server, model)
