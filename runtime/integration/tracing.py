"""Where the runtime's OpenTelemetry spans go, and which span they hang under.

When `tracing_server` is set, MLServer builds one TracerProvider and hands it to its FastAPI and
gRPC instrumentation without making it the global provider (and without a public getter), so
the runtime looks it up:

- Without parallel workers the model runs in the server process, inside the request span, and
  `mlserver.tracing._TRACER_PROVIDER` holds the provider (built with the servers, before any
  model loads).
- With parallel workers the model runs in a worker process that has neither. The worker is
  MLServer's `Worker` process object and carries the server settings (its private `_settings`), so
  the runtime builds the provider from them; and the server process's `ParallelModel.predict` passes
  the request span's W3C `traceparent` to the worker inside the request parameters, where
  `parent_context` takes it out again.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from mlserver import tracing as mlserver_tracing
from mlserver.settings import Settings
from mlserver.types import InferenceRequest, InferenceResponse, Parameters
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from runtime.integration.parallel import MODEL as PARALLEL_MODEL
from runtime.integration.patching import PatchPoint, read_point
from runtime.observation.observer import Tracing

TRACER_NAME = "pipeline-runtime"
# Request parameter carrying the request span's context from the server process to a worker
# (no leading underscore: pydantic would keep such an attribute private and not send it).
TRACEPARENT_PARAMETER = "pipeline_traceparent"

_PROPAGATOR = TraceContextTextMapPropagator()

TRACER_PROVIDER = read_point(
    "mlserver.tracing:_TRACER_PROVIDER",
    "MLServer's TracerProvider has no public getter",
    "SeldonIO/MLServer#2052 (open)",
    "no runtime spans without parallel workers",
    set_by=None,
)
WORKER_SETTINGS = read_point(
    "mlserver.parallel.worker:Worker._settings",
    "a worker process carries the server settings, from which it builds its TracerProvider",
    "SeldonIO/MLServer#2052 (open)",
    "no runtime spans in parallel workers",
)


@lru_cache(maxsize=1)
def runtime_tracing() -> Tracing | None:
    """The runtime's tracer in this process, or None when `tracing_server` is not set."""
    provider = TRACER_PROVIDER.read(mlserver_tracing)
    if provider is not None:
        return Tracing(provider.get_tracer(TRACER_NAME))
    # Only a worker process carries them: any other (the server's own) has none.
    settings = getattr(multiprocessing.current_process(), WORKER_SETTINGS.name, None)
    if isinstance(settings, Settings) and settings.tracing_server:
        provider = mlserver_tracing.get_tracer_provider(settings)
        return Tracing(provider.get_tracer(TRACER_NAME))
    return None


def parent_context(request: InferenceRequest) -> Context | None:
    """In a worker, the request span's context sent along by the server process; else None
    (the current context, which already holds the request span)."""
    carried = _pop_parameter(request, TRACEPARENT_PARAMETER)
    if not isinstance(carried, str) or multiprocessing.parent_process() is None:
        return None
    return _PROPAGATOR.extract({"traceparent": carried})


def _pop_parameter(request: InferenceRequest, key: str) -> object:
    extra = request.parameters.model_extra if request.parameters is not None else None
    return extra.pop(key, None) if extra else None


def _carry_traceparent(request: InferenceRequest) -> None:
    # Whatever a client put under this key is dropped: only the server sets the parent.
    _pop_parameter(request, TRACEPARENT_PARAMETER)
    if TRACER_PROVIDER.read(mlserver_tracing) is None:  # tracing is off
        return
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if "traceparent" in carrier:
        if request.parameters is None:
            request.parameters = Parameters()
        setattr(request.parameters, TRACEPARENT_PARAMETER, carrier["traceparent"])


def patches(runtime_class: type) -> list[PatchPoint]:
    def carry_to_workers(original: Callable[..., Any]) -> Callable[..., Any]:
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            if isinstance(PARALLEL_MODEL.read(self), runtime_class):
                _carry_traceparent(payload)
            return await original(self, payload)

        return predict

    return [
        PatchPoint(
            target="mlserver.parallel.model:ParallelModel.predict",
            why="carry the request span's traceparent to the parallel worker",
            upstream="SeldonIO/MLServer#2052 (open)",
            if_removed="with parallel workers the runtime's spans start new traces",
            params=("self", "payload"),
            apply=carry_to_workers,
        ),
        TRACER_PROVIDER,
        WORKER_SETTINGS,
    ]
