"""Overload and time: the per-model cap on requests in flight and per-request deadlines, over REST
and gRPC, with and without parallel workers.

Models (parameters.extra), all but `diabetes` computing for SLOW_MS per request:
- `capped`: max_in_flight 2: requests beyond it get 503 / gRPC UNAVAILABLE at once;
- `deadline`: request_timeout_ms 150 (the default deadline): requests still queued when it
  passes get 504 / gRPC DEADLINE_EXCEEDED instead of being computed; X-Request-Timeout-Ms
  replaces it per request;
- `slow`: no admission options, offload_compute on: gRPC's own deadline is honoured;
- `diabetes`: the real runtime, nothing set: the header alone gives it a deadline.
"Not computed" is checked with the runtime's own counter of requests it computed.
"""

from __future__ import annotations

import functools

import pytest
import requests
from tritonclient.utils import InferenceServerException

from harness.repository import add_model, make_repository
from harness.server import Server
from tests.reliability import support

SLOW_MS = 400
CAP = 2
DEFAULT_TIMEOUT_MS = 150
OVERLOAD_MESSAGE = f"already has {CAP} request(s) in flight, its limit; retry later"


def _launch(request: pytest.FixtureRequest, workers: int) -> Server:
    root = make_repository(
        request.getfixturevalue("tmp_path_factory").mktemp(f"admission-{workers}") / "repo", workers=workers
    )
    add_model(root, "capped", implementation=support.SLOW_RUNTIME, extra={"max_in_flight": CAP})
    add_model(root, "deadline", implementation=support.SLOW_RUNTIME, extra={"request_timeout_ms": DEFAULT_TIMEOUT_MS})
    add_model(root, "slow", implementation=support.SLOW_RUNTIME, extra={"offload_compute": True})
    add_model(root, "diabetes")
    env = {"SLOW_RUNTIME_DELAY_MS": str(SLOW_MS), "PIPELINE_DRAIN_DELAY_S": "0"}
    return support.launch(root, env=env, ready=["capped", "deadline", "slow", "diabetes"])


# Launched with the suite's other servers (conftest.fleet).
SERVERS = {f"admission-workers-{w}": functools.partial(_launch, workers=w) for w in (0, 1)}


@pytest.fixture(scope="module", params=[0, 1], ids=["workers-0", "workers-1"])
def server(request, fleet) -> Server:
    return fleet[f"admission-workers-{request.param}"]


@pytest.fixture(scope="module")
def grpc_clients(server):
    clients = [support.grpc_client(server) for _ in range(6)]
    for client in clients:  # connected before any burst, so all requests leave together
        support.grpc_infer(client, "diabetes")
    yield clients
    for client in clients:
        client.close()


def computed(server: Server, model: str) -> float:
    return server.metric("pipeline_requests_total", model=model, outcome="ok")


def rest_and_grpc(server: Server, grpc_clients, model: str):
    """call(i) for a burst: gRPC for odd i, REST for even i (30 s timeouts)."""

    def call(i: int):
        if i % 2:
            return support.grpc_infer(grpc_clients[i], model, client_timeout=30)
        return support.rest_infer(server, model, timeout=30)

    return call


def classify(result) -> tuple[str, str]:
    value, _ = result
    if isinstance(value, requests.Response):
        return (
            ("ok" if value.status_code == 200 else f"http-{value.status_code}"),
            value.json().get("error", "") if value.status_code != 200 else "",
        )
    if isinstance(value, InferenceServerException):
        return f"grpc-{support.grpc_status(value)}", str(value.message())
    if isinstance(value, Exception):
        raise value
    return "ok", ""


# ------------------------------------------------------------------------------ overload


def test_requests_beyond_the_cap_are_refused_at_once_and_the_rest_succeed(server, grpc_clients):
    before = computed(server, "capped")
    refusals_before = server.metric("pipeline_admission_refusals_total", model="capped", reason="overloaded")

    results = support.burst(6, rest_and_grpc(server, grpc_clients, "capped"))
    kinds = [classify(r) for r in results]
    ok = [r for r, (k, _) in zip(results, kinds) if k == "ok"]
    refused = [(r, m) for r, (k, m) in zip(results, kinds) if k in ("http-503", "grpc-UNAVAILABLE")]
    print(
        f"burst of 6 at cap {CAP}: {sorted(k for k, _ in kinds)}; refusals answered in "
        f"{max(r[1] for r, _ in refused) * 1000:.0f} ms at most"
    )
    assert len(ok) + len(refused) == 6, kinds
    assert len(ok) >= CAP and len(refused) >= 3, kinds
    if len(ok) == CAP:  # 3 REST + 3 gRPC, 2 admitted: each protocol had a refusal
        assert {k for k, _ in kinds} == {"ok", "http-503", "grpc-UNAVAILABLE"}, kinds
    assert all(OVERLOAD_MESSAGE in m and "capped" in m for _, m in refused), refused
    # Refused at once (not queued behind the computations), and never computed.
    assert all(r[1] < SLOW_MS / 1000 for r, _ in refused)
    assert all(r[1] >= SLOW_MS / 1000 * 0.9 for r in ok)
    assert computed(server, "capped") - before == len(ok)
    refusals = server.metric("pipeline_admission_refusals_total", model="capped", reason="overloaded")
    assert refusals - refusals_before == len(refused)
    # Once the burst is over, the model answers again.
    assert support.rest_infer(server, "capped").status_code == 200


# ------------------------------------------------------------------------------ deadlines


def test_a_deadline_already_passed_is_refused_without_computing(server, grpc_clients):
    before = computed(server, "diabetes")
    rest = support.rest_infer(server, "diabetes", headers={"X-Request-Timeout-Ms": "0"})
    assert rest.status_code == 504, rest.text
    assert "deadline passed before the request was admitted" in rest.json()["error"]
    with pytest.raises(InferenceServerException) as grpc_error:
        support.grpc_infer(grpc_clients[0], "diabetes", headers={"x-request-timeout-ms": "0"})
    assert support.grpc_status(grpc_error.value) == "DEADLINE_EXCEEDED"
    assert "deadline passed before the request was admitted" in grpc_error.value.message()
    assert computed(server, "diabetes") == before
    # A generous deadline changes nothing.
    assert support.rest_infer(server, "diabetes", headers={"X-Request-Timeout-Ms": "60000"}).status_code == 200


def test_the_default_deadline_refuses_what_waited_too_long_for_its_turn(server, grpc_clients):
    before = computed(server, "deadline")

    results = support.burst(3, rest_and_grpc(server, grpc_clients, "deadline"))
    kinds = [classify(r) for r in results]
    print(f"burst of 3, default deadline {DEFAULT_TIMEOUT_MS} ms, {SLOW_MS} ms compute: {sorted(k for k, _ in kinds)}")
    ok = [k for k, _ in kinds if k == "ok"]
    late = [m for k, m in kinds if k in ("http-504", "grpc-DEADLINE_EXCEEDED")]
    assert len(ok) + len(late) == 3 and ok and late, kinds
    assert all("deadline passed before its computation started" in m for m in late), late
    assert computed(server, "deadline") - before == len(ok)


def test_the_request_header_replaces_the_default_deadline(server):
    before = computed(server, "deadline")
    results = support.burst(
        3, lambda i: support.rest_infer(server, "deadline", headers={"X-Request-Timeout-Ms": "20000"}, timeout=30)
    )
    assert [classify(r)[0] for r in results] == ["ok"] * 3
    assert computed(server, "deadline") - before == 3


def test_the_grpc_deadline_is_honoured_by_the_server(server, grpc_clients):
    before = computed(server, "slow")
    results = support.burst(3, lambda i: support.grpc_infer(grpc_clients[i], "slow", client_timeout=0.15))
    assert [classify(r)[0] for r in results] == ["grpc-DEADLINE_EXCEEDED"] * 3
    # The first started before its deadline and was computed; the two queued behind it were not.
    # (Wait until the server is done with them: the server holds at most three 400 ms jobs.)
    assert support.rest_infer(server, "slow", timeout=30).status_code == 200
    assert computed(server, "slow") - before == 2  # the first of the burst + the check just above


def test_a_malformed_timeout_is_a_client_error(server, grpc_clients):
    rest = support.rest_infer(server, "diabetes", headers={"X-Request-Timeout-Ms": "soon"})
    assert rest.status_code == 400 and "x-request-timeout-ms" in rest.json()["error"]
    with pytest.raises(InferenceServerException) as grpc_error:
        support.grpc_infer(grpc_clients[0], "diabetes", headers={"x-request-timeout-ms": "-5"})
    assert support.grpc_status(grpc_error.value) == "INVALID_ARGUMENT"
