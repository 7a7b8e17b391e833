"""MLServer's DataPlane: admission around inference, readiness while draining.

- `DataPlane.infer` / `.infer_stream` are the one entry of REST and gRPC inference, looked up per
  request through the DataPlane instance, and the last point in the server process before
  MLServer dispatches a request to the model, its adaptive batcher or a parallel worker. There
  runtime.policy.admission runs (401/504/503 before any computation) and the request counts in flight
  (the cap, and what the drain waits for). MLServer has no public hook between the model lookup
  and that dispatch, so the wrapper looks the model up itself (the registry's dict lookup; the
  original looks it up again).
- `DataPlane.ready` / `.model_ready` answer false while the server drains (runtime.policy.drain) and
  keep serving inference: `model.ready = False` would make MLServer refuse inference with 400.
- what the DataPlane keeps private and the integration reads (its model registry, settings, response
  cache, inference middleware and model metrics), each a point read through `PatchPoint.read`.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from mlserver.settings import Settings
from prometheus_client import Counter, Summary

from runtime.core.errors import DeadlineExceeded, PipelineError
from runtime.integration.patching import PatchPoint, read_point
from runtime.integration.v2 import as_mlserver_error
from runtime.policy.admission import Policy
from runtime.policy.drain import STATE as DRAIN
from runtime.policy.inflight import IN_FLIGHT, REFUSED

T = TypeVar("T")


def _private(name: str, kind: type, why: str, if_removed: str) -> PatchPoint:
    target = f"mlserver.handlers.dataplane:DataPlane.{name}"
    return read_point(target, why, "none: the DataPlane has no public handle on it", if_removed, kind=kind)


MODEL_REGISTRY = _private(
    "_model_registry",
    object,
    "the loaded models, where admission, the request guard and the fast paths look a model up",
    "no admission, no request guard, no fast path",
)
SETTINGS = _private(
    "_settings", Settings, "the server settings: tracing turns the gRPC fast path off", "no gRPC fast path"
)
RESPONSE_CACHE = _private(
    "_response_cache",
    object,
    "MLServer's response cache (None when off): the fast paths leave a cached server to the DataPlane",
    "no fast path",
)
INFERENCE_MIDDLEWARE = _private(
    "_inference_middleware",
    object,
    "its inference middleware, which makes the fast paths' response headers (CloudEvents)",
    "no fast path",
)
MODEL_METRICS = tuple(
    _private(
        f"_ModelInferRequest{name}",
        kind,
        f"the model_infer_request_{metric} metric, which the fast paths record as the DataPlane does",
        "no fast path",
    )
    for name, metric, kind in (
        ("Success", "success", Counter),
        ("Failure", "failure", Counter),
        ("Duration", "duration", Summary),
    )
)
_POLICIES: weakref.WeakKeyDictionary[Any, Policy] = weakref.WeakKeyDictionary()


def policy_for(model: Any) -> Policy:
    """The loaded model object's admission policy, parsed once per model object."""
    policy = _POLICIES.get(model)
    if policy is None:
        parameters = model.settings.parameters
        extra = parameters.extra if parameters is not None else None
        policy = _POLICIES[model] = Policy.from_extra(model.name, model.version, extra)
    return policy


def _headers(payload: Any) -> dict[str, str]:
    """The request's transport headers (MLServer put them there); created if absent."""
    if payload.parameters is None:
        from mlserver.types import Parameters

        payload.parameters = Parameters()
    if payload.parameters.headers is None:
        payload.parameters.headers = {}
    return payload.parameters.headers


async def admit(dataplane: Any, payload: Any, name: str, version: str | None) -> Policy:
    model = await MODEL_REGISTRY.read(dataplane).get_model(name, version)  # ModelNotFound (404)
    policy = policy_for(model)
    _admit(policy, _headers(payload))
    return policy


def _admit(policy: Policy, headers: dict[str, str]) -> None:
    try:
        policy.admit(headers)
    except PipelineError as error:
        raise as_mlserver_error(error) from None


def _count_refusal(name: str, error: BaseException) -> None:
    # The compute-start deadline check, in the model (or a parallel worker, whose errors come
    # back as WorkerError with the status): counted like an admission refusal.
    if getattr(error, "status_code", None) == DeadlineExceeded.status:
        REFUSED.add(name, DeadlineExceeded(str(error)))


async def admitted(model: Any, name: str, headers: dict[str, str], infer: Callable[[], Awaitable[T]]) -> T:
    """`infer()` once the request is admitted, counted in flight meanwhile: what the patched
    DataPlane.infer does around MLServer's, for the fast path's own inference too."""
    policy = policy_for(model)
    _admit(policy, headers)
    counted = not policy.holds_slot()  # else the REST edge counts it, until its response is sent
    if counted:
        IN_FLIGHT.enter(policy.key)
    ok = False
    try:
        result = await infer()
        ok = True
        return result
    except Exception as error:
        _count_refusal(name, error)
        raise
    finally:
        if counted:
            IN_FLIGHT.leave(policy.key, ok)


def _admit_infer(original: Callable[..., Any]) -> Callable[..., Any]:
    async def infer(self, payload, name, version=None):
        model = await MODEL_REGISTRY.read(self).get_model(name, version)  # ModelNotFound (404)
        return await admitted(model, name, _headers(payload), lambda: original(self, payload, name, version))

    return infer


def _admit_infer_stream(original: Callable[..., Any]) -> Callable[..., Any]:
    async def infer_stream(self, payloads, name, version=None) -> AsyncIterator[Any]:
        # Admission looks at the first request of the stream (it carries the headers).
        first = await anext(aiter(payloads), None)
        if first is None:
            return
        policy = await admit(self, first, name, version)

        async def replay() -> AsyncIterator[Any]:
            yield first
            async for payload in payloads:
                yield payload

        IN_FLIGHT.enter(policy.key)
        ok = False
        try:
            async for response in original(self, replay(), name, version):
                yield response
            ok = True
        finally:
            IN_FLIGHT.leave(policy.key, ok)

    return infer_stream


def _not_ready_while_draining(original: Callable[..., Any]) -> Callable[..., Any]:
    async def ready(self) -> bool:
        return False if DRAIN.draining else await original(self)

    return ready


def _model_not_ready_while_draining(original: Callable[..., Any]) -> Callable[..., Any]:
    async def model_ready(self, name: str, version: str | None = None) -> bool:
        ok = await original(self, name, version)  # ModelNotFound (404) as before
        return ok and not DRAIN.draining

    return model_ready


PATCHES = [
    PatchPoint(
        target="mlserver.handlers.dataplane:DataPlane.infer",
        why="admission (auth 401, deadline 504, in-flight cap 503) and the in-flight count, "
        "before MLServer dispatches to the model, its batcher or a worker",
        upstream="none: MLServer has no admission hook before dispatch",
        if_removed="no auth, no deadlines, no cap, and the drain cannot see requests in flight",
        params=("self", "payload", "name", "version"),
        apply=_admit_infer,
    ),
    PatchPoint(
        target="mlserver.handlers.dataplane:DataPlane.infer_stream",
        why="the same admission for gRPC ModelStreamInfer (on its first message)",
        upstream="none: as DataPlane.infer",
        if_removed="streaming inference bypasses auth, deadlines and the cap",
        params=("self", "payloads", "name", "version"),
        apply=_admit_infer_stream,
    ),
    PatchPoint(
        target="mlserver.handlers.dataplane:DataPlane.ready",
        why="server readiness false while draining (REST /v2/health/ready, gRPC ServerReady)",
        upstream="none found: MLServer never turns readiness false on shutdown",
        if_removed="load balancers keep routing new requests to a pod that is stopping",
        params=("self",),
        apply=_not_ready_while_draining,
    ),
    PatchPoint(
        target="mlserver.handlers.dataplane:DataPlane.model_ready",
        why="model readiness false while draining (REST .../ready, gRPC ModelReady)",
        upstream="none found: as DataPlane.ready",
        if_removed="KServe's per-model readiness stays true during the drain",
        params=("self", "name", "version"),
        apply=_model_not_ready_while_draining,
    ),
    MODEL_REGISTRY,
    SETTINGS,
    RESPONSE_CACHE,
    INFERENCE_MIDDLEWARE,
    *MODEL_METRICS,
]
