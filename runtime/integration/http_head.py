"""The request head on the REST and metrics ports: runtime.edge.head_limits and runtime.edge.host enforced in
uvicorn's HTTP protocol, before any middleware sees a request.

Why: uvicorn 0.54 with httptools limits neither the size of a head nor its number of header lines
nor the time it takes to arrive: an 8 MiB header line is served, unfinished heads hold their bytes
for as long as their sockets stay open, a head sent a byte at a time holds its connection forever,
and a malformed Host header becomes a 500 with a traceback (starlette_exporter's urlsplit). MLServer
builds both uvicorn.Configs itself (RESTServer._get_config, MetricsServer._get_config); `http=`
accepts a protocol class, so each server gets `HeadGuard`, a subclass of uvicorn's HttpToolsProtocol:

- data_received counts a head's bytes before httptools sees them (it buffers a partial header
  value whole): bytes past the limit are never parsed, the answer is 431. The bytes of a head that
  starts in the same read as an earlier request's body are counted from the next read.
- the number of header lines is checked after each read, so no more than the limit and one read's
  worth are ever held, and when the head completes (431).
- on_headers_complete checks the Host header (400). These refusals replace MLServer's app as the
  request's ASGI app, so uvicorn frames them, after any response still being written.
- a deadline per head, from the connection's start or the first read of a later head, checked by
  one timer per server (`_HeadClock`): 408 and close, or a silent close if nothing arrived.
- timeout_keep_alive is set explicitly, and WebSocket upgrades are off: MLServer serves none, and
  uvicorn would hand an upgrade to another protocol ahead of the refusal.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runtime.core.errors import Unauthenticated
from runtime.edge.guard import SLOT, overloaded
from runtime.edge.head_limits import HeadLimits, Refusal, RefusalLog
from runtime.edge.host import host_problem
from runtime.integration.patching import PatchPoint, read_point
from runtime.policy.gate import GATE, Full

_NO_DEADLINE = float("inf")
# A V2 inference target with no query and no percent-encoding: the gate's routes as uvicorn's path.
_INFER = re.compile(rb"^/v2/models/([^/?%]+)(?:/versions/([^/?%]+))?/infer$")
_REFUSALS = RefusalLog()
# How often a server looks for overdue heads, at most: a head is closed within this past its limit.
_CLOCK_PERIOD_S = 1.0


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]


def _response(refusal: Refusal, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = refusal.body()
    status = f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}\r\n".encode()
    fields = b"".join(name + b": " + value + b"\r\n" for name, value in [*default_headers, *_headers(body)])
    return status + fields + b"\r\n" + body


class _Answer:
    """The ASGI app run for a refused head that httptools parsed whole: its body, if any, is
    never read, and the connection closes after the answer."""

    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal

    async def __call__(self, scope: Any, receive: Any, send: Callable[[dict], Any]) -> None:
        body = self.refusal.body()
        await send({"type": "http.response.start", "status": self.refusal.status, "headers": _headers(body)})
        await send({"type": "http.response.body", "body": body})


class _Overloaded:
    """The ASGI app run for a request the in-flight cap refuses from its head: the canned 503."""

    __slots__ = ("message",)

    def __init__(self, message: bytes) -> None:
        self.message = message

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await overloaded(send, self.message, scope["headers"])


def _credentials_from_the_guard() -> dict[str, str]:
    raise Unauthenticated("asked for by the request guard")


class _HeadClock:
    """One server's timer: closes its connections whose head is overdue, re-armed while any
    connection is open (a timer per connection would cost a timer per keep-alive request)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set, period_s: float) -> None:
        self._loop = loop
        self._connections = connections
        self._period_s = period_s
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._handle is None:
            self._handle = self._loop.call_later(self._period_s, self._tick)

    def _tick(self) -> None:
        self._handle = None
        now = self._loop.time()
        # Upgraded connections (none while WebSockets are off) are other protocols: no deadline.
        overdue = [c for c in self._connections if getattr(c, "_head_deadline", _NO_DEADLINE) <= now]
        for connection in overdue:
            connection.head_overdue()
        if self._connections:
            self.start()


_clocks: weakref.WeakKeyDictionary[Any, _HeadClock] = weakref.WeakKeyDictionary()
# uvicorn's methods called directly: cheaper than super() on every request.
_feed = HttpToolsProtocol.data_received
_headers_complete = HttpToolsProtocol.on_headers_complete
_message_complete = HttpToolsProtocol.on_message_complete


class HeadGuard(HttpToolsProtocol):
    limits: ClassVar[HeadLimits] = HeadLimits()
    port_name: ClassVar[str] = "REST"
    gated: ClassVar[bool] = False  # the in-flight cap from the head: the REST port, whose guard releases it
    # limits' two numbers read on every request, one attribute lookup away
    _max_head_bytes: ClassVar[int] = limits.max_head_bytes
    _max_headers: ClassVar[int] = limits.max_headers

    # Per connection; defaults here because uvicorn builds the protocol (connection_made sets them).
    _in_head = True  # the next bytes belong to a request head
    _head_bytes = 0
    _head_deadline = _NO_DEADLINE
    _refused = False  # answered (or being answered) with a refusal: nothing more is read

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline = self.loop.time() + self.limits.head_timeout_s
        clock = _clocks.get(self.server_state)
        if clock is None:
            period = min(_CLOCK_PERIOD_S, self.limits.head_timeout_s / 4)
            clock = _clocks[self.server_state] = _HeadClock(self.loop, self.connections, period)
        clock.start()

    def data_received(self, data: bytes) -> None:
        if not self._in_head:  # a body: the per-read cost stays one attribute test
            return _feed(self, data)
        if self._refused:
            return
        if self._head_bytes + len(data) > self._max_head_bytes:
            return self._take_head_in_pieces(data)
        self._head_bytes += len(data)
        _feed(self, data)
        if self._in_head:
            self._after_partial_head()

    def _take_head_in_pieces(self, data: bytes) -> None:
        """A read that passes the head limit: fed up to the limit, then refused if the head is
        still incomplete, else the rest is fed (a body, or a later head counted afresh)."""
        while data and not (self._refused or self.transport.is_closing()):
            room = self._max_head_bytes - self._head_bytes
            if room <= 0:
                return self._refuse_now(self.limits.head_too_large())
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            _feed(self, piece)
            if not self._in_head:  # the head ended in this piece: what follows is its body
                return _feed(self, data) if data else None
            self._after_partial_head()

    def _after_partial_head(self) -> None:
        """After a read that left a head incomplete: this head's (`_head_bytes` counted it), or one
        that began after a request ended in the same read (no deadline before its next read)."""
        # Before a head begins, self.headers is the previous request's (within the limit) or None.
        if len(self.headers or ()) > self._max_headers and not self.transport.is_closing():
            self._refuse_now(self.limits.too_many_headers())
        elif self._head_bytes and self._head_deadline == _NO_DEADLINE:
            self._head_deadline = self.loop.time() + self.limits.head_timeout_s

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_deadline = _NO_DEADLINE
        if len(self.headers) > self._max_headers:
            refusal: Refusal = self.limits.too_many_headers()
        else:
            problem = host_problem(self.headers, self.parser.get_http_version)
            if problem is None:
                return self._gated() if self.gated else _headers_complete(self)
            refusal = Refusal(400, problem)
        self._note(refusal)
        app, self.app = self.app, _Answer(refusal)
        try:
            _headers_complete(self)
        finally:
            self.app = app

    def _gated(self) -> None:
        """A POST to a capped model's V2 inference route takes its in-flight slot here, as its
        head completes (runtime.policy.gate), or is refused with the canned 503: the request guard
        then releases the slot. Left to the guard (at the request's start): a pipelined request
        (uvicorn may never start it if the client leaves), a percent-encoded or rooted path, a
        model with bearer tokens (their 401 comes first) and any route the gate has not learned."""
        if self.parser.get_method() != b"POST" or (self.cycle is not None and not self.cycle.response_complete):
            return _headers_complete(self)
        match = _INFER.match(self.url)
        if match is None or self.root_path:
            return _headers_complete(self)
        name, version = (part.decode("latin-1") if part is not None else None for part in match.groups())
        try:
            slot = GATE.hold((str(name), version), _credentials_from_the_guard)
        except Full as full:
            app, self.app = self.app, _Overloaded(full.message)
            try:
                return _headers_complete(self)
            finally:
                self.app = app
        except Unauthenticated:  # the model wants a token: the guard asks for it
            return _headers_complete(self)
        if slot is not None:
            scope: dict[str, Any] = self.scope  # type: ignore[assignment]
            scope[SLOT] = slot  # uvicorn's scope for this request, read when its task runs
        _headers_complete(self)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        _message_complete(self)

    def head_overdue(self) -> None:
        if self.transport.is_closing():
            return
        if self._head_bytes == 0:  # nothing arrived: no one to answer (e.g. a preconnect)
            self._refused = True
            self._head_deadline = _NO_DEADLINE
            self.transport.close()
        else:
            self._refuse_now(self.limits.head_too_slow())

    def _refuse_now(self, refusal: Refusal) -> None:
        self._refused = True
        self._head_deadline = _NO_DEADLINE
        self._note(refusal)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The client pipelined and a response is still being written: it goes out whole, then
            # the connection closes; the refused head is dropped.
            cycle.keep_alive = False
            return
        self.transport.write(_response(refusal, self.server_state.default_headers))
        self.transport.close()

    def _note(self, refusal: Refusal) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown client"
        _REFUSALS.refused(self.port_name, refusal, client)


def guarded_protocol(limits: HeadLimits, port_name: str) -> type[HeadGuard]:
    attributes = {
        "limits": limits,
        "port_name": port_name,
        "gated": port_name == "REST",
        "_max_head_bytes": limits.max_head_bytes,
        "_max_headers": limits.max_headers,
    }
    return type(f"HeadGuard{port_name}", (HeadGuard,), attributes)


def configure(config: Any, protocol: type[HeadGuard], limits: HeadLimits) -> None:
    """A server's uvicorn.Config (loaded later by uvicorn.Server.serve) with the guarded protocol."""
    config.http = protocol
    config.ws = "none"
    config.timeout_keep_alive = limits.keepalive_timeout_s


def _guarded_config(limits: HeadLimits, port_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    protocol = guarded_protocol(limits, port_name)

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def _get_config(self):
            config = original(self)
            configure(config, protocol, limits)
            return config

        return _get_config

    return wrap


# What the protocol does on a port, for the patch points that install it (the REST one: runtime.integration.rest).
CONFIG_WHY = (
    "uvicorn.Config gets http=HeadGuard (head size, header count, head timeout, Host check: "
    "runtime.edge.head_limits, runtime.edge.host), timeout_keep_alive=PIPELINE_KEEPALIVE_TIMEOUT_S and ws='none'"
)
CONFIG_UPSTREAM = (
    "encode/uvicorn#157 (closed: no head timeout or header count; the httptools head size limit "
    "of #1684 closed unmerged); MLServer passes no uvicorn limits"
)


def config_lost(port: str) -> str:
    return (
        f"on the {port} port an 8 MiB header is served, unfinished heads hold memory and connections "
        "without end, a malformed Host is a 500 with a traceback"
    )


_UVICORN = "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol"


def patches(limits: HeadLimits | None = None) -> list[PatchPoint]:
    limits = limits or HeadLimits.from_env()
    servers = [
        PatchPoint(
            target="mlserver.metrics.server:MetricsServer._get_config",
            why=f"the metrics server's {CONFIG_WHY}",
            upstream=CONFIG_UPSTREAM,
            if_removed=config_lost("metrics"),
            params=("self",),
            apply=_guarded_config(limits, "metrics"),
        )
    ]
    methods = [
        (
            "connection_made",
            ("self", "transport"),
            "start the first head's deadline with the connection",
            "a connection that sends nothing is held open",
        ),
        (
            "data_received",
            ("self", "data"),
            "count a head's bytes before httptools parses them, and its header lines",
            "heads of any size are buffered",
        ),
        (
            "on_headers_complete",
            ("self",),
            "check the header count and Host, and take a capped model's in-flight slot or refuse it 503 "
            "(runtime.policy.gate), with a refusal as the ASGI app it reads from self.app",
            "no Host check; too many headers are served; the cap is decided a task later, in the request guard",
        ),
        (
            "on_message_complete",
            ("self",),
            "mark where the next head on a keep-alive connection starts",
            "only the first head of a connection is limited",
        ),
    ]
    return servers + [
        read_point(
            f"{_UVICORN}.{name}",
            f"HeadGuard (runtime.integration.http_head) overrides it to {what}, then calls it",
            "none: uvicorn has no hook in its HTTP protocol",
            lost,
            set_by=None,
            params=params,
        )
        for name, params, what, lost in methods
    ]
