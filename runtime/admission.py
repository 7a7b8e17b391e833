"""Admission control: auth, per-request deadlines and a per-model cap on requests in flight.

Everything here runs in the process that hosts MLServer's REST and gRPC servers (the only
process with parallel_workers 0; the parent of the workers otherwise), before a request reaches
the model, so a refused request costs no computation and no worker round trip:

    arrival (transport)      stamp the arrival time, the X-Request-Timeout-Ms deadline and the
                             gRPC deadline into the request headers (x-pipeline-*)
    DataPlane.infer          model lookup (404 as before) -> bearer token (401) -> deadline:
                             the header's, else the model's default, capped by gRPC's -> passed
                             (504) -> cap reached (503) -> count in flight -> MLServer
    compute starts           deadline passed while queued (504), checked by `compute()`, which
                             the runtime's predict calls (in the worker, with parallel workers)

MLServer 1.7.1 internals patched (all in `install()`, once per process: MLServer re-imports the
model's module on every model load, this module's flag survives that). Each is pinned by
tests/unit/test_reliability_patches.py, which fails if MLServer changes what it relies on:

- `mlserver.handlers.dataplane.DataPlane.infer` / `.infer_stream` (class attributes, looked up
  per request by the REST endpoints and the gRPC servicer): the admission steps above. There is
  no hook before MLServer dispatches a request to the model or a worker.
- `mlserver.rest.endpoints.insert_headers` (module global, looked up at call time) and
  `mlserver.grpc.servicers.InferenceServicer._InsertHeaders` (class attribute): the arrival
  stamp. MLServer records no arrival time, and only the servicer sees the gRPC deadline
  (`context.time_remaining()`); grpc-timeout never reaches the headers.
- `mlserver.parallel.dispatcher.AsyncResponses.resolve`: drop a worker's answer to a request
  whose caller already left (a gRPC deadline or cancel), instead of crashing MLServer's response
  loop with a KeyError (observed: 189 "Response processing loop crashed" in one run).
- a logging filter on `mlserver.grpc`, which logs a full traceback for every error it returns:
  refusals by design (overload, deadline, auth) would flood the log under load. They are
  summarised by `runtime.admission` at most once per 10 s instead.

Status codes: 401 -> UNAUTHENTICATED, 503 -> UNAVAILABLE, 504 -> DEADLINE_EXCEEDED
(runtime.errors.register_grpc_codes).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import multiprocessing
import os
import threading
import time
import weakref
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Optional, TypeVar

from mlserver.errors import MLServerError
from pydantic import ValidationError

from runtime import auth, metrics
from runtime.errors import (
    GRPC_CODES,
    DeadlineExceeded,
    InvalidTimeoutError,
    Overloaded,
    Unauthenticated,
    register_grpc_codes,
)
from runtime.options import AdmissionOptions

logger = logging.getLogger("runtime.admission")

RECEIVED_AT = "x-pipeline-received-at"
DEADLINE_AT = "x-pipeline-deadline"
GRPC_DEADLINE_AT = "x-pipeline-grpc-deadline"
TIMEOUT_HEADER = "x-request-timeout-ms"
SUMMARY_EVERY_S = 10.0
REFUSALS = (Overloaded, DeadlineExceeded, Unauthenticated)

T = TypeVar("T")

_installed = False
_install_lock = threading.Lock()
# What each patch replaced (for the pins in tests/unit/test_reliability_patches.py).
_ORIGINALS: dict[str, Any] = {}


# ------------------------------------------------------------------------------ in-flight counts


class InFlight:
    """Requests inside MLServer's DataPlane, per (model, version) and in total (for the drain).

    Only touched from the event loop thread. The key outlives reloads: requests still running on
    the replaced model object count against the same cap as those on the new one.
    """

    def __init__(self) -> None:
        self.per_model: defaultdict[tuple[str, Optional[str]], int] = defaultdict(int)
        self.total = 0
        self.admitted = 0  # since start, for the drain's log line
        self.failed = 0  # admitted, then answered with an error (any status, e.g. a 400)

    def enter(self, key: tuple[str, Optional[str]]) -> None:
        self.per_model[key] += 1
        self.total += 1
        self.admitted += 1

    def leave(self, key: tuple[str, Optional[str]], ok: bool) -> None:
        self.per_model[key] -= 1
        self.total -= 1
        if not ok:
            self.failed += 1


IN_FLIGHT = InFlight()


class _Refusals:
    """Counts refusals and logs a summary at most every SUMMARY_EVERY_S (not one line each)."""

    def __init__(self) -> None:
        self.counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.total: defaultdict[str, int] = defaultdict(int)
        self._last_log = 0.0

    def add(self, model: str, error: Exception) -> None:
        metrics.count_refusal(model, error)
        reason = type(error).__name__
        self.counts[(model, reason)] += 1
        self.total[reason] += 1
        now = time.monotonic()
        if now - self._last_log >= SUMMARY_EVERY_S:
            self.flush(now)

    def flush(self, now: Optional[float] = None) -> None:
        self._last_log = time.monotonic() if now is None else now
        if self.counts:
            summary = ", ".join(f"{m}: {n} {r}" for (m, r), n in sorted(self.counts.items()))
            logger.warning("refused requests since the last summary: %s", summary)
            self.counts.clear()


REFUSED = _Refusals()


# ------------------------------------------------------------------------------ deadlines


def stamp(headers: dict[str, str], grpc_remaining: Optional[float] = None) -> dict[str, str]:
    """Record the arrival time and the deadlines the request brought (server clock, Unix seconds).

    Any value a client sent under our keys is overwritten or removed.
    """
    now = time.time()
    headers[RECEIVED_AT] = repr(now)
    headers.pop(DEADLINE_AT, None)
    headers.pop(GRPC_DEADLINE_AT, None)
    raw = headers.get(TIMEOUT_HEADER)
    if raw is not None:
        headers[DEADLINE_AT] = repr(now + parse_timeout_ms(raw) / 1000.0)
    if grpc_remaining is not None:
        headers[GRPC_DEADLINE_AT] = repr(now + grpc_remaining)
    return headers


def parse_timeout_ms(raw: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not value >= 0 or value == float("inf"):  # also catches NaN
        raise InvalidTimeoutError(
            f"{TIMEOUT_HEADER}: expected a number of milliseconds >= 0, got {str(raw)[:40]!r}"
        )
    return value


def settle_deadline(headers: dict[str, str], default_timeout_ms: Optional[float]) -> None:
    """The request's effective deadline: its X-Request-Timeout-Ms, else the model's default,
    and never later than its gRPC deadline (how long the client will wait at all)."""
    candidates = []
    if DEADLINE_AT in headers:
        candidates.append(float(headers[DEADLINE_AT]))
    elif default_timeout_ms is not None:
        received = float(headers.get(RECEIVED_AT) or time.time())
        candidates.append(received + default_timeout_ms / 1000.0)
    grpc_deadline = headers.pop(GRPC_DEADLINE_AT, None)
    if grpc_deadline is not None:
        candidates.append(float(grpc_deadline))
    if candidates:
        headers[DEADLINE_AT] = repr(min(candidates))


def check_deadline(headers: Optional[dict[str, str]], where: str) -> None:
    if not headers:
        return
    raw = headers.get(DEADLINE_AT)
    if raw is None:
        return
    now = time.time()
    if now >= float(raw):
        waited_ms = (now - float(headers.get(RECEIVED_AT) or now)) * 1000.0
        raise DeadlineExceeded(
            f"deadline passed before {where} (request waited {waited_ms:.0f} ms); not computed"
        )


# ------------------------------------------------------------------------------ per-model policy


@dataclass(frozen=True)
class Policy:
    options: AdmissionOptions
    authenticator: Optional[auth.Authenticator]


_NO_POLICY = Policy(AdmissionOptions(), None)
_POLICIES: "weakref.WeakKeyDictionary[Any, Policy]" = weakref.WeakKeyDictionary()


def policy_for(model: Any) -> Policy:
    """The model object's admission policy, parsed once per loaded model object."""
    policy = _POLICIES.get(model)
    if policy is None:
        policy = _build_policy(model)
        _POLICIES[model] = policy
    return policy


def _build_policy(model: Any) -> Policy:
    parameters = model.settings.parameters
    extra = (parameters.extra if parameters is not None else None) or {}
    try:
        options = AdmissionOptions.model_validate(extra)
    except ValidationError:
        # Not ours to judge (another runtime's model, or one whose load refused these options).
        options = AdmissionOptions()
    authenticator = auth.from_options(options.auth_token_file, options.auth_token_env)
    if options.max_in_flight or options.request_timeout_ms or authenticator:
        logger.info(
            "admission for model %s version %s: max_in_flight=%s request_timeout_ms=%s auth=%s",
            model.name, model.version, options.max_in_flight or "off",
            options.request_timeout_ms or "off",
            authenticator.source.description if authenticator else "off",
        )  # fmt: skip
    return Policy(options, authenticator)


def _headers(payload: Any) -> dict[str, str]:
    """The request's transport headers (MLServer put them there); created if absent."""
    if payload.parameters is None:
        from mlserver.types import Parameters

        payload.parameters = Parameters()
    if payload.parameters.headers is None:
        payload.parameters.headers = {}
    return payload.parameters.headers


async def admit(registry: Any, payload: Any, name: str, version: Optional[str]) -> tuple[str, Optional[str]]:
    """Run the admission checks for one request; return its in-flight key (not yet counted)."""
    model = await registry.get_model(name, version)  # ModelNotFound (404) as before
    policy = policy_for(model)
    headers = _headers(payload)
    try:
        if policy.authenticator is not None:
            policy.authenticator.check(headers)
            headers.pop(auth.HEADER, None)  # consumed: not sent on to workers or logs
        settle_deadline(headers, policy.options.request_timeout_ms)
        check_deadline(headers, "the request was admitted")
        key = (name, model.version)
        cap = policy.options.max_in_flight
        if cap and IN_FLIGHT.per_model[key] >= cap:
            raise Overloaded(
                f"model '{name}' already has {cap} request(s) in flight, its limit; retry later"
            )
    except REFUSALS as error:
        REFUSED.add(name, error)
        raise
    return key


# ------------------------------------------------------------------------------ compute


_executor: Optional[ThreadPoolExecutor] = None
_executor_pid = 0


def _compute_executor() -> ThreadPoolExecutor:
    """One thread per process: computations stay serial (they hold the GIL anyway) while the
    event loop stays free to accept, count, refuse and answer probes."""
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-compute")
        _executor_pid = os.getpid()
    return _executor


def _checked(fn: Callable[[Any], T], payload: Any) -> T:
    headers = payload.parameters.headers if payload.parameters is not None else None
    check_deadline(headers, "its computation started")
    return fn(payload)


async def compute(fn: Callable[[Any], T], payload: Any, offload: bool) -> T:
    """Run the model's synchronous computation `fn(payload)`, unless its deadline has passed.

    With `offload`, on the compute thread (with the caller's context variables: tracing span,
    MLServer's model context); the deadline is checked when the thread picks the job up, i.e.
    after any queueing. Without, inline (the event loop waits, as MLServer would).
    """
    if not offload:
        return _checked(fn, payload)
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_compute_executor(), context.run, _checked, fn, payload)


# ------------------------------------------------------------------------------ the patches


class _QuietRefusals(logging.Filter):
    """Drop MLServer's gRPC traceback for refusals by design (summarised by REFUSED instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else record.msg
        # By status, not class: a refusal raised in a parallel worker comes back as a WorkerError.
        return not (isinstance(exc, MLServerError) and exc.status_code in GRPC_CODES)


def install() -> None:
    """Install the admission hooks in this process; idempotent. A no-op in parallel workers."""
    global _installed
    register_grpc_codes()
    if multiprocessing.parent_process() is not None:
        return  # a parallel worker: it hosts no server; compute() still runs here
    with _install_lock:
        if _installed:
            return
        _installed = True
        _patch_transport()
        _patch_dataplane()
        _patch_async_responses()
        logging.getLogger("mlserver.grpc").addFilter(_QuietRefusals())


def _patch_transport() -> None:
    from mlserver.grpc import servicers as grpc_servicers
    from mlserver.rest import endpoints as rest_endpoints

    original_insert = _ORIGINALS["insert_headers"] = rest_endpoints.insert_headers

    def insert_headers(payload, headers):  # type: ignore[no-untyped-def]
        return original_insert(payload, stamp(headers))

    rest_endpoints.insert_headers = insert_headers

    original_grpc_insert = grpc_servicers.InferenceServicer._InsertHeaders
    _ORIGINALS["InferenceServicer._InsertHeaders"] = original_grpc_insert

    def _InsertHeaders(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        payload = original_grpc_insert(self, request, context)
        stamp(payload.parameters.headers, context.time_remaining())
        return payload

    grpc_servicers.InferenceServicer._InsertHeaders = _InsertHeaders


def _patch_dataplane() -> None:
    from mlserver.handlers.dataplane import DataPlane

    original_infer = _ORIGINALS["DataPlane.infer"] = DataPlane.infer
    original_infer_stream = _ORIGINALS["DataPlane.infer_stream"] = DataPlane.infer_stream

    async def infer(self, payload, name, version=None):  # type: ignore[no-untyped-def]
        key = await admit(self._model_registry, payload, name, version)
        IN_FLIGHT.enter(key)
        ok = False
        try:
            response = await original_infer(self, payload, name, version)
            ok = True
            return response
        except REFUSALS as error:  # the compute-start deadline check, in the model
            REFUSED.add(name, error)
            raise
        finally:
            IN_FLIGHT.leave(key, ok)

    async def infer_stream(self, payloads, name, version=None) -> AsyncIterator[Any]:  # type: ignore
        # Admission looks at the first request of the stream (it carries the headers).
        first = None
        async for first in payloads:
            break
        if first is None:
            return
        key = await admit(self._model_registry, first, name, version)

        async def replay() -> AsyncIterator[Any]:
            yield first
            async for payload in payloads:
                yield payload

        IN_FLIGHT.enter(key)
        ok = False
        try:
            async for response in original_infer_stream(self, replay(), name, version):
                yield response
            ok = True
        finally:
            IN_FLIGHT.leave(key, ok)

    DataPlane.infer = infer
    DataPlane.infer_stream = infer_stream


def _patch_async_responses() -> None:
    from mlserver.parallel.dispatcher import AsyncResponses

    original_resolve = _ORIGINALS["AsyncResponses.resolve"] = AsyncResponses.resolve

    def resolve(self, response):  # type: ignore[no-untyped-def]
        if response.id not in self._futures:
            return None  # its caller already gave up (gRPC deadline/cancel): drop the answer
        return original_resolve(self, response)

    AsyncResponses.resolve = resolve
