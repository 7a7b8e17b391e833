"""HTTP/1.1 spoken over a raw socket, for the hostile tests: heads, framings and bodies that a client
library would tidy up (a CHUNKED spelling, a gzip bomb, a path trick) sent exactly as written."""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Iterable, NamedTuple


class Answer(NamedTuple):
    status: int
    body: dict[str, Any]  # the JSON body, {} when there is none or it is not JSON
    seconds: float  # from the head sent to the answer read


def head(hostport: str, path: str, headers: dict[str, str], method: str = "POST") -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {hostport}", *[f"{k}: {v}" for k, v in headers.items()]]
    return "\r\n".join(lines) + "\r\n\r\n"


def chunked(data: bytes, size: int = 65536) -> Iterable[bytes]:
    """`data` in chunked transfer coding."""
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def exchange(hostport: str, request_head: str, pieces: Iterable[bytes] = (), timeout: float = 20) -> Answer:
    """Send a head and the body's pieces (stopping once the server closes: it may answer before
    the body ends), then read one answer."""
    host, port = hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(request_head.encode("latin-1"))
        try:
            for piece in pieces:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_answer(sock)
        seconds = time.monotonic() - started
    status = int(answer.split(b" ", 2)[1])
    payload = answer.split(b"\r\n\r\n", 1)[1]
    try:
        return Answer(status, json.loads(payload or b"{}"), seconds)
    except ValueError:
        return Answer(status, {}, seconds)


def _read_answer(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while b"\r\n\r\n" not in answer or len(answer) < _length(answer):
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    except ConnectionResetError:
        pass
    return answer


def _length(answer: bytes) -> int:
    """The whole answer's length once its head is in, from its Content-Length."""
    response_head = answer.partition(b"\r\n\r\n")[0]
    for line in response_head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(response_head) + 4 + int(line.split(b":")[1])
    return len(answer)
