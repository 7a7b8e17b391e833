"""An ASGI middleware in front of the REST app: request body size, and the repository API's lock.

A body above the limit is refused with 413 before it is read into memory: at once when its
Content-Length says so, else (chunked) as soon as the bytes received pass the limit, holding at
most the limit meanwhile. Plain ASGI: it knows nothing of MLServer.
"""

from __future__ import annotations

import json
import os
from typing import Any, Awaitable, Callable, Optional

from runtime.admin import REPOSITORY_PATH, AdminPolicy
from runtime.admission import PEER_HEADER
from runtime.errors import PipelineError, RequestTooLarge

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

ENV_MAX_REQUEST_BYTES = "PIPELINE_MAX_REQUEST_BYTES"
# Enough for max_rows (10,000) rows of 30 features as JSON numbers, with room to spare.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024


def max_request_bytes(env: Optional[dict[str, str]] = None) -> int:
    """PIPELINE_MAX_REQUEST_BYTES, else the default; a bad value fails the start."""
    raw = (os.environ if env is None else env).get(ENV_MAX_REQUEST_BYTES, "")
    if not raw.strip():
        return DEFAULT_MAX_REQUEST_BYTES
    if not raw.strip().isdigit() or int(raw) <= 0:
        raise ValueError(f"{ENV_MAX_REQUEST_BYTES}={raw!r}: expected a number of bytes > 0")
    return int(raw)


class RequestGuard:
    def __init__(self, app: App, max_request_bytes: int, admin: AdminPolicy):
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.admin = admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope = _with_peer(scope)
        repository = scope.get("path", "").startswith(REPOSITORY_PATH)
        # The admin check reads the token; every other request only the framing headers.
        headers = _decoded(scope, None if repository else _FRAMING)
        try:
            if repository:
                self.admin.check(headers)
            receive = await self._bounded(headers, receive)
        except PipelineError as refused:
            return await _refuse(send, refused)
        await self.app(scope, receive, _retry_after_on_429(send))

    async def _bounded(self, headers: dict[str, str], receive: Receive) -> Receive:
        """The request's `receive`, or RequestTooLarge before the body is read past the limit."""
        limit = self.max_request_bytes
        declared = _content_length(headers)
        if declared is not None:
            if declared > limit:
                raise RequestTooLarge(_too_large(f"{declared} bytes", limit))
            return receive
        if "chunked" not in headers.get("transfer-encoding", ""):
            return receive
        # Chunked: read up to the limit here, then hand the app what was read.
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > limit:
                raise RequestTooLarge(_too_large(f"more than {limit} bytes", limit))
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        return replayed


# The headers every request's body bound reads: decoded alone, the rest of a request's headers never are.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


def _decoded(scope: Scope, only: Optional[frozenset[bytes]]) -> dict[str, str]:
    """The request's headers (the last of repeats), or only those named in `only`."""
    return {
        k.decode("latin-1").lower(): v.decode("latin-1")
        for k, v in scope.get("headers", [])
        if only is None or k.lower() in only
    }


def _with_peer(scope: Scope) -> Scope:
    """The scope with the client's address as PEER_HEADER (whatever the client sent under it is
    dropped): the rate limiter's key when the request carries no bearer token."""
    peer = scope.get("client")
    name = PEER_HEADER.encode()
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != name]
    headers.append((name, (peer[0] if peer else "unknown peer").encode("latin-1")))
    return {**scope, "headers": headers}


def _retry_after_on_429(send: Send) -> Send:
    """A 429 (runtime.admission's rate limit) tells the client when to come back, in whole
    seconds as HTTP wants them; the message has the exact wait."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and message.get("status") == 429:
            message = {**message, "headers": [*message.get("headers", []), (b"retry-after", b"1")]}
        await send(message)

    return sending


def _content_length(headers: dict[str, str]) -> Optional[int]:
    raw = headers.get("content-length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _too_large(size: str, limit: int) -> str:
    return (
        f"request body of {size} exceeds this server's limit of {limit} bytes "
        f"({ENV_MAX_REQUEST_BYTES}); send fewer rows per request"
    )


async def json_response(send: Send, status: int, doc: Any, headers: Optional[list] = None) -> None:
    """One JSON answer; `headers` are kept (e.g. the request id an app set), bar length and type."""
    body = json.dumps(doc).encode()
    kept = [(k, v) for k, v in (headers or []) if k.lower() not in (b"content-length", b"content-type")]
    kept += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": kept})
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, refused: PipelineError) -> None:
    # Close: the rest of a refused body is never read.
    await json_response(send, refused.status, {"error": str(refused)}, [(b"connection", b"close")])


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the guard has already bounded its size)."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
