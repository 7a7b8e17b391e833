"""Where the runtime's OpenTelemetry spans go, and which span they hang under.

When `tracing_server` is set, MLServer builds one TracerProvider and hands it to its FastAPI and
gRPC instrumentation without making it the global provider, so the runtime looks it up:

- Without parallel workers the model runs in the server process, inside the request span, and
  `mlserver.tracing` holds the provider (built with the servers, before any model loads).
- With parallel workers the model runs in a worker process that has neither. The worker is
  MLServer's `Worker` process object and carries the server settings, so the runtime builds the
  provider from them; and `install()`, run in the server process, makes MLServer's dispatching
  model pass the request span's W3C `traceparent` to the worker inside the request parameters,
  where `parent_context` takes it out again.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from mlserver import tracing as mlserver_tracing
from mlserver.parallel.model import ParallelModel
from mlserver.settings import Settings
from mlserver.types import InferenceRequest, InferenceResponse, Parameters
from opentelemetry.context import Context
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME = "pipeline-runtime"
# Request parameter carrying the request span's context from the server process to a worker
# (no leading underscore: pydantic would keep such an attribute private and not send it).
TRACEPARENT_PARAMETER = "pipeline_traceparent"

_PROPAGATOR = TraceContextTextMapPropagator()
_GUARD_ATTRIBUTE = "_pipeline_runtime_traced"


@dataclass(frozen=True)
class Tracing:
    tracer: Tracer
    # In a parallel worker: the request span lives in the server process, its context comes
    # with the request.
    in_worker: bool


@lru_cache(maxsize=1)
def runtime_tracing() -> Optional[Tracing]:
    """The runtime's tracer in this process, or None when `tracing_server` is not set."""
    provider = mlserver_tracing._TRACER_PROVIDER  # private: MLServer has no public getter
    if provider is not None:
        return Tracing(provider.get_tracer(TRACER_NAME), in_worker=False)
    settings = getattr(multiprocessing.current_process(), "_settings", None)
    if isinstance(settings, Settings) and settings.tracing_server:
        provider = mlserver_tracing.get_tracer_provider(settings)
        return Tracing(provider.get_tracer(TRACER_NAME), in_worker=True)
    return None


def parent_context(tracing: Tracing, request: InferenceRequest) -> Optional[Context]:
    """In a worker, the request span's context sent along by the server process; else None
    (the current context, which already holds the request span)."""
    carried = _pop_parameter(request, TRACEPARENT_PARAMETER)
    if not tracing.in_worker or not isinstance(carried, str):
        return None
    return _PROPAGATOR.extract({"traceparent": carried})


def _pop_parameter(request: InferenceRequest, key: str) -> object:
    extra = request.parameters.model_extra if request.parameters is not None else None
    return extra.pop(key, None) if extra else None


def _carry_traceparent(request: InferenceRequest) -> None:
    # Whatever a client put under this key is dropped: only the server sets the parent.
    _pop_parameter(request, TRACEPARENT_PARAMETER)
    if mlserver_tracing._TRACER_PROVIDER is None:  # tracing is off
        return
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if "traceparent" in carrier:
        if request.parameters is None:
            request.parameters = Parameters()
        setattr(request.parameters, TRACEPARENT_PARAMETER, carrier["traceparent"])


def install(runtime_class: type) -> None:
    """Make MLServer's ParallelModel carry the trace context to workers serving `runtime_class`."""
    original = ParallelModel.predict
    if getattr(original, _GUARD_ATTRIBUTE, False):
        return

    async def predict(self: ParallelModel, payload: InferenceRequest) -> InferenceResponse:
        if isinstance(self._model, runtime_class):
            _carry_traceparent(payload)
        return await original(self, payload)

    setattr(predict, _GUARD_ATTRIBUTE, True)
    ParallelModel.predict = predict  # type: ignore[method-assign]
