"""Raw HTTP/1.1 over loopback sockets, for what no HTTP client library sends: heads oversized,
endless, slow or with a malformed Host; framings and codings in odd spellings; gzip bombs; path
tricks. Every read is bounded by a timeout. tests/security, tests/fuzz and tests/pins use it."""

from __future__ import annotations

import json
import multiprocessing
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import requests

from harness.server import HOST, Server

INFER_BODY = json.dumps(
    {
        "inputs": [
            {
                "name": "X",
                "shape": [1, 10],
                "datatype": "FP64",
                "data": [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.003, 0.02, -0.02],
            }
        ]
    }
).encode()
_MAX_RESPONSE_BYTES = 1 << 20


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float = 0.0  # from the request sent to the response read (exchange)

    def json(self) -> dict:
        return json.loads(self.body)


def connect(port: int, timeout_s: float = 10.0) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=timeout_s)


def head(
    path: str = "/v2/health/ready",
    method: str = "GET",
    hosts: Iterable[bytes] = (b"127.0.0.1",),
    extra: Iterable[bytes] = (),
    version: bytes = b"HTTP/1.1",
    body: bytes = b"",
) -> bytes:
    """A whole request: `hosts` as Host lines (none, one or several), `extra` header lines."""
    lines = [method.encode() + b" " + path.encode() + b" " + version]
    lines += [b"Host: " + h for h in hosts] + list(extra)
    if body or method == "POST":
        lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def request_head(path: str, headers: dict[str, str], method: str = "POST") -> bytes:
    """A head alone, exactly these headers (and Host): the caller frames and sends the body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", *[f"{k}: {v}" for k, v in headers.items()]]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(data: bytes, size: int = 65536) -> Iterable[bytes]:
    """`data` in chunked transfer coding."""
    for i in range(0, len(data), size):
        piece = data[i : i + size]
        yield b"%x\r\n" % len(piece) + piece + b"\r\n"
    yield b"0\r\n\r\n"


def infer(hosts: Iterable[bytes] = (b"127.0.0.1",), model: str = "diabetes") -> bytes:
    return head(f"/v2/models/{model}/infer", "POST", hosts=hosts, body=INFER_BODY)


def read_response(sock: socket.socket, timeout_s: float = 10.0) -> Response:
    """One response (with a Content-Length). A reset after it is ignored: a server that refuses
    a head closes with the client's bytes unread."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while len(data) < _MAX_RESPONSE_BYTES:
        if b"\r\n\r\n" in data:
            top, _, rest = data.partition(b"\r\n\r\n")
            lines = top.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            if len(rest) >= length:
                return Response(int(lines[0].split(" ", 2)[1]), headers, rest[:length])
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} bytes of a response: {data[:200]!r}")
        data += chunk
    raise AssertionError("response larger than expected")


def exchange(port: int, request: bytes, timeout_s: float = 10.0, pieces: Iterable[bytes] = ()) -> Response:
    """Send `request`, then the body's `pieces` (stopping once the server closes: it may answer
    before the body ends), and read one response."""
    with connect(port, timeout_s) as sock:
        started = time.monotonic()
        sock.sendall(request)
        try:
            for piece in pieces:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_response(sock, timeout_s)
        return replace(response, seconds=time.monotonic() - started)


def closed_within(sock: socket.socket, timeout_s: float) -> bytes | None:
    """Everything the server sent until it closed the connection, or None if it did not within
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return None


def server_rss(server: Server) -> int:
    return sum(p.memory_info().rss for p in server.processes())


def errors_logged(server: Server) -> list[str]:
    """Log lines at ERROR or above, and any traceback."""
    return [
        line
        for line in server.log_text().splitlines()
        if '"level": "ERROR"' in line or '"level": "CRITICAL"' in line or "Traceback" in line
    ]


# ------------------------------------------------------------------------------ under attack

NORMAL_REQUESTS = 150
MAX_RSS_GROWTH = 64 * 1024 * 1024
ATTACK_BOUND_S = 60.0


def normal_latencies(server: Server, headers: dict[str, str] | None = None) -> list[float]:
    """NORMAL_REQUESTS, alternating readiness and inference on one keep-alive session."""
    latencies = []
    with requests.Session() as session:
        for i in range(NORMAL_REQUESTS):
            started = time.monotonic()
            if i % 2:
                r = session.get(f"{server.http_url}/v2/health/ready", timeout=10)
            else:
                r = session.post(
                    f"{server.http_url}/v2/models/diabetes/infer",
                    data=INFER_BODY,
                    headers={"Content-Type": "application/json", **(headers or {})},
                    timeout=10,
                )
            latencies.append(time.monotonic() - started)
            assert r.status_code == 200, r.text
    return latencies


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


WINDOWS = 3


def windowed_p99(server: Server, headers: dict[str, str] | None = None) -> float:
    return statistics.median(p99(normal_latencies(server, headers)) for _ in range(WINDOWS))


Attacker = Callable[[Any], int | None]  # until the stop event is set: one hostile request, its status


class Attack:
    """Each attacker on its own thread, over and over (at most `rounds` times, each its own
    connection, `pause_s` apart) until stopped; counts the statuses the server answered them with
    (0: closed). The attackers run in a forked process of their own: as threads of the test's
    process they would hold the GIL against the normal client whose latency the test measures."""

    def __init__(self, attackers: dict[str, tuple[int, Attacker]], rounds: int = 20, pause_s: float = 0.1) -> None:
        context = multiprocessing.get_context("fork")
        self._attackers, self._rounds, self._pause_s = attackers, rounds, pause_s
        self._stop = context.Event()
        self._results = context.Queue()
        self._process = context.Process(target=self._attack, daemon=True)
        self.answered: dict[str, dict[int, int]] = {}

    def __enter__(self) -> Attack:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.answered = self._results.get(timeout=ATTACK_BOUND_S)
        self._process.join(15)
        assert not self._process.is_alive(), "attackers did not stop"

    def _attack(self) -> None:
        answered: dict[str, dict[int, int]] = {kind: {} for kind in self._attackers}
        lock = threading.Lock()

        def run(kind: str, attack: Attacker) -> None:
            for _ in range(self._rounds):
                try:
                    status = attack(self._stop)
                except OSError:
                    status = 0
                if self._stop.is_set():
                    return
                with lock:
                    answered[kind][status or 0] = answered[kind].get(status or 0, 0) + 1
                if self._stop.wait(self._pause_s):
                    return

        threads = [
            threading.Thread(target=run, args=(kind, attack), daemon=True)
            for kind, (count, attack) in self._attackers.items()
            for _ in range(count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(ATTACK_BOUND_S)
        self._results.put(answered)


def under_attack(
    server: Server,
    attack: Attack,
    settle_s: float = 1.0,
    after_s: float = 0.0,
    headers: dict[str, str] | None = None,
) -> tuple[float, float, int]:
    """(quiet p99, p99 under `attack`, peak RSS growth in bytes) of a normal client. Each p99 is the
    median of WINDOWS windows' p99s: one scheduling stall of the shared machine moves one window's
    p99 (its worst two requests), an attack that slows the server moves every window's."""
    normal_latencies(server, headers)  # warm-up: connections, caches, the model's first call
    quiet = windowed_p99(server, headers)
    before = server_rss(server)
    peak = [before]
    with attack:
        started = time.monotonic()
        deadline = started + ATTACK_BOUND_S
        time.sleep(settle_s)  # the attack under way
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.1) and time.monotonic() < deadline:
                peak[0] = max(peak[0], server_rss(server))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        attacked = windowed_p99(server, headers)
        time.sleep(max(0.0, started + after_s - time.monotonic()))
        sampling.set()
        sampler.join(5)
    return quiet, attacked, peak[0] - before
