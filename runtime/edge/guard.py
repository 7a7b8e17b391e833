"""An ASGI middleware in front of the REST app: who may send a body, and how large it may be.

Everything that can refuse a request from its head does so before a byte of the body is read:

    a capped model's in-flight cap reached (its bearer token, 401, then 503: runtime.policy.gate)
    -> no route answers the path (404) -> the repository API's lock (401/403) -> an inference
    route's model and its bearer token (404/401) -> the body's framing and coding (400/415/501)
    -> a declared length above the limit (413)

A request the cap admits holds its slot until this middleware is done with it (answered, failed
or the client gone).

The route is the one the app's router will take (the root path and every spelling the router
accepts included), given by the integration as a `Router`. The body is then read here, once,
under the limits (runtime.edge.body_reader: a compressed body is inflated as it arrives, 413 as soon as
it passes the limit), its JSON nesting checked (runtime.edge.json_depth, 400; a binary body's JSON
header only, runtime.edge.binary), and handed on inflated
as one message. Plain ASGI: it knows nothing of MLServer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from runtime.core.errors import MalformedBody, Overloaded, PipelineError, RequestTooLarge, RouteNotFound
from runtime.edge import json_depth
from runtime.edge.asgi import (
    App,
    Message,
    RawHeaders,
    Receive,
    Scope,
    Send,
    credentials,
    json_response,
    replay,
    route_path,
)
from runtime.edge.binary import json_header
from runtime.edge.body_limits import ENV_MAX_JSON_DEPTH, ENV_MAX_REQUEST_BYTES, BodyLimits
from runtime.edge.body_reader import BodyReader
from runtime.edge.framing import framing
from runtime.policy.admin import AdminPolicy
from runtime.policy.admission import HELD, PEER_HEADER
from runtime.policy.gate import GATE, Full
from runtime.policy.inflight import Key

INFERENCE, REPOSITORY, OTHER = "inference", "repository", "other"
# A refused request's body up to this size is read and discarded, to keep its connection open.
DRAIN_MAX_BYTES = 64 * 1024
RETRY_AFTER = (b"retry-after", b"1")
_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")


class Route(NamedTuple):
    kind: str  # INFERENCE, REPOSITORY or OTHER
    model: str | None = None  # an inference route's model, when it names one
    version: str | None = None


Router = Callable[[Scope], Route | None]  # None: nothing answers this method and path
# An inference route's model and the request's raw headers -> RouteNotFound / Unauthenticated, or
# what it found (the integration's model object), handed on under TARGET so the layers behind need
# not look it up again. The raw headers: a model without a token never has them decoded.
Authorize = Callable[[str, str | None, RawHeaders], Awaitable[object]]
TARGET = "pipeline.target"
# The in-flight slot a request already holds when it gets here: taken by the server's protocol as
# its head was parsed (runtime.integration.http_head); released here like one taken here.
SLOT = "pipeline.slot"


class RequestGuard:
    def __init__(self, app: App, limits: BodyLimits, admin: AdminPolicy, router: Router, authorize: Authorize):
        self.app = app
        self.limits = limits
        self.admin = admin
        self.router = router
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = self.router(scope)
        try:
            slot = scope.get(SLOT) or _slot(route, scope)
        except Full as full:
            return await overloaded(send, full.message, scope["headers"])
        except PipelineError as refused:  # a full model's bearer token, checked before its 503
            return await _refuse(send, refused)
        sending = _Sending(send)
        if slot is None:
            return await self._guarded(route, scope, receive, sending)
        held = HELD.set(slot)
        try:
            await self._guarded(route, scope, receive, sending)
        finally:  # answered, failed or the client left: the slot is free again
            HELD.reset(held)
            GATE.release(slot, 0 < sending.status < 400)

    async def _guarded(self, route: Route | None, scope: Scope, receive: Receive, send: Send) -> None:
        scope = _with_peer(scope)
        try:
            route = await self._head(route, scope)
            needs_body = route.kind == INFERENCE and scope["method"] == "POST"
            admitted = await self._body(scope, receive, needs_body=needs_body)
        except PipelineError as refused:
            return await _refuse(send, refused)
        if admitted is None:  # the client left while sending its body
            return None
        scope, receive = admitted
        await self.app(scope, receive, send)

    async def _head(self, route: Route | None, scope: Scope) -> Route:
        """Refuse from the head, or return the route; `scope` is this request's own copy (_with_peer)."""
        if route is None:
            raise RouteNotFound(f"{scope['method']} {route_path(scope)}: no such route")
        if route.kind == REPOSITORY:
            self.admin.check(credentials(scope["headers"]))
        elif route.kind == INFERENCE and route.model is not None:
            scope[TARGET] = await self.authorize(route.model, route.version, scope["headers"])
        return route

    async def _body(self, scope: Scope, receive: Receive, *, needs_body: bool) -> tuple[Scope, Receive] | None:
        """The scope and a `receive` replaying the body read under the limits; None if the client
        disconnected first. An inference request `needs_body`: without one it is refused here, in the
        runtime's words (FastAPI's would be a list of pydantic's "missing" errors)."""
        declared, coding = framing(scope["headers"])
        limits = self.limits
        if declared is not None and declared > limits.max_bytes:
            raise RequestTooLarge(
                f"request body of {declared} bytes exceeds this server's limit of {limits.max_bytes} "
                f"bytes ({ENV_MAX_REQUEST_BYTES}); send fewer rows per request"
            )
        message = await receive()
        if message["type"] != "http.request":
            return None
        body = message.get("body", b"")
        if coding is not None or message.get("more_body", False) or len(body) > limits.max_bytes:
            body = await _read(BodyReader(limits, coding), message, receive)
            if body is None:
                return None
        if needs_body and not body.strip():
            raise MalformedBody(
                f"{scope['method']} {route_path(scope)}: the request has no body; send a JSON inference "
                "request (a file given to curl as -d @FILE must exist)"
            )
        if body and not _within_depth(scope, body, limits.max_json_depth):
            raise MalformedBody(
                f"the JSON body nests deeper than {limits.max_json_depth} levels, "
                f"this server's limit ({ENV_MAX_JSON_DEPTH})"
            )
        if coding is not None:
            scope = {**scope, "headers": _inflated_headers(scope["headers"], len(body))}
        return scope, replay(body, receive)


async def _read(reader: BodyReader, first: Message, receive: Receive) -> bytes | None:
    """A body of several messages, or a compressed one, through the reader; None if the client left.
    Inflating runs on a thread (zlib lets go of the GIL): a piece can inflate to the whole limit,
    milliseconds the event loop would otherwise spend away from every other request."""
    message = first
    while True:
        if reader.coding is None:
            reader.feed(message.get("body", b""))
        else:
            await asyncio.to_thread(reader.feed, message.get("body", b""))
        if not message.get("more_body", False):
            return reader.body()
        message = await receive()
        if message["type"] != "http.request":
            return None


def _within_depth(scope: Scope, body: bytes, limit: int) -> bool:
    """Whether the body's JSON nests no deeper than `limit`: a binary body's JSON header (its
    values are bytes, not brackets), else the whole body when a parser behind may read it as JSON."""
    header = json_header(scope["headers"], body)
    if header is not None:
        return json_depth.within(header, limit)
    return json_depth.within(body, limit) or not _may_be_json(scope)


def _may_be_json(scope: Scope) -> bool:
    """Whether a parser behind the guard may read the body as JSON: no content type, or a JSON one."""
    for key, value in scope["headers"]:
        if key.lower() == b"content-type":
            return b"json" in value.lower()
    return True


def _inflated_headers(headers: list[tuple[bytes, bytes]], size: int) -> list[tuple[bytes, bytes]]:
    """The headers of the body as handed on: no content coding (MLServer would inflate it again),
    its inflated length."""
    kept = [
        (k, v) for k, v in headers if k.lower() not in (b"content-encoding", b"content-length", b"transfer-encoding")
    ]
    return [*kept, (b"content-length", str(size).encode())]


def _with_peer(scope: Scope) -> Scope:
    """The scope with the client's address as PEER_HEADER (whatever the client sent under it is
    dropped): the rate limiter's key when the request carries no bearer token."""
    peer = scope.get("client")
    name = PEER_HEADER.encode()
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != name]
    headers.append((name, (peer[0] if peer else "unknown peer").encode("latin-1")))
    return {**scope, "headers": headers}


class _Sending:
    """The app's `send`, keeping the response's status (whether a held slot ends ok). A 429
    (runtime.policy.admission's rate limit) tells the client when to come back, in whole seconds as
    HTTP wants them; the message has the exact wait."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 0  # no response started

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message.get("status", 200)
            if self.status == 429:
                message = {**message, "headers": [*message.get("headers", []), RETRY_AFTER]}
        await self.send(message)


def _slot(route: Route | None, scope: Scope) -> Key | None:
    """The in-flight slot a POST to a capped model's inference route takes from its head
    (runtime.policy.gate), or None: not capped here (admission counts it), or Full."""
    if route is None or route.kind != INFERENCE or route.model is None or scope["method"] != "POST":
        return None
    return GATE.hold((route.model, route.version), lambda: credentials(scope["headers"]))


async def overloaded(send: Send, message: bytes, headers: RawHeaders) -> None:
    """The cap's 503, canned: nothing of the body read or parsed. The connection stays open when
    what is left of the body is small (the server discards it as it arrives: cheaper than the
    client's new connection); a large or unframed one closes it rather than be read for nothing."""
    fields = [_JSON, (b"content-length", str(len(message)).encode()), RETRY_AFTER]
    if not _drained_cheaply(headers):
        fields.append(_CLOSE)
    await send({"type": "http.response.start", "status": Overloaded.status, "headers": fields})
    await send({"type": "http.response.body", "body": message})


def _drained_cheaply(headers: RawHeaders) -> bool:
    if any(k.lower() == b"expect" for k, _ in headers):
        # The client waits for 100 Continue before it sends its body, and may never send it after
        # a final answer: its next head would be read as this body.
        return False
    try:
        length = framing(headers).length
    except PipelineError:  # a head that does not say how long its body is
        return False
    return length is not None and length <= DRAIN_MAX_BYTES


async def _refuse(send: Send, refused: PipelineError) -> None:
    # Close: the rest of a refused body is never read.
    await json_response(send, refused.status, {"error": str(refused)}, [_CLOSE])
