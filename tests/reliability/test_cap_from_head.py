"""The in-flight cap decided from the request head (runtime.policy.gate), against a real server: a
REST request past the cap is refused before its body is read, a small refused request keeps its
connection, a slot is held from the head until the response (or the client leaving), and REST and
gRPC share the count.

Model `capped` (the slow test double, SLOW_MS a request): max_in_flight 1. Raw sockets where the
test needs to control what the client has sent.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from harness.repository import add_model, make_repository
from harness.server import Server
from tests.reliability import support

SLOW_MS = 1500
OVERLOAD_MESSAGE = "already has 1 request(s) in flight, its limit; retry later"
BODY = json.dumps({"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": support.ROW}]}).encode()
AT_ONCE_S = 0.5  # a refusal from the head: far less than the computation it would wait behind


def _launch(request: pytest.FixtureRequest) -> Server:
    root = make_repository(request.getfixturevalue("tmp_path_factory").mktemp("cap-head") / "repo", workers=0)
    add_model(root, "capped", implementation=support.SLOW_RUNTIME, extra={"max_in_flight": 1})
    env = {"SLOW_RUNTIME_DELAY_MS": str(SLOW_MS), "PIPELINE_DRAIN_DELAY_S": "0"}
    return support.launch(root, env=env, ready=["capped"])


SERVERS = {"cap-from-head": _launch}


@pytest.fixture(scope="module")
def server(fleet) -> Server:
    server = fleet["cap-from-head"]
    # The first request on a route is admitted the usual way, and teaches the gate its policy.
    assert support.rest_infer(server, "capped").status_code == 200
    return server


def _head(length: int | str, path: str = "/v2/models/capped/infer") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    ).encode()


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port), timeout=SLOW_MS / 1000 * 4)


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes, float]:
    started = time.monotonic()
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body, time.monotonic() - started


def _refusals(server: Server) -> float:
    return server.metric("pipeline_admission_refusals_total", model="capped", reason="overloaded")


@pytest.fixture
def occupied(server) -> Iterator[threading.Thread]:
    """The model's one slot taken by a computing REST request (for about SLOW_MS)."""
    thread = threading.Thread(target=support.rest_infer, args=(server, "capped"), daemon=True)
    thread.start()
    time.sleep(0.3)
    yield thread
    thread.join(SLOW_MS / 1000 * 4)


def test_a_refused_request_is_answered_before_its_body_arrives(server, occupied):
    before = _refusals(server)
    with _connect(server) as sock:
        sock.sendall(_head(1_000_000))  # a large body announced, none of it sent
        status, headers, body, seconds = _answer(sock)
    assert status == 503 and seconds < AT_ONCE_S, (status, seconds)
    assert OVERLOAD_MESSAGE in json.loads(body)["error"]
    assert headers["retry-after"] == "1"
    assert headers["connection"] == "close"  # a large unread body is not drained for nothing
    assert _refusals(server) == before + 1


def test_a_small_refused_request_keeps_its_connection(server, occupied):
    with _connect(server) as sock:
        sock.sendall(_head(len(BODY)) + BODY)
        status, headers, _, seconds = _answer(sock)
        assert status == 503 and seconds < AT_ONCE_S and "connection" not in headers
        occupied.join(SLOW_MS / 1000 * 4)
        sock.sendall(_head(len(BODY)) + BODY)  # the same connection, once the slot is free
        status, _, body, _ = _answer(sock)
    assert status == 200, body


def test_a_slot_is_held_from_the_head_until_the_client_leaves(server, grpc_client):
    """A request whose body is still arriving counts: REST and gRPC are refused meanwhile; once
    its client disconnects the slot is free again (not leaked)."""
    with _connect(server) as sending:
        sending.sendall(_head(len(BODY)) + BODY[:10])
        time.sleep(0.3)
        refused = requests.post(f"{server.http_url}/v2/models/capped/infer", data=BODY, timeout=SLOW_MS / 1000)
        assert refused.status_code == 503, refused.text
        with pytest.raises(Exception) as grpc_refused:
            support.grpc_infer(grpc_client, "capped", client_timeout=SLOW_MS / 1000)
        assert support.grpc_status(grpc_refused.value) == "UNAVAILABLE"
    deadline = time.monotonic() + 5
    while (answer := support.rest_infer(server, "capped")).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def grpc_client(server):
    client = support.grpc_client(server)
    yield client
    client.close()
