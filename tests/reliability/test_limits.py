"""Request size limits, the locked repository API and per-client rate limits, on real servers: a
body above the limit is a 413 before it is read (memory stays flat under many of them), chunked
ones too; the repository API needs the admin token, is off where it must be, and open only on
loopback without any auth; a client over its rate gets 429 / RESOURCE_EXHAUSTED with a retry hint,
other clients do not, and it gets through again once its bucket refills."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from harness.repository import add_model, make_repository
from harness.server import Server, served
from tests.reliability.support import launch, rest_infer

LIMIT = 1_000_000
ADMIN = "limits-admin-5e1a"
OVERSIZED = 32 * 1024 * 1024  # what each oversized request declares
RATE, BURST = 2.0, 3
CLIENT_A, CLIENT_B, CLIENT_C = "rated-client-a", "rated-client-b", "rated-client-c"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits")
    specs = {
        "guarded": {"PIPELINE_MAX_REQUEST_BYTES": str(LIMIT), "PIPELINE_ADMIN_TOKENS": ADMIN},
        "default": {},  # loopback, no auth at all: the repository API stays open
        "inference-auth": {"PIPELINE_AUTH_TOKENS": "inference-only"},
        "admin-off": {"PIPELINE_ADMIN_API": "off", "PIPELINE_ADMIN_TOKENS": ADMIN},
    }
    launched = {}
    for name, env in specs.items():
        root = make_repository(base / name, workers=0)
        add_model(root, "diabetes")
        if name == "guarded":
            add_model(
                root,
                "rated",
                extra={"rate_limit_per_s": RATE, "rate_limit_burst": BURST, "auth_token_env": "RATED_TOKENS"},
            )
            add_model(root, "rated-by-address", extra={"rate_limit_per_s": RATE, "rate_limit_burst": BURST})
            env = {**env, "RATED_TOKENS": f"{CLIENT_A},{CLIENT_B},{CLIENT_C}"}
        ready = ["diabetes", "rated", "rated-by-address"] if name == "guarded" else ["diabetes"]
        launched[name] = launch(root, env=env, ready=ready)
    yield from served(launched)


def _declared_only(server: Server, declared: int, sent: int = 64 * 1024) -> int:
    """A POST that declares `declared` bytes, sends `sent`, and reads the status line."""
    host, port = server.http_hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        head = (
            f"POST /v2/models/diabetes/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"0" * sent)
        return int(sock.recv(4096).split(b" ", 2)[1])


def _rss(server: Server) -> int:
    return sum(p.memory_info().rss for p in server.processes())


def test_a_declared_oversized_body_is_refused_before_it_is_read(servers):
    server = servers["guarded"]
    response = requests.post(
        f"{server.http_url}/v2/models/diabetes/infer",
        data=b"0" * (LIMIT + 1),
        headers={"Content-Type": "application/json"},
        timeout=20,
    )
    assert response.status_code == 413
    assert f"exceeds this server's limit of {LIMIT} bytes" in response.json()["error"]
    assert rest_infer(server, "diabetes").status_code == 200


def test_memory_stays_flat_across_twenty_concurrent_oversized_bodies(servers):
    server = servers["guarded"]
    before = _rss(server)
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: _declared_only(server, OVERSIZED), range(20)))
    assert statuses == [413] * 20
    grown = _rss(server) - before
    assert grown < 20 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB for bodies never read"
    assert rest_infer(server, "diabetes").status_code == 200


def test_a_chunked_oversized_body_is_refused_once_it_passes_the_limit(servers):
    server = servers["guarded"]

    def chunks():
        for _ in range(4 * LIMIT // 65536):
            yield b"0" * 65536

    response = requests.post(
        f"{server.http_url}/v2/models/diabetes/infer",
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=20,
    )
    assert response.status_code == 413 and "more than" in response.json()["error"]


def test_a_chunked_body_within_the_limit_is_served(servers):
    server = servers["guarded"]
    body = b'{"inputs":[{"name":"X","shape":[1,10],"datatype":"FP64","data":[0,0,0,0,0,0,0,0,0,0]}]}'
    response = requests.post(
        f"{server.http_url}/v2/models/diabetes/infer",
        data=iter([body[:40], body[40:]]),
        headers={"Content-Type": "application/json"},
        timeout=20,
    )
    assert response.status_code == 200, response.text


def _unload(server: Server, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{server.http_url}/v2/repository/models/diabetes/unload", headers=headers, timeout=20)


def test_unload_needs_the_admin_token_not_an_inference_one(servers):
    server = servers["guarded"]
    assert _unload(server).status_code == 401
    assert _unload(server, "inference-only").status_code == 401
    assert rest_infer(server, "diabetes").status_code == 200  # still loaded
    index = requests.post(
        f"{server.http_url}/v2/repository/index", json={}, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=20
    )
    assert index.status_code == 200 and "diabetes" in [m["name"] for m in index.json()]


def test_with_inference_auth_and_no_admin_token_the_repository_api_is_off(servers):
    server = servers["inference-auth"]
    refused = _unload(server, "inference-only")
    assert refused.status_code == 403 and "no admin token is set" in refused.json()["error"]
    ok = rest_infer(server, "diabetes", headers={"Authorization": "Bearer inference-only"})
    assert ok.status_code == 200


def test_the_repository_api_can_be_switched_off(servers):
    server = servers["admin-off"]
    refused = _unload(server, ADMIN)
    assert refused.status_code == 403 and "PIPELINE_ADMIN_API=off" in refused.json()["error"]


def test_on_loopback_without_any_auth_it_stays_open_and_says_so(servers):
    server = servers["default"]
    warnings = [r for r in server.log_records() if r.get("logger") == "runtime.policy.admin"]
    assert warnings and warnings[0]["level"] == "WARNING" and "open" in warnings[0]["message"]
    index = requests.post(f"{server.http_url}/v2/repository/index", json={}, timeout=20)
    assert index.status_code == 200


# ------------------------------------------------------------------------------ rate limits


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_client_over_its_rate_gets_429_and_recovers_after_the_refill(servers):
    server = servers["guarded"]
    statuses = [rest_infer(server, "rated", headers=_bearer(CLIENT_A)).status_code for _ in range(BURST)]
    assert statuses == [200] * BURST
    refused = rest_infer(server, "rated", headers=_bearer(CLIENT_A))
    assert refused.status_code == 429 and refused.headers.get("Retry-After") == "1"
    assert "is over its rate for model 'rated' (2/s, burst 3); retry after" in refused.json()["error"]
    assert CLIENT_A not in refused.text  # the client is named by a hash, never by its token
    assert rest_infer(server, "rated", headers=_bearer(CLIENT_B)).status_code == 200  # its own bucket
    time.sleep(1.0 / RATE + 0.1)
    assert rest_infer(server, "rated", headers=_bearer(CLIENT_A)).status_code == 200


def test_over_grpc_it_is_resource_exhausted(servers):
    server = servers["guarded"]
    client = tgrpc.InferenceServerClient(server.grpc_url)
    try:
        tensor = tgrpc.InferInput("X", [1, 10], "FP64")
        tensor.set_data_from_numpy(np.zeros((1, 10)))
        codes = []
        for _ in range(BURST + 1):
            try:
                client.infer("rated", [tensor], headers={"authorization": f"Bearer {CLIENT_C}"})
                codes.append("OK")
            except InferenceServerException as refused:
                codes.append(refused.status())
                message = refused.message()
    finally:
        client.close()
    assert codes == ["OK"] * BURST + ["StatusCode.RESOURCE_EXHAUSTED"] and "retry after" in message


def test_without_auth_clients_are_told_apart_by_address(servers):
    server = servers["guarded"]
    statuses = [rest_infer(server, "rated-by-address").status_code for _ in range(BURST + 1)]
    assert statuses == [200] * BURST + [429]
    samples = server.scrape()
    assert (
        samples[("pipeline_rate_limited_total", frozenset({("model", "rated-by-address"), ("client", "by-address")}))]
        >= 1
    )
