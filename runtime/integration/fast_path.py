"""The REST fast path: V2 inference for this runtime's models without Starlette's middleware, FastAPI
and, for a model served in this process, MLServer's pydantic types and DataPlane.

One ASGI middleware, inside the request guard and POST /predict (runtime.edge.guard,
runtime.edge.legacy_api) and in front of MLServer's FastAPI app (runtime.integration.rest). It takes
`POST /v2/models/{name}[/versions/{v}]/infer` for a model of this runtime whose fast path is on,
with a body in the simple form (runtime.edge.fast_json; a binary one decoded by runtime.edge.binary,
in front), and does what the layers it skips do:
- MLServer's REST request metrics: starlette_exporter's PrometheusMiddleware, with that
  middleware's own metric objects (requests in progress, requests and their duration by route
  template and status), and its GZip middleware (a body of 500 bytes or more gets
  `vary: Accept-Encoding`, and is compressed when the client accepts gzip);
- the endpoint: the request headers (the first of repeats) stamped with the arrival time and
  deadline (runtime.policy.deadlines), the inference, the response headers, the body rendered as FastAPI
  renders the response model and an MLServerError as MLServer's handler renders it;
- the inference: runtime.integration.direct for a model served in this process, else
  `DataPlane.infer` with MLServer's request built without validation (adaptive batching,
  parallel workers).
Every other route and model, and any body not in the simple form, goes to MLServer's app
untouched, the body replayed: an error there is MLServer's own answer. If MLServer's app has
middleware this does not reproduce (CORS), the fast path is off, and the log says why.

Off with PIPELINE_FAST_PATH=0 (server-wide) or `fast_path: false` in a model's parameters.extra;
off while tracing is on (MLServer's request span names itself after the FastAPI route).
"""

from __future__ import annotations

import email.message
import gzip
import io
import logging
import os
import time
from functools import lru_cache
from typing import Any, NamedTuple

import mlserver.rest.endpoints as mlserver_endpoints
from mlserver import types
from mlserver.codecs.json import encode_to_json_bytes
from mlserver.errors import MLServerError
from mlserver.utils import extract_headers
from starlette.middleware.gzip import GZipMiddleware
from starlette_exporter import PrometheusMiddleware

from runtime.core.call import Answer, Call
from runtime.core.errors import PipelineError
from runtime.edge.asgi import App, Receive, Scope, Send, read_body, replay
from runtime.edge.binary import DECODED, INFER
from runtime.edge.fast_json import SimpleRequest, read_simple, simple_request
from runtime.edge.guard import TARGET
from runtime.integration.dataplane import MODEL_REGISTRY
from runtime.integration.direct import DirectInference, new_id
from runtime.integration.patching import IntegrationError, read_point
from runtime.observation.metrics import fast_path_counter, observer
from runtime.policy.deadlines import stamp

logger = logging.getLogger("runtime.integration")

ENV_FAST_PATH = "PIPELINE_FAST_PATH"
# The routes of MLServer's app the fast path answers for: its metrics label requests with these.
ROUTES = ("/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer")
_JSON = (b"content-type", b"application/json")


def switched_on(env: dict[str, str] | None = None) -> bool:
    """The server-wide switch (default on)."""
    raw = (os.environ if env is None else env).get(ENV_FAST_PATH, "1").strip().lower()
    return raw not in ("0", "false", "off", "no")


def enabled(settings: Any, env: dict[str, str] | None = None) -> bool:
    """The switch, and never with tracing on."""
    return switched_on(env) and not getattr(settings, "tracing_server", None)


class RequestMetrics:
    """What starlette_exporter's middleware records of a request, on its own metric objects."""

    def __init__(self, options: dict[str, Any]):
        exporter = PrometheusMiddleware(None, **options)  # type: ignore[arg-type]
        self.skip_paths = exporter.skip_paths
        self.in_progress = exporter.requests_in_progress.labels("POST", exporter.app_name)
        self._app_name = exporter.app_name
        self._count, self._time = exporter.request_count, exporter.request_time
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def record(self, route: str, status: int, seconds: float) -> None:
        children = self._children.get((route, status))
        if children is None:
            labels = ("POST", route, status, self._app_name)
            children = self._children[(route, status)] = (
                self._count.labels(*labels),
                observer(self._time.labels(*labels)),
            )
        children[0].inc()
        children[1](seconds)


class Compression(NamedTuple):
    """Starlette's GZip middleware, for one whole response body."""

    minimum_size: int = 500
    compresslevel: int = 9

    def apply(self, body: bytes, headers: list[tuple[bytes, bytes]], accept_encoding: str | None) -> bytes:
        if len(body) < self.minimum_size:
            return body
        headers.append((b"vary", b"Accept-Encoding"))
        if "gzip" not in (accept_encoding or ""):
            return body
        buffer = io.BytesIO()
        with gzip.GzipFile(mode="wb", fileobj=buffer, compresslevel=self.compresslevel) as compressing:
            compressing.write(body)
        headers.append((b"content-encoding", b"gzip"))
        return buffer.getvalue()


class Layers(NamedTuple):
    """MLServer's middleware, as the fast path reproduces it."""

    metrics: RequestMetrics | None
    compression: Compression | None


_REPRODUCED = {
    PrometheusMiddleware: {"app_name", "prefix", "skip_paths"},
    GZipMiddleware: {"minimum_size", "compresslevel"},
}
USER_MIDDLEWARE = read_point(
    "fastapi.applications:FastAPI.user_middleware",
    "the middleware MLServer added to its app, which the REST fast path reproduces",
    "none: Starlette keeps the list undocumented",
    "no REST fast path",
    kind=list,
)


def layers(app: Any) -> Layers | None:
    """MLServer's middleware in `app`, if the fast path reproduces all of it; else None (logged).
    A route the fast path answers for missing from the app fails the start."""
    paths = {getattr(route, "path", None): route for route in app.router.routes}
    for path in ROUTES:
        if getattr(getattr(paths.get(path), "endpoint", None), "__name__", None) != "infer":
            raise IntegrationError(f"runtime.integration.fast_path: MLServer's app has no inference route {path}")
    found: dict[type, dict[str, Any]] = {}
    for middleware in USER_MIDDLEWARE.read(app):
        allowed = _REPRODUCED.get(middleware.cls)
        if allowed is None or middleware.args or not middleware.kwargs.keys() <= allowed:
            logger.warning(
                "REST fast path off: MLServer's app has middleware it does not reproduce (%s)",
                getattr(middleware.cls, "__name__", middleware.cls),
            )
            return None
        found[middleware.cls] = middleware.kwargs
    metrics = found.get(PrometheusMiddleware)
    compression = found.get(GZipMiddleware)
    return Layers(
        RequestMetrics(metrics) if metrics is not None else None,
        Compression(**compression) if compression is not None else None,
    )


class FastInfer:
    def __init__(self, app: App, data_plane: Any, layers: Layers):
        self.app = app
        self.data_plane = data_plane
        self.direct = DirectInference(data_plane)
        self.metrics, self.compression = layers
        self.taken = fast_path_counter("rest")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        match = INFER.match(scope["path"]) if scope["type"] == "http" else None
        if (
            match is None
            or scope["method"] != "POST"
            or scope.get("root_path")
            or not _parsed_as_json(_first(scope, b"content-type"))
        ):
            return await self.app(scope, receive, send)
        name, version = match.groups()
        model = await self._model(scope, name, version)
        if model is None:
            return await self.app(scope, receive, send)
        decoded = scope.get(DECODED)
        if decoded is not None:  # a binary request, decoded at the edge; its JSON form is in `receive`
            request = simple_request(decoded.document)
            if request is None:
                return await self.app(scope, receive, send)
        else:
            body = await read_body(receive)
            request = read_simple(body)
            if request is None:
                return await self.app(scope, replay(body, receive), send)
        self.taken.inc()
        metrics = self.metrics
        if metrics is not None and any(p.fullmatch(scope["path"]) for p in metrics.skip_paths):
            metrics = None
        if metrics is not None:
            metrics.in_progress.inc()
        status, ended = 500, None  # as the metrics middleware counts an exception
        try:
            headers: dict[str, str] = {}
            for key, value in scope["headers"]:  # as dict(starlette's Headers): the first of repeats
                headers.setdefault(key.decode("latin-1"), value.decode("latin-1"))
            accept_encoding = headers.get("accept-encoding")  # read before the headers are stamped
            status, content, response_headers = await self._respond(model, request, headers, name, version)
            if self.compression is not None:
                content = self.compression.apply(content, response_headers, accept_encoding)
            ended = time.perf_counter()
            await _send(send, status, content, response_headers)
        finally:
            if metrics is not None:
                metrics.in_progress.dec()
                metrics.record(ROUTES[version is not None], status, (ended or time.perf_counter()) - started)

    async def _model(self, scope: Scope, name: str, version: str | None) -> Any:
        """The model, if the fast path serves it: the one the guard found for this path, else
        looked up (a guard is not required in front)."""
        model = scope.get(TARGET)
        if model is None:
            try:
                model = await MODEL_REGISTRY.read(self.data_plane).get_model(name, version)
            except MLServerError:  # not found: MLServer's path answers its 404
                return None
        return model if getattr(model, "fast_path", False) else None

    async def _respond(
        self, model: Any, request: SimpleRequest, headers: dict[str, str], name: str, version: str | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        try:
            if not self.direct.serves(model):
                return await self._via_data_plane(request, headers, name, version)
            stamp(headers)
            flags = request.flags
            call = Call(
                new_id(request.id),
                request.inputs,
                request.outputs,
                flags.get("ood_flags"),
                flags.get("feature_sources"),
                headers,
            )
            answer = await self.direct.infer(model, name, version, call)
            return 200, _rendered(answer, call.id), self._response_headers(model, answer, call.id)
        except PipelineError as error:
            return error.status, encode_to_json_bytes({"error": str(error)}), []
        except MLServerError as error:
            return error.status_code, encode_to_json_bytes({"error": str(error)}), []

    def _response_headers(self, model: Any, answer: Answer, request_id: str) -> list[tuple[bytes, bytes]]:
        """direct.response_headers as raw ASGI headers (a list: compression may add to it)."""
        return list(self.direct.response_headers(model, answer, request_id.encode("latin-1"), _raw_pair))

    async def _via_data_plane(
        self, request: SimpleRequest, headers: dict[str, str], name: str, version: str | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        payload = _payload(request)
        mlserver_endpoints.insert_headers(payload, headers)
        response = await self.data_plane.infer(payload, name, version)
        extra = _raw(extract_headers(response) or {})
        # As FastAPI dumps the endpoint's response model (response_model_exclude_unset/none).
        content = response.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
        return 200, encode_to_json_bytes(content), extra


def _rendered(answer: Answer, request_id: str) -> bytes:
    """The answer as MLServer's InferenceResponse renders (its fields, in their order). Its
    parameters are there even when empty: MLServer's inference middleware put its headers there,
    and only they were taken out."""
    document: dict[str, Any] = {
        "model_name": answer.model_name,
        "model_version": answer.model_version,
        "id": request_id,
        "parameters": answer.parameters,
    }
    document["outputs"] = [
        {"name": o.name, "shape": o.shape, "datatype": o.datatype, "data": o.data} for o in answer.outputs
    ]
    return encode_to_json_bytes(document)


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [_raw_pair(k, v) for k, v in headers.items()]


def _raw_pair(name: str, value: str) -> tuple[bytes, bytes]:
    return name.lower().encode("latin-1"), str(value).encode("latin-1")


def _first(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


@lru_cache(maxsize=64)
def _parsed_as_json(content_type: str | None) -> bool:
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


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    # Starlette's Response: content-length, then content-type, then the endpoint's own headers.
    start = [(b"content-length", str(len(body)).encode()), _JSON, *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})
