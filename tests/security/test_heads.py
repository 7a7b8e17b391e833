"""Request heads on the REST and metrics ports (runtime.edge.head_limits, runtime.edge.host, enforced by
runtime.integration.http_head): oversized heads and too many headers are 431 before the head is
all in, a head that takes too long is 408 and closed, a connection that sends nothing and an idle
keep-alive connection are closed, a malformed Host is 400 before any middleware (no traceback),
and twenty huge plus twenty slow heads at once cost the server neither memory nor latency."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.models import served_models
from harness.server import Server
from tests.security.support import (
    MAX_RSS_GROWTH,
    Attack,
    Attacker,
    Response,
    closed_within,
    connect,
    errors_logged,
    exchange,
    head,
    infer,
    read_response,
    under_attack,
)

HEAD_TIMEOUT_S = 2.0
KEEPALIVE_TIMEOUT_S = 1.0
MAX_HEAD_BYTES = 64 * 1024  # the defaults, left unset
MAX_HEADERS = 100
# The clock that closes overdue heads ticks every quarter of the timeout (at most every second).
TIMEOUT_SLACK_S = HEAD_TIMEOUT_S / 4 + 1.0
HUGE = 8 * 1024 * 1024


def _launch(request: pytest.FixtureRequest) -> Server:
    """The shipped repository, as tests/integration serves it, with short timeouts."""
    log_dir: Path = request.getfixturevalue("tmp_path_factory").mktemp("heads")
    env = {
        "PIPELINE_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "PIPELINE_KEEPALIVE_TIMEOUT_S": str(KEEPALIVE_TIMEOUT_S),
        "MLSERVER_METRICS_DIR": str(log_dir / ".metrics"),
    }
    return Server.launch(log_dir / "server.log", models=served_models(), env=env)


SERVERS = {"heads": _launch}


@pytest.fixture
def server(fleet) -> Server:
    return fleet["heads"]


def _ports(server: Server) -> dict[str, int]:
    return {"rest": server.http_port, "metrics": server.metrics_port}


def _path(port_name: str) -> str:
    return "/metrics" if port_name == "metrics" else "/v2/health/ready"


def _unfinished(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()


# ------------------------------------------------------------------------------ size and count


@pytest.mark.parametrize("port_name", ["rest", "metrics"])
def test_an_8_mib_header_line_is_431_before_it_is_all_sent(server, port_name):
    port = _ports(server)[port_name]
    started = time.monotonic()
    with connect(port) as sock:
        sock.sendall(_unfinished(_path(port_name)) + b"X-Big: " + b"x" * (128 * 1024))
        refused = read_response(sock, timeout_s=5)
    assert refused.status == 431, refused
    assert refused.headers["connection"] == "close"
    assert refused.json() == {"error": f"request head larger than {MAX_HEAD_BYTES} bytes (PIPELINE_MAX_HEAD_BYTES)"}
    assert time.monotonic() - started < 5


def test_a_head_just_within_the_limit_is_served(server):
    big = b"X-Big: " + b"x" * (MAX_HEAD_BYTES - 200)
    answer = exchange(server.http_port, head(extra=[big]))
    assert answer.status == 200


def test_a_body_sent_with_its_head_in_one_write_is_not_counted_as_head(server):
    rows = 2000  # about 200 KB of JSON: several times the head limit
    data = [0.01] * (rows * 10)
    body = f'{{"inputs":[{{"name":"X","shape":[{rows},10],"datatype":"FP64","data":{data}}}]}}'.encode()
    answer = exchange(server.http_port, head("/v2/models/diabetes/infer", "POST", body=body))
    assert answer.status == 200 and len(answer.json()["outputs"][0]["data"]) == rows


@pytest.mark.parametrize("port_name", ["rest", "metrics"])
def test_200_headers_are_431(server, port_name):
    extra = [b"X-Many-%d: 1" % i for i in range(200)]
    refused = exchange(_ports(server)[port_name], head(_path(port_name), extra=extra))
    assert refused.status == 431
    assert refused.json() == {"error": f"more than {MAX_HEADERS} header lines (PIPELINE_MAX_HEADERS)"}
    served = exchange(_ports(server)[port_name], head(_path(port_name), extra=extra[: MAX_HEADERS - 1]))
    assert served.status == 200  # the Host line makes it exactly the limit


# ------------------------------------------------------------------------------ time


def test_a_head_sent_one_byte_per_second_is_closed_by_the_head_timeout(server):
    request = _unfinished("/v2/health/ready") + b"X-Slow: " + b"s" * 20
    started = time.monotonic()
    with connect(server.http_port) as sock:
        sent = b""
        for byte in request:  # bounded: the request is 60 bytes
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sent += bytes([byte])
            answered = closed_within(sock, 1.0)
            if answered is not None:
                break
        elapsed = time.monotonic() - started
    assert answered, f"still open after {elapsed:.1f}s and {len(sent)} bytes"
    assert answered.startswith(b"HTTP/1.1 408 ") and b"PIPELINE_HEAD_TIMEOUT_S" in answered
    assert HEAD_TIMEOUT_S - 0.1 <= elapsed <= HEAD_TIMEOUT_S + TIMEOUT_SLACK_S + 1


@pytest.mark.parametrize("port_name", ["rest", "metrics"])
def test_a_connection_that_sends_nothing_is_closed(server, port_name):
    started = time.monotonic()
    with connect(_ports(server)[port_name]) as sock:
        answered = closed_within(sock, HEAD_TIMEOUT_S + TIMEOUT_SLACK_S)
    assert answered == b"", "still open" if answered is None else answered  # closed, no 408: nothing to answer
    assert time.monotonic() - started >= HEAD_TIMEOUT_S - 0.1


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(server):
    with connect(server.http_port) as sock:
        sock.sendall(head())
        assert read_response(sock).status == 200
        served = time.monotonic()
        answered = closed_within(sock, KEEPALIVE_TIMEOUT_S + 1.5)
        idle = time.monotonic() - served
    assert answered == b"", "still open" if answered is None else answered
    assert KEEPALIVE_TIMEOUT_S - 0.1 <= idle


def test_a_keep_alive_connection_kept_open_by_empty_lines_is_closed_by_the_head_timeout(server):
    # Blank lines before a request reset uvicorn's keep-alive timer without starting a request.
    with connect(server.http_port) as sock:
        sock.sendall(head())
        assert read_response(sock).status == 200
        started = time.monotonic()
        answered = None
        for _ in range(int((HEAD_TIMEOUT_S + TIMEOUT_SLACK_S) / 0.3) + 2):
            try:
                sock.sendall(b"\r\n")
            except OSError:
                answered = b""
                break
            answered = closed_within(sock, 0.3)
            if answered is not None:
                break
        elapsed = time.monotonic() - started
    assert answered is not None, f"still open after {elapsed:.1f}s"
    assert elapsed <= HEAD_TIMEOUT_S + TIMEOUT_SLACK_S + 1


def test_the_second_head_on_a_keep_alive_connection_is_limited_too(server):
    with connect(server.http_port) as sock:
        sock.sendall(head())
        assert read_response(sock).status == 200
        sock.sendall(_unfinished("/v2/health/ready") + b"X-Big: " + b"x" * (128 * 1024))
        assert read_response(sock, timeout_s=5).status == 431


# ------------------------------------------------------------------------------ Host


BAD_HOSTS = {"[zz]": [b"[zz]"], "a b": [b"a b"], "x:port": [b"x:port"], "two": [b"a.example", b"b.example"]}
ROUTES: dict[str, Callable[[Server, list[bytes]], Response]] = {
    "ready": lambda s, hosts: exchange(s.http_port, head(hosts=hosts)),
    "infer": lambda s, hosts: exchange(s.http_port, infer(hosts=hosts)),
    "metrics": lambda s, hosts: exchange(s.metrics_port, head("/metrics", hosts=hosts)),
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("host", BAD_HOSTS)
def test_a_malformed_or_repeated_host_is_400_without_a_traceback(server, route, host):
    errors_before = len(errors_logged(server))
    refused = ROUTES[route](server, BAD_HOSTS[host])
    assert refused.status == 400, refused
    assert "Host header" in refused.json()["error"]
    time.sleep(0.2)  # a log line, if any, is written after the answer
    assert errors_logged(server)[errors_before:] == []


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("host", [b"[::1]:8080", b"example.com"])
def test_a_valid_host_is_served(server, route, host):
    assert ROUTES[route](server, [host]).status == 200


def test_http_1_1_without_host_is_400_and_http_1_0_is_served(server):
    refused = exchange(server.http_port, head(hosts=[]))
    assert refused.status == 400 and refused.json()["error"] == "an HTTP/1.1 request needs a Host header"
    assert exchange(server.http_port, head(hosts=[], version=b"HTTP/1.0")).status == 200


# ------------------------------------------------------------------------------ under attack

ATTACKERS = 20


def _huge_head(port: int) -> Attacker:
    """An unfinished HUGE head, held open once sent, until the server closes it."""

    def attack(stop: Any) -> int | None:  # a multiprocessing Event (support.Attack)
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(_unfinished("/v2/health/ready") + b"X-Huge: ")
            for _ in range(HUGE // 65536):
                if stop.is_set():
                    return None
                sock.sendall(b"h" * 65536)
            answer = None
            while answer is None and not stop.is_set():
                answer = closed_within(sock, 0.2)
            return int(answer.split(b" ", 2)[1]) if answer else 0

    return attack


def _slow_head(port: int) -> Attacker:
    """A head a byte every quarter second, until the server closes it."""

    def attack(stop: Any) -> int | None:  # a multiprocessing Event (support.Attack)
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            for byte in _unfinished("/v2/health/ready") + b"X-Slow: " + b"s" * 100:
                sock.sendall(bytes([byte]))
                if stop.wait(0.25):
                    return None
                answer = closed_within(sock, 0.01)
                if answer is not None:
                    return int(answer.split(b" ", 2)[1]) if answer else 0
        return None

    return attack


def test_twenty_huge_and_twenty_slow_heads_cost_neither_memory_nor_latency(server):
    attack = Attack(
        {"huge": (ATTACKERS, _huge_head(server.http_port)), "slow": (ATTACKERS, _slow_head(server.http_port))}
    )
    quiet, attacked, grown = under_attack(server, attack, after_s=HEAD_TIMEOUT_S + TIMEOUT_SLACK_S)
    assert grown <= MAX_RSS_GROWTH, f"RSS grew by {grown / 2**20:.0f} MiB under attack"
    # A floor of 5 ms: on a shared machine a quiet p99 of a few ms moves by that much on its own.
    assert attacked <= 2 * max(quiet, 0.005), f"p99 {attacked * 1000:.1f} ms under attack, {quiet * 1000:.1f} ms quiet"
    assert sum(attack.answered["huge"].values()) >= ATTACKERS and attack.answered["slow"], attack.answered
    assert set(attack.answered["huge"]) <= {431, 0} and set(attack.answered["slow"]) <= {408, 0}, attack.answered
    assert errors_logged(server) == []


# ------------------------------------------------------------------------------ settings


def test_a_bad_limit_fails_the_start_with_a_line_naming_it(tmp_path):
    env = {"PIPELINE_MAX_HEADERS": "lots", "MLSERVER_METRICS_DIR": str(tmp_path / ".metrics")}
    server = Server.launch(tmp_path / "server.log", models=served_models(), env=env)
    try:
        code = server.wait_exit(90)
    finally:
        server.kill()
    assert code not in (None, 0)
    assert "PIPELINE_MAX_HEADERS='lots': expected a whole number of header lines > 0" in server.log_text()
