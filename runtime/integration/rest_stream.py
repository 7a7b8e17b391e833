"""REST streams: the response's headers wait for its first event, so a refusal keeps its status.

MLServer 1.7.1's `Endpoints.infer_stream` returns a StreamingResponse over a lazy generator: admission
(runtime.integration.dataplane: auth 401, deadline 504, in-flight cap 503), the model lookup and the
first prediction all run while Starlette streams the response. Starlette 1.x sends the 200 headers
before the first event, so a refusal there became a 200 whose body breaks off. (Starlette 0.46 answered
a bare 500 instead, and only because MLServer's GZipMiddleware held the headers back until the first
chunk; Starlette 1.x no longer compresses `text/event-stream`.) Holding `http.response.start` until the
first body message, inside the route, lets an error raised before the first event reach MLServer's own
error handlers, which answer it like any inference error: 401, 503, 504, 400 or 404 with
`{"error": ...}`. The generator still runs where Starlette runs it (one task, one context: MLServer
resets its model context variables there). An error after the first event can only end the stream.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Message, Send

from runtime.integration.patching import PatchPoint


def _start_with_the_first_body(send: Send) -> Send:
    held: Message | None = None

    async def send_held(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start":
            held = message
            return
        if held is not None:
            start, held = held, None
            await send(start)
        await send(message)

    return send_held


def _first_event_first(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(original)
    async def infer_stream(self, raw_request, payload, model_name, model_version=None):
        response = await original(self, raw_request, payload, model_name, model_version)
        if isinstance(response, StreamingResponse):
            stream = response.stream_response  # Starlette's, called by response.__call__

            async def stream_response(send: Send) -> None:
                await stream(_start_with_the_first_body(send))

            response.stream_response = stream_response  # type: ignore[method-assign]
        return response

    return infer_stream


PATCHES = [
    PatchPoint(
        target="mlserver.rest.endpoints:Endpoints.infer_stream",
        why="a REST stream's headers wait for its first event, so a refusal or error before it "
        "(admission, model lookup, the first prediction) is answered by MLServer's error handlers with "
        "its own status; Starlette 1.x sends a stream's 200 headers before its first event",
        upstream="none found: MLServer 1.7.1 starts every REST stream before the dataplane runs",
        if_removed="a refused REST infer_stream / generate_stream is a 200 whose body breaks off",
        params=("self", "raw_request", "payload", "model_name", "model_version"),
        apply=_first_event_first,
    ),
]
