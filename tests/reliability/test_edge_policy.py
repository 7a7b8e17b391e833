"""The policy around the edge on a real server, with the fast paths on and off (PIPELINE_FAST_PATH=0:
MLServer's own REST and gRPC paths):
- a client's own deadline is the client's 504, never the model's failure: a burst of requests with a
  deadline shorter than the model's computation leaves its circuit breaker closed and its fallback
  unasked, so the next client is answered by the model itself;
- a request id longer than 256 bytes is refused with 400 / INVALID_ARGUMENT naming the limit (it is
  echoed in the `ce-id` response header); one of 256 bytes is answered and echoed.

Models: `strict` and `rescued` compute for SLOW_MS on the compute thread behind a breaker (`rescued`
with `backup` as its fallback); `backup` is the plain runtime.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from harness.repository import add_model, make_repository
from harness.server import Server
from harness.v2 import pb_2d_request
from tests.reliability import support

SLOW_MS = 100
CLIENT_DEADLINE_MS = 10
BURST = 8
BREAKER = {
    "breaker_failure_ratio": 0.5,
    "breaker_window": 4,
    "breaker_min_calls": 4,
    "breaker_open_s": 2.0,
    "breaker_probes": 1,
    "offload_compute": True,
}
IN_THE_MODEL = "deadline passed before its computation started"
MAX_ID_BYTES = 256


def _launch(request: pytest.FixtureRequest, fast: bool) -> Server:
    root = make_repository(
        request.getfixturevalue("tmp_path_factory").mktemp(f"edge-fast-{int(fast)}") / "repo", workers=0
    )
    add_model(root, "backup", source="diabetes/2")
    add_model(root, "strict", implementation=support.SLOW_RUNTIME, extra=BREAKER)
    add_model(root, "rescued", implementation=support.SLOW_RUNTIME, extra={**BREAKER, "fallback_model": "backup"})
    env = {"SLOW_RUNTIME_DELAY_MS": str(SLOW_MS), "PIPELINE_FAST_PATH": "1" if fast else "0"}
    return support.launch(root, env=env, ready=["backup", "strict", "rescued"])


# Launched with the suite's other servers (conftest.fleet).
SERVERS = {f"edge-fast-{int(fast)}": functools.partial(_launch, fast=fast) for fast in (True, False)}


@pytest.fixture(scope="module", params=[True, False], ids=["fast-path", "mlserver-path"])
def server(request, fleet) -> Server:
    return fleet[f"edge-fast-{int(request.param)}"]


@pytest.fixture(scope="module")
def grpc_clients(server):
    clients = [support.grpc_client(server) for _ in range(BURST)]
    for client in clients:  # connected before any burst, so all requests leave together
        support.grpc_infer(client, "backup")
    yield clients
    for client in clients:
        client.close()


# ------------------------------------------------------------------------------ breaker accounting


def _outcome(result: tuple[Any, float]) -> tuple[str, str]:
    """("ok" | "http-504" | "grpc-DEADLINE_EXCEEDED" ..., the error message)."""
    value, _ = result
    if isinstance(value, requests.Response):
        if value.status_code == 200:
            return "ok", ""
        return f"http-{value.status_code}", value.json().get("error", "")
    if isinstance(value, InferenceServerException):
        return f"grpc-{support.grpc_status(value)}", str(value.message())
    if isinstance(value, Exception):
        raise value
    return "ok", ""


def _rest_late(server: Server, model: str) -> Callable[[int], Any]:
    headers = {"X-Request-Timeout-Ms": str(CLIENT_DEADLINE_MS)}
    return lambda i: support.rest_infer(server, model, headers=headers)


def _grpc_late_by_metadata(clients: list, model: str) -> Callable[[int], Any]:
    headers = {"x-request-timeout-ms": str(CLIENT_DEADLINE_MS)}
    return lambda i: support.grpc_infer(clients[i], model, headers=headers, client_timeout=support.HTTP_TIMEOUT_S)


def _grpc_late_by_deadline(clients: list, model: str) -> Callable[[int], Any]:
    return lambda i: support.grpc_infer(clients[i], model, client_timeout=CLIENT_DEADLINE_MS * 3 / 1000)


def _late_burst(call: Callable[[int], Any], refused: str) -> list[tuple[str, str]]:
    """A burst whose requests but the first expire while they wait for the model: each is the
    client's own timeout (`refused`), most of them inside the model's resilience."""
    outcomes = [_outcome(r) for r in support.burst(BURST, call)]
    kinds = sorted(k for k, _ in outcomes)
    assert set(kinds) <= {"ok", refused}, kinds
    assert kinds.count(refused) >= BURST - 1, kinds
    return outcomes


def _answered_by_the_model_itself(server: Server, model: str) -> None:
    response = support.rest_infer(server, model)
    assert response.status_code == 200, response.text
    assert "served_by" not in (response.json().get("parameters") or {}), response.json()["parameters"]
    assert server.metric("pipeline_breaker_state", model=model) == 0  # closed


def test_a_clients_rest_deadline_leaves_the_breaker_closed(server):
    outcomes = _late_burst(_rest_late(server, "strict"), "http-504")
    # Refused where the breaker would see them (not at admission), so the test means something.
    assert sum(IN_THE_MODEL in m for _, m in outcomes) >= 4, outcomes
    _answered_by_the_model_itself(server, "strict")


@pytest.mark.parametrize("late", [_grpc_late_by_metadata, _grpc_late_by_deadline], ids=["metadata", "grpc-deadline"])
def test_a_clients_grpc_deadline_leaves_the_breaker_closed(server, grpc_clients, late):
    outcomes = _late_burst(late(grpc_clients, "strict"), "grpc-DEADLINE_EXCEEDED")
    if late is _grpc_late_by_metadata:
        assert sum(IN_THE_MODEL in m for _, m in outcomes) >= 4, outcomes
    _answered_by_the_model_itself(server, "strict")


def test_a_clients_deadline_is_not_rescued_by_the_fallback(server):
    def fallbacks() -> float:
        return server.metric("pipeline_fallbacks_total", model="rescued")

    before = fallbacks()
    outcomes = _late_burst(_rest_late(server, "rescued"), "http-504")
    assert sum(IN_THE_MODEL in m for _, m in outcomes) >= 4, outcomes
    _answered_by_the_model_itself(server, "rescued")
    assert fallbacks() == before  # no reason at all: the fallback answered none of them


# ------------------------------------------------------------------------------ request ids


def _rest_with_id(server: Server, request_id: str) -> requests.Response:
    tensor = {"name": "X", "shape": [1, 10], "datatype": "FP64", "data": support.ROW}
    body: dict[str, Any] = {"id": request_id, "inputs": [tensor]}
    return requests.post(f"{server.http_url}/v2/models/backup/infer", json=body, timeout=support.HTTP_TIMEOUT_S)


def _grpc_with_id(server: Server, request_id: str) -> tuple[Any, Any]:
    """(response, call) of a raw ModelInfer: the call holds the trailing metadata."""
    request = pb_2d_request("backup", np.asarray([support.ROW]))
    request.id = request_id
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer.with_call(request, timeout=support.HTTP_TIMEOUT_S)


def test_a_rest_request_id_past_the_limit_is_refused(server):
    refused = _rest_with_id(server, "r" * (MAX_ID_BYTES + 1))
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert f"{MAX_ID_BYTES + 1} bytes" in error and f"limit of {MAX_ID_BYTES} bytes" in error, error
    answered = _rest_with_id(server, "r" * MAX_ID_BYTES)
    assert answered.status_code == 200, answered.text
    assert answered.headers["ce-id"] == answered.json()["id"] == "r" * MAX_ID_BYTES


def test_a_grpc_request_id_past_the_limit_is_invalid(server):
    with pytest.raises(grpc.RpcError) as refused:
        _grpc_with_id(server, "g" * (MAX_ID_BYTES + 1))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    assert f"limit of {MAX_ID_BYTES} bytes" in refused.value.details(), refused.value.details()
    response, call = _grpc_with_id(server, "g" * MAX_ID_BYTES)
    assert response.id == "g" * MAX_ID_BYTES
    assert dict(call.trailing_metadata())["ce-id"] == "g" * MAX_ID_BYTES
