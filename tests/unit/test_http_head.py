"""runtime.integration.http_head in process: HeadGuard driven read by read through a stand-in
transport, for the edges raw sockets cannot aim at (where a read ends, pipelining). The same limits
on real servers: tests/security/test_heads.py; the install: tests/pins."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from runtime.edge.head_limits import HeadLimits
from runtime.integration.http_head import guarded_protocol

LIMITS = HeadLimits(max_head_bytes=1024, max_headers=10, head_timeout_s=2.0, keepalive_timeout_s=5.0)


def in_a_loop(test: Callable[..., Coroutine]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def statuses(self) -> list[int]:
        return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.written)]


async def _app(scope: dict, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(0.05)
    answer = json.dumps({"path": scope["path"], "body": len(body)}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(answer)).encode())]}
    )
    await send({"type": "http.response.body", "body": answer})


class Connection:
    def __init__(self, limits: HeadLimits = LIMITS) -> None:
        config = Config(_app, log_config=None)
        config.load()
        self.protocol = guarded_protocol(limits, "REST")(config=config, server_state=ServerState(), app_state={})
        self.transport = Transport()
        self.protocol.connection_made(self.transport)

    async def send(self, *reads: bytes, settle_s: float = 0.0) -> list[int]:
        for data in reads:
            self.protocol.data_received(data)
            await asyncio.sleep(0)
        for _ in range(20):
            await asyncio.sleep(settle_s / 20)
        return self.transport.statuses()


def request(path: str = "/", body: bytes = b"", extra: int = 0, padding: int = 0, host: bytes | None = b"a") -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode()]
    lines += [b"Host: " + host] if host is not None else []
    lines += [b"X-%d: 1" % i for i in range(extra)]
    lines += [b"X-Pad: " + b"p" * padding] if padding else []
    lines += [b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _padded_to(size: int) -> bytes:
    head = request(padding=1)
    return request(padding=1 + size - len(head))


@in_a_loop
async def test_a_head_of_exactly_the_limit_is_served_one_byte_more_is_431():
    assert len(_padded_to(LIMITS.max_head_bytes)) == LIMITS.max_head_bytes
    assert await Connection().send(_padded_to(LIMITS.max_head_bytes), settle_s=0.01) == [200]
    refused = Connection()
    assert await refused.send(_padded_to(LIMITS.max_head_bytes + 1)) == [431]
    assert refused.transport.closed and b"PIPELINE_MAX_HEAD_BYTES" in refused.transport.written


@in_a_loop
async def test_the_limit_counts_across_reads_and_nothing_past_it_is_parsed():
    connection = Connection()
    data = _padded_to(4 * LIMITS.max_head_bytes)
    reads = [data[i : i + 100] for i in range(0, len(data), 100)]
    assert await connection.send(*reads) == [431]
    assert connection.protocol._head_bytes == LIMITS.max_head_bytes


@in_a_loop
async def test_a_body_in_the_same_read_as_its_head_is_not_head():
    body = b"b" * (10 * LIMITS.max_head_bytes)
    connection = Connection()
    assert await connection.send(request(body=body), settle_s=0.01) == [200]
    assert json.loads(connection.transport.written.split(b"\r\n\r\n", 1)[1])["body"] == len(body)


@in_a_loop
async def test_pipelined_requests_in_one_read_are_each_counted_afresh():
    near = _padded_to(LIMITS.max_head_bytes - 10)
    connection = Connection()
    assert await connection.send(near + near + near, settle_s=0.01) == [200, 200, 200]
    assert not connection.transport.closed


@in_a_loop
async def test_an_oversized_head_pipelined_behind_a_request_lets_its_response_finish_then_closes():
    connection = Connection()
    statuses = await connection.send(request("/slow") + _padded_to(3 * LIMITS.max_head_bytes), settle_s=0.2)
    assert statuses == [200]  # no 431 written into the middle of the response in progress
    assert connection.transport.closed


@in_a_loop
async def test_too_many_headers_are_refused_before_the_head_ends():
    connection = Connection()
    head = request(extra=LIMITS.max_headers + 5)
    assert await connection.send(head[: len(head) - 30]) == [431]  # the head is not complete
    assert len(connection.protocol.headers) <= LIMITS.max_headers + 5
    assert b"PIPELINE_MAX_HEADERS" in connection.transport.written


@in_a_loop
async def test_exactly_the_header_limit_is_served():
    assert await Connection().send(request(extra=LIMITS.max_headers - 2), settle_s=0.01) == [
        200
    ]  # + Host, Content-Length


@in_a_loop
@pytest.mark.parametrize("host", [None, b"[zz]"])
async def test_a_bad_host_is_400_and_the_body_is_not_read(host):
    connection = Connection()
    assert await connection.send(request(body=b"x" * 100, host=host), settle_s=0.01) == [400]
    assert connection.transport.closed and b'"error"' in connection.transport.written


@in_a_loop
async def test_an_overdue_head_is_408_and_a_silent_connection_is_closed_without_an_answer():
    slow = Connection()
    await slow.send(b"GET / HT")
    slow.protocol.head_overdue()
    assert slow.transport.statuses() == [408] and slow.transport.closed
    silent = Connection()
    silent.protocol.head_overdue()
    assert silent.transport.written == b"" and silent.transport.closed


@in_a_loop
async def test_a_heads_deadline_runs_from_its_first_read_only_while_it_is_incomplete():
    connection = Connection()
    assert connection.protocol._head_deadline < float("inf")  # from the connection's start
    await connection.send(request(), settle_s=0.01)
    assert connection.protocol._head_deadline == float("inf")  # idle keep-alive: uvicorn's timer
    await connection.send(b"\r\n")
    assert connection.protocol._head_deadline < float("inf")  # blank lines start the next head's clock
