"""REST: a guard in front of MLServer's app, and each inference request's arrival stamped.

- `create_app`: the app MLServer builds gets runtime.asgi_guard's middleware (body size limit,
  the repository API's lock) and runtime.legacy_api's POST /predict, added through Starlette's
  public `add_middleware`; MLServer offers no setting for either.
- `insert_headers`: MLServer records no arrival time, and it is the one step of its REST endpoints
  that sees every inference request with its transport headers before the model is looked up.
"""

from __future__ import annotations

from typing import Any, Callable

from starlette.middleware import Middleware

from runtime.admin import AdminPolicy
from runtime.asgi_guard import RequestGuard, max_request_bytes
from runtime.deadlines import stamp
from runtime.legacy_api import LegacyPredict
from runtime.errors import PipelineError
from runtime.integration import fast_path
from runtime.integration.patching import PatchPoint
from runtime.integration.v2 import as_mlserver_error


def _stamp_on_insert(original: Callable[[Any, dict[str, str]], Any]) -> Callable[..., Any]:
    def insert_headers(inference_request, headers):  # type: ignore[no-untyped-def]
        try:
            stamp(headers)
        except PipelineError as error:  # a malformed X-Request-Timeout-Ms: the client's 400
            raise as_mlserver_error(error) from None
        return original(inference_request, headers)

    return insert_headers


def _guarded(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_app(settings, data_plane, model_repository_handlers):  # type: ignore[no-untyped-def]
        app = original(settings, data_plane, model_repository_handlers)
        admin = AdminPolicy.from_env(settings.host)
        admin.announce()
        # Starlette puts the last one added outermost: the guard sees every request first.
        app.add_middleware(LegacyPredict)
        app.add_middleware(RequestGuard, max_request_bytes=max_request_bytes(), admin=admin)
        layers = fast_path.layers(app) if fast_path.enabled(settings) else None
        if layers is not None:
            # Inside the guard and /predict (whose V2 requests it serves too), outside MLServer's
            # own middleware, whose work it reproduces: where add_middleware cannot put it.
            app.user_middleware.insert(2, Middleware(fast_path.FastInfer, data_plane=data_plane, layers=layers))
        return app

    return create_app


PATCHES = [
    PatchPoint(
        target="mlserver.rest.server:create_app",
        why="add the request guard to the app (a body above PIPELINE_MAX_REQUEST_BYTES is a 413 "
        "before it is read; the repository API needs the admin token), POST /predict "
        "(runtime.legacy_api) and, in front of MLServer's middleware, the V2 fast path "
        "(runtime.integration.fast_path)",
        upstream="none found: no body size limit and no auth on the repository API",
        if_removed="a few large bodies exhaust the pod's memory; anyone who reaches the port "
        "unloads models; no /predict; REST inference at MLServer's speed",
        params=("settings", "data_plane", "model_repository_handlers"),
        apply=_guarded,
    ),
    PatchPoint(
        target="mlserver.rest.endpoints:insert_headers",
        why="stamp the arrival time and the X-Request-Timeout-Ms deadline (a module global, "
        "looked up per request by Endpoints.infer / infer_stream)",
        upstream="none: MLServer has no request hook before the dataplane",
        if_removed="X-Request-Timeout-Ms and request_timeout_ms are ignored over REST (no 504)",
        params=("inference_request", "headers"),
        apply=_stamp_on_insert,
    ),
]
