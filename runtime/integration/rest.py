"""REST: the edge in front of MLServer's app, and each inference request's arrival stamped.

- `RESTServer._get_config`: uvicorn serves the edge, not MLServer's FastAPI app directly:
  runtime.edge.guard's RequestGuard (routes, the repository API's lock, bearer tokens and body
  limits decided before the body is read), then runtime.edge.binary (V2's binary tensor extension,
  decoded for both paths behind), then V1 (runtime.edge.v1_api) and POST /predict (legacy_api), then (unless
  off) the V2 fast path, then MLServer's app. Outside FastAPI, a request the edge answers passes
  none of its and Starlette's per-request layers (FastAPI >= 0.13x adds a telemetry check and two
  middlewares to every request). The guard asks the app's own router which route a request takes,
  so it decides on the path Starlette routes (root path and every spelling included). The same
  config gets uvicorn's guarded protocol (runtime.integration.http_head). MLServer offers no
  setting for either.
- `insert_headers`: MLServer records no arrival time, and it is the one step of its REST endpoints
  that sees every inference request with its transport headers before the model is looked up; a
  binary request's decoded inputs go in there too (MLServer 1.7.1 has no binary extension).
- the REST server's private app, settings and DataPlane, read where the edge is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from mlserver.errors import MLServerError
from mlserver.handlers.dataplane import DataPlane
from mlserver.settings import Settings
from mlserver.types import TensorData
from starlette.routing import Match

from runtime.core.errors import PipelineError, RouteNotFound
from runtime.edge.asgi import App, RawHeaders, Scope, credentials, route_path
from runtime.edge.binary import BinaryTensors, pending_inputs
from runtime.edge.body_limits import BodyLimits
from runtime.edge.guard import INFERENCE, OTHER, REPOSITORY, Authorize, RequestGuard, Route, Router
from runtime.edge.head_limits import HeadLimits
from runtime.edge.legacy_api import LegacyPredict, configured_default, is_legacy, legacy_model
from runtime.edge.v1_api import V1Api, v1_route
from runtime.integration import fast_path, http_head
from runtime.integration.dataplane import MODEL_REGISTRY, policy_for
from runtime.integration.patching import PatchPoint, read_point
from runtime.integration.v2 import as_mlserver_error
from runtime.policy.admin import REPOSITORY_PATH, AdminPolicy
from runtime.policy.deadlines import stamp
from runtime.policy.gate import GATE

# MLServer's inference routes end so (infer, generate, and their streams); its repository API's
# routes start with REPOSITORY_PATH.
_INFERENCE_ENDINGS = ("/infer", "/generate", "/infer_stream", "/generate_stream")
_NOT_FOUND = 404
_DECISIONS_KEPT = 1024


def _stamp_on_insert(original: Callable[[Any, dict[str, str]], Any]) -> Callable[..., Any]:
    def insert_headers(inference_request, headers):
        try:
            stamp(headers)
        except PipelineError as error:  # a malformed X-Request-Timeout-Ms: the client's 400
            raise as_mlserver_error(error) from None
        _put_in_binary_inputs(inference_request)
        return original(inference_request, headers)

    return insert_headers


def _put_in_binary_inputs(inference_request: Any) -> None:
    """A binary request's inputs came as `data: []` (runtime.edge.binary): their values, decoded at
    the edge, go in as numpy arrays (lists of str for BYTES), as the gRPC path hands raw contents."""
    inputs = inference_request.inputs
    for index, values in pending_inputs().items():
        if index < len(inputs):
            inputs[index].data = TensorData.model_construct(root=values)


def router_of(app: Any, default_model: str | None) -> Router:
    """The route `app` takes for a request, as its router decides (Starlette's Router: the first
    full match, else the first partial one, a 405; else a redirect to the other trailing slash)."""
    routes = app.router.routes
    # Decisions by (method, path, root path): a request's route is a few regex matches, its lookup
    # here one dict access. Bounded (paths name models, and anyone may send any path), and dropped
    # when the routes change (MLServer adds a model's custom handlers at load).
    decided: dict[tuple[str, str, str], Route | None] = {}
    known = len(routes)

    def route(scope: Scope) -> Route | None:
        nonlocal known
        key = (scope["method"], scope["path"], scope.get("root_path", ""))
        if key in decided and known == len(routes):
            return decided[key]
        if len(decided) >= _DECISIONS_KEPT or known != len(routes):
            decided.clear()
            known = len(routes)
        decided[key] = found = _decided(scope)
        return found

    def _decided(scope: Scope) -> Route | None:
        path = route_path(scope)
        if is_legacy(path):
            return Route(INFERENCE, legacy_model(path, default_model))
        v1 = v1_route(path)
        if v1 is not None:
            return v1
        found = _matched(routes, scope) or _matched(routes, _other_slash(scope))
        if found is None:
            return None
        template, params = found
        if template.startswith(REPOSITORY_PATH):
            return Route(REPOSITORY)
        if template.endswith(_INFERENCE_ENDINGS):
            return Route(INFERENCE, params.get("model_name"), params.get("model_version"))
        return Route(OTHER)

    return route


def _matched(routes: list[Any], scope: Scope | None) -> tuple[str, dict[str, Any]] | None:
    if scope is None:
        return None
    partial = None
    for candidate in routes:
        match, child = candidate.matches(scope)
        if match is Match.FULL:
            return getattr(candidate, "path", ""), child.get("path_params", {})
        if match is Match.PARTIAL and partial is None:
            partial = getattr(candidate, "path", ""), child.get("path_params", {})
    return partial


def _other_slash(scope: Scope) -> Scope | None:
    path = scope["path"]
    if path in ("", "/"):
        return None
    return {**scope, "path": path[:-1] if path.endswith("/") else path + "/"}


def authorizer(data_plane: Any) -> Authorize:
    """An inference route's model (404 if none is loaded) and its bearer token (401), as
    admission will check them once the body is read; the model, for the fast path."""

    registry = MODEL_REGISTRY.read(data_plane)

    async def authorize(name: str, version: str | None, headers: RawHeaders) -> object:
        try:
            model = await registry.get_model(name, version)
        except MLServerError as error:
            if error.status_code == _NOT_FOUND:
                raise RouteNotFound(str(error)) from None
            return None  # not ours to decide from the head: MLServer's path answers
        policy = policy_for(model)
        GATE.learn((name, version), policy)  # the cap, decided from the next heads on this route
        if policy.authenticator is not None:
            policy.authenticate(credentials(headers))
        return model

    return authorize


def edge(app: Any, settings: Any, data_plane: Any) -> App:
    """The ASGI app uvicorn serves: guard -> binary tensors -> V1 -> /predict -> fast path (unless off) ->
    MLServer's app."""
    admin = AdminPolicy.from_env(settings.host)
    admin.announce()
    default_model = configured_default()
    inner: App = app
    layers = fast_path.layers(app) if fast_path.enabled(settings) else None
    if layers is not None:
        inner = fast_path.FastInfer(app, data_plane=data_plane, layers=layers)
    inner = BinaryTensors(V1Api(LegacyPredict(inner, default_model=default_model)))
    return RequestGuard(
        inner,
        limits=BodyLimits.from_env(),
        admin=admin,
        router=router_of(app, default_model),
        authorize=authorizer(data_plane),
    )


def _served_through_the_edge(limits: HeadLimits) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    protocol = http_head.guarded_protocol(limits, "REST")

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def _get_config(self):
            config = original(self)
            http_head.configure(config, protocol, limits)
            config.app = edge(*(point.read(self) for point in SERVER_STATE))
            return config

        return _get_config

    return wrap


# What the patched _get_config reads of its RESTServer, in edge()'s order.
SERVER_STATE = tuple(
    read_point(
        f"mlserver.rest.server:RESTServer.{name}",
        f"{what}, from which RESTServer._get_config builds the edge",
        "none: the REST server has no public handle on it",
        "no edge: no request guard, no /predict, no REST fast path",
        kind=kind,
    )
    for name, what, kind in (
        ("_app", "MLServer's FastAPI app", FastAPI),
        ("_settings", "the server settings", Settings),
        ("_data_plane", "the DataPlane", DataPlane),
    )
)


def patches(limits: HeadLimits | None = None) -> list[PatchPoint]:
    return [
        PatchPoint(
            target="mlserver.rest.server:RESTServer._get_config",
            why="uvicorn serves the edge in front of MLServer's app: the request guard (from the request "
            "head: unknown routes 404, the repository API's admin token, an inference model's bearer "
            "token; then the body read under PIPELINE_MAX_REQUEST_BYTES, inflated as it arrives, its JSON "
            "depth bounded), V2's binary tensor extension (runtime.edge.binary), POST /predict "
            "(runtime.edge.legacy_api) and the V2 fast path "
            "(runtime.integration.fast_path); and the REST server's " + http_head.CONFIG_WHY,
            upstream="none found: no body size limit and no auth on the repository API; MLServer inflates "
            "a gzip body whole (mlserver.rest.requests); " + http_head.CONFIG_UPSTREAM,
            if_removed="a few large or compressed bodies exhaust the pod's memory; anyone who reaches the "
            "port unloads models; no /predict; REST inference at MLServer's speed; " + http_head.config_lost("REST"),
            params=("self",),
            apply=_served_through_the_edge(limits or HeadLimits.from_env()),
        ),
        PatchPoint(
            target="mlserver.rest.endpoints:insert_headers",
            why="stamp the arrival time and the X-Request-Timeout-Ms deadline (a module global, "
            "looked up per request by Endpoints.infer / infer_stream), and put in a binary request's inputs "
            "as the edge decoded them (runtime.edge.binary)",
            upstream="none: MLServer has no request hook before the dataplane, and no binary tensor extension",
            if_removed="X-Request-Timeout-Ms and request_timeout_ms are ignored over REST (no 504); binary "
            "inputs (tritonclient.http's default) reach MLServer's path empty",
            params=("inference_request", "headers"),
            apply=_stamp_on_insert,
        ),
        *SERVER_STATE,
    ]
