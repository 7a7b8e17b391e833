"""The REST fast path: V2 inference for this runtime's models without FastAPI in between.

One ASGI middleware, the innermost of MLServer's app (inside its Prometheus and GZip middleware,
so MLServer's request metrics still see every request: the scope gets the route as routing would
leave it). For `POST /v2/models/{name}[/versions/{v}]/infer`
on a model of this runtime whose fast path is on, a body in the simple form (runtime.fast_json)
skips FastAPI's routing, dependency injection, pydantic validation of the body and the response
model's re-validation. What MLServer's endpoint does is done here in the same order: the request
headers into the payload (`insert_headers`, patched to stamp deadlines), `DataPlane.infer` itself
(so admission, MLServer's model metrics, the model lookup and readiness, its inference middleware
and the model context are all unchanged), the response headers out (`extract_headers`), the body
dumped as FastAPI dumps a response model, and an MLServerError rendered as MLServer's handler
renders it. Everything else, every other route and model, any body not in the simple form, goes
to MLServer's app untouched, the body replayed: an error is MLServer's own answer.

Off with PIPELINE_FAST_PATH=0 (server-wide) or `fast_path: false` in a model's parameters.extra;
off while tracing is on (MLServer's request span names itself after the FastAPI route).
"""

from __future__ import annotations

import email.message
import os
import re
from functools import lru_cache
from typing import Any, Optional

import mlserver.rest.endpoints as mlserver_endpoints
from mlserver import types
from mlserver.codecs.json import encode_to_json_bytes
from mlserver.errors import MLServerError
from starlette.routing import Match

from runtime.asgi_guard import App, Message, Receive, Scope, Send, read_body
from runtime.fast_json import SimpleRequest, read_simple

ENV_FAST_PATH = "PIPELINE_FAST_PATH"
_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
_JSON = (b"content-type", b"application/json")


def enabled(settings: Any, env: Optional[dict[str, str]] = None) -> bool:
    """The server-wide switch (default on), and never with tracing on."""
    raw = (os.environ if env is None else env).get(ENV_FAST_PATH, "1").strip().lower()
    return raw not in ("0", "false", "off", "no") and not getattr(settings, "tracing_server", None)


class FastInfer:
    def __init__(self, app: App, data_plane: Any, router: Any):
        self.app = app
        self.data_plane = data_plane
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _INFER.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST" or not _parsed_as_json(_first(scope, b"content-type")):
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        request = read_simple(body)
        if request is None or not await self._serves(*match.groups()):
            return await self.app(scope, _replay(body, receive), send)
        self._route(scope)
        await self._infer(scope, request, *match.groups(), send)

    def _route(self, scope: Scope) -> None:
        """What routing leaves in the scope (the route, its endpoint and path parameters, the
        router): MLServer's metrics middleware reads it afterwards, and counts no request
        without it (starlette_exporter's filter_unhandled_paths)."""
        for route in self.router.routes:
            matched, child_scope = route.matches(scope)
            if matched == Match.FULL:
                scope.update(child_scope)
                scope["router"] = self.router
                return

    async def _serves(self, name: str, version: Optional[str]) -> bool:
        try:
            model = await self.data_plane._model_registry.get_model(name, version)
        except MLServerError:  # not found: MLServer's path answers its 404
            return False
        return getattr(model, "fast_path", False)

    async def _infer(self, scope: Scope, request: SimpleRequest, name: str, version: Optional[str], send: Send) -> None:
        payload = _payload(request)
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", []):  # as dict(starlette's Headers): the first of repeats
            headers.setdefault(key.decode("latin-1"), value.decode("latin-1"))
        try:
            mlserver_endpoints.insert_headers(payload, headers)
            response = await self.data_plane.infer(payload, name, version)
        except MLServerError as error:
            return await _send(send, error.status_code, encode_to_json_bytes({"error": str(error)}), [])
        extra = mlserver_endpoints.extract_headers(response) or {}
        # As FastAPI dumps the endpoint's response model (response_model_exclude_unset/none).
        content = response.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
        await _send(send, 200, encode_to_json_bytes(content),
                    [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in extra.items()])  # fmt: skip


def _first(scope: Scope, name: bytes) -> Optional[str]:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


@lru_cache(maxsize=64)
def _parsed_as_json(content_type: Optional[str]) -> bool:
    """FastAPI's own test (fastapi.routing): a body it parses as JSON; any other it validates as
    bytes, a 422 that only MLServer's path gives."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _payload(request: SimpleRequest) -> types.InferenceRequest:
    """MLServer's request, built without validation: the contract validates the data."""
    inputs = [
        types.RequestInput.model_construct(
            name=t.name, shape=t.shape, datatype=t.datatype, data=types.TensorData.model_construct(root=t.data)
        )
        for t in request.inputs
    ]
    outputs = [types.RequestOutput.model_construct(name=n) for n in request.outputs] or None
    parameters = types.Parameters(**request.flags) if request.flags else None
    return types.InferenceRequest.model_construct(id=request.id, parameters=parameters, inputs=inputs, outputs=outputs)


def _replay(body: bytes, original: Receive) -> Receive:
    """The body already read, then the connection's own messages (a disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await original()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    # Starlette's Response: content-length, then content-type, then the endpoint's own headers.
    start = [(b"content-length", str(len(body)).encode()), _JSON, *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})
