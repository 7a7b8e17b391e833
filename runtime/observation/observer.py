"""The per-request observation: the runtime's metrics, the request log line and the spans.

    predict span
    |- validate span: stages decode (V2 tensors to a checked float64 matrix) and validate (the
    |                 out-of-distribution check)
    |- transform span: stage predict (the scaler + model pipeline)
    `- encode span: stage encode (the V2 response, with OOD flags if asked)

Spans exist only when the server has a tracer (MLServer's `tracing_server`); the adapter hands
it over (runtime.integration.tracing), with the parent context a parallel worker received.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode, Tracer

from runtime.core.artifacts import Manifest
from runtime.core.errors import FeatureStoreUnavailable
from runtime.core.ood import ColumnChecks, OodReport
from runtime.observation.logs import log_request
from runtime.observation.metrics import INTERNAL_ERROR, ModelMetrics, outcome_of

logger = logging.getLogger("runtime")

T = TypeVar("T")

# What a span is without a tracer: one shared, reentrant no-op (a request opens four).
_NO_SPAN: AbstractContextManager[None] = nullcontext()


@dataclass(frozen=True)
class Tracing:
    tracer: Tracer


def _level(error: BaseException | None, internal: bool) -> int:
    if error is None or isinstance(error, FeatureStoreUnavailable):
        # A dependency's refusal is logged where it happens (the failed lookup, the breaker's
        # transitions), not once more for each of the thousands of requests refused meanwhile.
        return logging.DEBUG
    return logging.ERROR if internal else logging.WARNING


class Observer:
    """What one model version records about each request: metrics, a log line and spans."""

    def __init__(self, model: str, version: str, manifest: Manifest, tracing: Tracing | None):
        self.model, self.version = model, version
        columns = ColumnChecks.for_columns(manifest.columns)
        self.metrics = ModelMetrics(model, version, tuple(manifest.feature_names), columns)
        self.tracing = tracing

    def observe(self, request_id: str | None, parent: Context | None = None) -> Observation:
        """`parent`: the span to hang under when it is not the current one (a parallel worker)."""
        return Observation(self, request_id, parent)

    def refused(self, request_id: str | None, error: BaseException) -> None:
        """A request that failed before its computation (a feature lookup): counted and logged
        like one that failed in it."""
        self.record(request_id, error, None, 0.0, {}, None)

    def record(
        self,
        request_id: str | None,
        error: BaseException | None,
        rows: int | None,
        seconds: float,
        stage_seconds: dict[str, float],
        ood: OodReport | None,
    ) -> None:
        outcome = outcome_of(error)
        self.metrics.record(outcome, rows, stage_seconds)
        if ood is not None:
            self.metrics.record_ood(ood)
        internal = outcome == INTERNAL_ERROR
        log_request(
            logger,
            _level(error, internal),
            request_id=request_id,
            model=self.model,
            version=self.version,
            rows=rows,
            seconds=seconds,
            outcome=outcome,
            error=error,
            traceback=internal,
        )

    def span(
        self, name: str, parent: Context | None = None, rows: Callable[[], int | None] = lambda: None
    ) -> AbstractContextManager[None]:
        """A child of the current span (or of `parent`); nothing when tracing is off. `rows`:
        the request's row count once known, for the span's attributes."""
        if self.tracing is None:
            return _NO_SPAN
        return self._span(self.tracing.tracer, name, parent, rows)

    @contextmanager
    def _span(
        self, tracer: Tracer, name: str, parent: Context | None, rows: Callable[[], int | None]
    ) -> Iterator[None]:
        # Status is set here, not by OpenTelemetry: a client's mistake is not a span error.
        with tracer.start_as_current_span(
            name, context=parent, record_exception=False, set_status_on_exception=False
        ) as span:
            error: BaseException | None = None
            try:
                yield
            except BaseException as exc:
                error = exc
                raise
            finally:
                outcome = outcome_of(error)
                span.set_attributes({"model": self.model, "version": self.version, "outcome": outcome})
                if rows() is not None:
                    span.set_attribute("rows", rows())
                if error is not None and outcome == INTERNAL_ERROR:
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


class Observation:
    """One request, as `with observer.observe(request) as obs:` around the whole of predict.

    The block runs inside the runtime's `predict` span; `span()` opens a child span, `timed()`
    times a stage. On exit the outcome (from the exception, if any) goes to the request counter,
    the histograms, the log line (debug when ok, warning for a client error, error with the
    traceback otherwise) and each span's attributes.
    """

    def __init__(self, observer: Observer, request_id: str | None, parent: Context | None):
        self._observer = observer
        self._request_id = request_id
        self._parent = parent
        self._stage_seconds: dict[str, float] = {}
        self._root: AbstractContextManager[None] = _NO_SPAN
        self._started = 0.0
        self.rows: int | None = None
        self.ood: OodReport | None = None

    def __enter__(self) -> Observation:
        self._started = time.perf_counter()
        self._root = self.span("predict", parent=self._parent)
        self._root.__enter__()
        return self

    def __exit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> None:
        seconds = time.perf_counter() - self._started
        self._root.__exit__(exc_type, error, tb)
        self._observer.record(self._request_id, error, self.rows, seconds, self._stage_seconds, self.ood)

    def timed(self, stage: str, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._stage_seconds[stage] = time.perf_counter() - started

    def span(self, name: str, parent: Context | None = None) -> AbstractContextManager[None]:
        """A child of the current span (or of `parent`); nothing when tracing is off."""
        if self._observer.tracing is None:  # checked here too: no closure made for nothing
            return _NO_SPAN
        return self._observer.span(name, parent, lambda: self.rows)
