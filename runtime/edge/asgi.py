"""Plain ASGI, shared by the runtime's middleware: the types, one JSON answer, a whole body, the
path as the router sees it. Knows nothing of MLServer."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]  # a scope's headers, as the server received them


def credentials(headers: RawHeaders) -> dict[str, str]:
    """The request's Authorization header (the last of repeats), decoded, as auth reads it."""
    found = [v for k, v in headers if k.lower() == b"authorization"]
    return {"authorization": found[-1].decode("latin-1")} if found else {}


def route_path(scope: Scope) -> str:
    """The path the app routes: the server puts its root path (MLSERVER_ROOT_PATH) in front of
    `path`, and Starlette's router takes it off again (starlette._utils.get_route_path)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


async def json_response(send: Send, status: int, doc: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """One JSON answer; `headers` are kept (e.g. the request id an app set), bar length and type."""
    body = json.dumps(doc).encode()
    kept = [(k, v) for k, v in (headers or []) if k.lower() not in (b"content-length", b"content-type")]
    kept += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": kept})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the guard has already bounded its size)."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, original: Receive) -> Receive:
    """The body already read, as one message, then the connection's own messages (a disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await original()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
