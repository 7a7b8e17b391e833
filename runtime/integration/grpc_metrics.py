"""MLServer's gRPC request metrics interceptor, with its label children bound once.

MLServer's PromServerInterceptor (mlserver.grpc.interceptors, over py_grpc_prometheus) looks up
three label children per call (started, handled, the handling-time histogram) and builds a new
handler around each call, a sizeable share of a one-row ModelInfer's CPU (docs/performance.md,
"The fast path"). This interceptor
records the same samples on the same metric objects, in the same order and on the same paths
(an RpcError counts as handled with its code; an abort, which is not one, only in the histogram),
for unary-unary calls; it hands every streaming call to MLServer's own. It replaces MLServer's
in the server runtime.integration.grpc_service builds, unless PIPELINE_FAST_PATH=0.

What this one reads of the two interceptors is private: of MLServer's, the py_grpc_prometheus
interceptor it wraps and its status code; of that one, its metric objects and options. Each is a
point, read through `PatchPoint.read`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from timeit import default_timer
from typing import Any

import grpc
from grpc import RpcError
from mlserver.grpc.interceptors import PromServerInterceptor
from prometheus_client import Counter
from py_grpc_prometheus import grpc_utils
from py_grpc_prometheus.prometheus_server_interceptor import PromServerInterceptor as PyGrpcPromInterceptor

from runtime.integration.patching import PatchPoint, read_point
from runtime.observation.metrics import observer

_UNARY = grpc_utils.get_method_type(False, False)
_PY_GRPC = "py_grpc_prometheus.prometheus_server_interceptor:PromServerInterceptor"
# The metric objects in py_grpc_prometheus's `_metrics` that MLServer's interceptor records unary calls on.
STARTED, HISTOGRAM = "grpc_server_started_counter", "grpc_server_handled_histogram"


_COSTLY = "MLServer's own interceptor measures every gRPC call, at its cost"


def _private(target: str, kind: type, why: str) -> PatchPoint:
    return read_point(target, why, "none: neither interceptor has a public handle on its metrics", _COSTLY, kind=kind)


INNER = _private(
    "mlserver.grpc.interceptors:PromServerInterceptor._interceptor",
    PyGrpcPromInterceptor,
    "the py_grpc_prometheus interceptor MLServer's wraps, whose metric objects this one records on",
)
METRICS = _private(
    f"{_PY_GRPC}._metrics",
    dict,
    f"its metric objects by name ({STARTED}, {HISTOGRAM}: checked when the interceptor is bound)",
)
HANDLED = _private(f"{_PY_GRPC}._grpc_server_handled_total_counter", Counter, "its grpc_server_handled_total")
WITH_HISTOGRAM = _private(
    f"{_PY_GRPC}._enable_handling_time_histogram", bool, "whether it records the handling-time histogram"
)
LEGACY = _private(f"{_PY_GRPC}._legacy", bool, "its legacy metric names, which this one does not record")
SKIPS_EXCEPTIONS = _private(f"{_PY_GRPC}._skip_exceptions", bool, "its option to swallow errors, which this one lacks")
STATUS_CODE = read_point(
    "mlserver.grpc.interceptors:PromServerInterceptor._compute_status_code",
    "the status code MLServer's interceptor labels a finished call with",
    "none: a private method",
    _COSTLY,
    set_by=None,
    params=("self", "servicer_context"),
)
PATCHES = [INNER, METRICS, HANDLED, WITH_HISTOGRAM, LEGACY, SKIPS_EXCEPTIONS, STATUS_CODE]


class _Children:
    """One method's label children."""

    def __init__(self, metrics: Any, service: str, method: str):
        labels = {"grpc_type": _UNARY, "grpc_service": service, "grpc_method": method}
        self._labels = labels
        self._handled_counter = metrics.handled
        self.started = metrics.started.labels(**labels)
        self.histogram = observer(metrics.histogram.labels(**labels)) if metrics.histogram is not None else None
        self._handled: dict[str, Any] = {}

    def handled(self, code: str) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._handled_counter.labels(**self._labels, grpc_code=code)
        return child


class _Metrics:
    def __init__(self, prom: Any):
        metrics = METRICS.read(prom)
        missing = {STARTED, HISTOGRAM} - metrics.keys()
        if missing:
            raise METRICS.error(f"no {sorted(missing)} among {sorted(metrics)}")
        self.started = metrics[STARTED]
        self.handled = HANDLED.read(prom)
        self.histogram = metrics[HISTOGRAM] if WITH_HISTOGRAM.read(prom) else None


class BoundPromInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, mlservers: Any):
        self._mlservers = mlservers  # mlserver.grpc.interceptors.PromServerInterceptor
        self._metrics = _Metrics(INNER.read(mlservers))
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    @staticmethod
    def replaces(interceptor: Any) -> bool:
        """MLServer's, as this module knows it (its py_grpc_prometheus neither legacy nor skipping)."""
        if type(interceptor) is not PromServerInterceptor:
            return False
        inner = INNER.read(interceptor)
        return not LEGACY.read(inner) and not SKIPS_EXCEPTIONS.read(inner)

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return await self._mlservers.intercept_service(lambda _: _ready(handler), handler_call_details)
        # A service's handler is the same object on every call: wrapped once (by identity, as a
        # handler made for one call, e.g. a refusal, is another object).
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        service, method, _ = grpc_utils.split_method_call(handler_call_details)
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._measured(handler.unary_unary, _Children(self._metrics, service, method)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[handler_call_details.method] = (handler, wrapped)
        return wrapped

    def _measured(self, behavior: Callable[..., Awaitable[Any]], children: _Children) -> Callable[..., Awaitable[Any]]:
        compute_status_code = STATUS_CODE.read(self._mlservers)

        async def measured(request: Any, context: Any) -> Any:
            start = default_timer()
            try:
                children.started.inc()
                response = await behavior(request, context)
                children.handled(compute_status_code(context).name).inc()
                return response
            except RpcError as error:
                children.handled(error.code().name if isinstance(error, grpc.Call) else "UNKNOWN").inc()
                raise
            finally:
                if children.histogram is not None:
                    children.histogram(max(default_timer() - start, 0))

        return measured


async def _ready(handler: Any) -> Any:
    return handler
