"""Raw HTTP/1.1 over loopback sockets, for the heads no HTTP client library sends: oversized,
endless, slow, or with a malformed Host. Every read is bounded by a timeout."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Iterable, Optional

from harness.server import HOST, Server

INFER_BODY = json.dumps({"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64",
                                     "data": [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.003, 0.02, -0.02]}]}).encode()  # fmt: skip
_MAX_RESPONSE_BYTES = 1 << 20


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def connect(port: int, timeout_s: float = 10.0) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=timeout_s)


def head(path: str = "/v2/health/ready", method: str = "GET", hosts: Iterable[bytes] = (b"127.0.0.1",),
         extra: Iterable[bytes] = (), version: bytes = b"HTTP/1.1", body: bytes = b"") -> bytes:  # fmt: skip
    """A whole request: `hosts` as Host lines (none, one or several), `extra` header lines."""
    lines = [method.encode() + b" " + path.encode() + b" " + version]
    lines += [b"Host: " + h for h in hosts] + list(extra)
    if body or method == "POST":
        lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


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


def exchange(port: int, request: bytes, timeout_s: float = 10.0) -> Response:
    with connect(port, timeout_s) as sock:
        sock.sendall(request)
        return read_response(sock, timeout_s)


def closed_within(sock: socket.socket, timeout_s: float) -> Optional[bytes]:
    """Everything the server sent until it closed the connection, or None if it did not within
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
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
    return [line for line in server.log_text().splitlines()
            if '"level": "ERROR"' in line or '"level": "CRITICAL"' in line or "Traceback" in line]  # fmt: skip
