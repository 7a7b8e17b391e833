"""Prometheus metrics of the runtime: the metric families and each model version's children
(fed per request by runtime.observation.observer).

The metrics live in prometheus_client's default registry, created lazily at the first model load:
- MLServer 1.7.1's `/metrics` serves that registry when `parallel_workers` is 0, and NOT the
  separate registry of its own `mlserver.metrics.register/log` helpers (SeldonIO/MLServer#1151),
  so metrics registered there would never show in that mode.
- With parallel workers, `/metrics` reads the multiprocess files of every worker. A worker writes
  them for any metric created after MLServer switched it to multiprocess values
  (`configure_metrics`, before any model loads): hence lazy creation, never at import.

Label values are bounded by the server, never by a client: model and version come from the
model settings, features from the manifest, outcomes from the error classes and stages from
the code. Each model version binds its label children once, at load.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from runtime.core import errors
from runtime.core.artifacts import Manifest
from runtime.core.ood import ColumnChecks, OodReport
from runtime.observation.buckets import SECONDS_BUCKETS

OK = "ok"
INTERNAL_ERROR = "internal_error"
STAGES = ("decode", "validate", "predict", "encode")
DIFF_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 50, 100)
REL_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


@dataclass(frozen=True)
class _Families:
    requests: Counter
    rows: Histogram
    predictions: Counter
    stage_seconds: Histogram
    model_info: Gauge
    load_seconds: Gauge
    load_timestamp: Gauge
    ood_values: Counter
    ood_rows: Counter
    ood_unseen: Counter
    ood_missing: Counter
    refusals: Counter
    rate_limited: Counter
    fallbacks: Counter
    shadow_events: Counter
    shadow_seconds: Histogram
    shadow_abs_diff: Histogram
    shadow_rel_diff: Histogram
    shadow_psi: Gauge
    shadow_ks: Gauge
    shadow_window: Gauge
    breaker_state: Gauge
    lookup_seconds: Histogram
    lookup_rows: Counter
    lookup_cache: Counter
    lookup_errors: Counter
    store_breaker: Gauge
    store_pool: Gauge
    fast_path: Counter


@lru_cache(maxsize=1)
def _families() -> _Families:
    per_model = ["model", "version"]
    # Gauges: across parallel workers, the largest value (every worker loads every model).
    return _Families(
        requests=Counter(
            "pipeline_requests",
            "Inference requests seen by the runtime, by outcome.",
            per_model + ["outcome"],
        ),
        rows=Histogram(
            "pipeline_request_rows",
            "Rows per request whose inputs decoded (all OOD-checked).",
            per_model,
            buckets=ROW_BUCKETS,
        ),
        # bucket: a regressor's bucket upper edge ("+Inf" last) or a classifier's class label,
        # both from the model (bounded), never from a client.
        predictions=Counter(
            "pipeline_prediction_bucket",
            "Predicted values by bucket (regressors) or class (classifiers).",
            per_model + ["bucket"],
        ),
        stage_seconds=Histogram(
            "pipeline_stage_seconds",
            "Time spent per request in each stage of the runtime.",
            per_model + ["stage"],
            buckets=SECONDS_BUCKETS,
        ),
        model_info=Gauge(
            "pipeline_model_info",
            "The loaded model version (always 1); artifacts in labels.",
            per_model + ["predictor", "model_sha256", "scaler_sha256"],
            multiprocess_mode="max",
        ),
        load_seconds=Gauge(
            "pipeline_model_load_seconds",
            "How long loading and verifying the model took.",
            per_model,
            multiprocess_mode="max",
        ),
        load_timestamp=Gauge(
            "pipeline_model_load_timestamp_seconds",
            "When the model was loaded (Unix time).",
            per_model,
            multiprocess_mode="max",
        ),
        ood_values=Counter(
            "pipeline_ood_values",
            "Input values outside the training band, per feature.",
            per_model + ["feature"],
        ),
        ood_rows=Counter(
            "pipeline_ood_rows",
            "Input rows with at least one value outside the training band or an unseen category.",
            per_model,
        ),
        # Series only for the columns they apply to: categorical ones whose unseen values are served.
        ood_unseen=Counter(
            "pipeline_ood_unseen_values",
            "Values of a categorical input column outside its training categories (served), per feature.",
            per_model + ["feature"],
        ),
        # Series only for the columns the schema lets be missing.
        ood_missing=Counter(
            "pipeline_ood_missing_values",
            "Missing input values (null or NaN), per feature.",
            per_model + ["feature"],
        ),
        # Only `model` (an existing model's name: unknown ones are a 404 first) and the reason.
        refusals=Counter(
            "pipeline_admission_refusals",
            "Requests refused before any computation: unauthenticated, overloaded, deadline_exceeded.",
            ["model", "reason"],
        ),
        # `client`: a bearer token's short hash (as many as the configured tokens) or "by-address".
        rate_limited=Counter(
            "pipeline_rate_limited",
            "Requests refused for being over the client's rate (429).",
            ["model", "client"],
        ),
        # reason: error, slow, breaker_open (from the code).
        fallbacks=Counter(
            "pipeline_fallbacks",
            "Requests the fallback model answered for this one, by reason.",
            ["model", "fallback", "reason"],
        ),
        # event: evaluated (requests), compared, agreed (rows, classifiers), error, dropped (buffer full),
        # skipped (requests: the shadow model was not loaded when their batch came), incompatible
        # (requests: it was, but its input schema might refuse the primary's features).
        shadow_events=Counter(
            "pipeline_shadow_events",
            "Shadow evaluations of this model's requests, by event.",
            ["model", "shadow", "event"],
        ),
        shadow_seconds=Histogram(
            "pipeline_shadow_batch_seconds",
            "The shadow model's prediction time per batch of sampled requests.",
            ["model", "shadow"],
            buckets=SECONDS_BUCKETS,
        ),
        shadow_abs_diff=Histogram(
            "pipeline_shadow_abs_difference",
            "|shadow - primary| per row (regressors).",
            ["model", "shadow"],
            buckets=DIFF_BUCKETS,
        ),
        shadow_rel_diff=Histogram(
            "pipeline_shadow_rel_difference",
            "|shadow - primary| / |primary| per row (regressors).",
            ["model", "shadow"],
            buckets=REL_BUCKETS,
        ),
        shadow_psi=Gauge(
            "pipeline_shadow_psi",
            "Population stability index, shadow vs primary, sliding window.",
            ["model", "shadow"],
            multiprocess_mode="max",
        ),
        shadow_ks=Gauge(
            "pipeline_shadow_ks",
            "Two-sample Kolmogorov-Smirnov statistic, shadow vs primary.",
            ["model", "shadow"],
            multiprocess_mode="max",
        ),
        shadow_window=Gauge(
            "pipeline_shadow_window_rows",
            "Rows in the window PSI and KS are computed over.",
            ["model", "shadow"],
            multiprocess_mode="max",
        ),
        breaker_state=Gauge(
            "pipeline_breaker_state",
            "The model's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["model"],
            multiprocess_mode="max",
        ),
        lookup_seconds=Histogram(
            "pipeline_feature_lookup_seconds",
            "Feature store round trips (cache misses), wait for a connection included.",
            ["model"],
            buckets=SECONDS_BUCKETS,
        ),
        lookup_rows=Counter(
            "pipeline_feature_rows_fetched",
            "Entity rows the feature store returned.",
            ["model"],
        ),
        # result: hit, miss (one per distinct id of a request).
        lookup_cache=Counter(
            "pipeline_feature_cache",
            "Feature cache lookups by result.",
            ["model", "result"],
        ),
        # kind: unknown_id (or a stored row missing a feature), timeout, unavailable, breaker_open,
        # pool_full (from the code).
        lookup_errors=Counter(
            "pipeline_feature_lookup_errors",
            "Failed feature lookups by kind.",
            ["model", "kind"],
        ),
        store_breaker=Gauge(
            "pipeline_feature_store_breaker_state",
            "The feature store's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["model"],
            multiprocess_mode="max",
        ),
        # state: size (open connections), available (idle), in_use, waiting (lookups queued for one);
        # summed over parallel workers, each of which has its own pool.
        store_pool=Gauge(
            "pipeline_feature_pool_connections",
            "The feature store's connection pool.",
            ["model", "state"],
            multiprocess_mode="livesum",
        ),
        # protocol: rest or grpc. Only the server process answers there (never a parallel worker).
        fast_path=Counter(
            "pipeline_fast_path_requests",
            "Inference requests the fast path took (runtime.integration.fast_path), by protocol.",
            ["protocol"],
        ),
    )


# ------------------------------------------------------------------------------------ outcomes


def count_refusal(model: str, error: BaseException) -> None:
    """One request refused by admission (runtime.policy.admission), by its error class."""
    _families().refusals.labels(model, _reason(type(error).__name__)).inc()


def count_fallback(model: str, fallback: str, reason: str) -> None:
    _families().fallbacks.labels(model, fallback, reason).inc()


def set_breaker_state(model: str, value: int) -> None:
    _families().breaker_state.labels(model).set(value)


def count_rate_limited(model: str, client: str) -> None:
    _families().rate_limited.labels(model, client).inc()


def fast_path_counter(protocol: str) -> Counter:
    """The count of requests the fast path took over `protocol` (rest, grpc), bound once."""
    return _families().fast_path.labels(protocol)


def _edge_label(edge: float) -> str:
    return f"{edge:.6g}"


@cache
def _reason(error_class: str) -> str:
    """'FeatureCountError' -> 'feature_count', 'InvalidRequest' -> 'invalid_request'."""
    name = error_class.removesuffix("Error") or error_class
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def outcome_of(error: BaseException | None) -> str:
    if error is None:
        return OK
    if isinstance(error, (errors.InvalidRequest, errors.FeatureStoreUnavailable)):
        return _reason(type(error).__name__)
    return INTERNAL_ERROR


def known_outcomes() -> tuple[str, ...]:
    """Every outcome the runtime's error classes can produce, so each series exists from load."""
    pending, found = [errors.InvalidRequest, errors.FeatureStoreUnavailable], []
    while pending:
        cls = pending.pop()
        found.append(_reason(cls.__name__))
        pending.extend(cls.__subclasses__())
    return (OK, *sorted(found), INTERNAL_ERROR)


# ------------------------------------------------------------------------------ one model version


class ModelMetrics:
    """One model version's metric children, bound once so a request does no label lookups."""

    def __init__(self, model: str, version: str, features: tuple[str, ...], columns: ColumnChecks | None = None):
        """`columns`: the model's categorical columns whose unseen values it serves and the columns
        that may be missing, counted per feature too."""
        families = _families()
        self._labels = (model, version)
        self._requests = {o: families.requests.labels(model, version, o) for o in known_outcomes()}
        self._rows = observer(families.rows.labels(model, version))
        self._stages = {s: observer(families.stage_seconds.labels(model, version, s)) for s in STAGES}
        self._ood_values = tuple(families.ood_values.labels(model, version, f) for f in features)
        self._ood_rows = families.ood_rows.labels(model, version)
        categorical = [col for col, _ in columns.categories] if columns is not None else []
        gaps = columns.gaps.tolist() if columns is not None else []
        self._ood_unseen = {j: families.ood_unseen.labels(model, version, features[j]) for j in categorical}
        self._ood_missing = {j: families.ood_missing.labels(model, version, features[j]) for j in gaps}

    def loaded(self, manifest: Manifest, predictor: str, seconds: float) -> None:
        families = _families()
        artifacts = (manifest.model.sha256, manifest.scaler.sha256 if manifest.scaler else "")
        families.model_info.labels(*self._labels, predictor, *artifacts).set(1)
        families.load_seconds.labels(*self._labels).set(seconds)
        families.load_timestamp.labels(*self._labels).set(time.time())

    def record(self, outcome: str, rows: int | None, stage_seconds: dict[str, float]) -> None:
        child = self._requests.get(outcome)
        if child is None:  # an InvalidRequest subclass defined after this model loaded
            child = _families().requests.labels(*self._labels, outcome)
        child.inc()
        if rows is not None:
            self._rows(rows)
        for stage, seconds in stage_seconds.items():
            self._stages[stage](seconds)

    def bind_predictions(self, edges: np.ndarray | None, classes: list | None) -> None:
        """What the predictions are counted by: a regressor's bucket edges or a classifier's
        classes, with every series created at load (a version that never predicts a class still
        shows 0)."""
        families = _families()
        self._edges = edges
        self._edge_list = edges.tolist() if edges is not None else []
        self._class_index = {c: i for i, c in enumerate(classes or [])}
        labels = [_edge_label(e) for e in edges] + ["+Inf"] if edges is not None else [str(c) for c in classes or []]
        self._predictions = [incrementer(families.predictions.labels(*self._labels, label)) for label in labels]

    def record_predictions(self, values: np.ndarray) -> None:
        if len(values) == 1:  # the common request: one row, no numpy round trip
            value = values.item()
            i = bisect_left(self._edge_list, value) if self._edges is not None else self._class_index[value]
            self._predictions[i](1)
            return
        if self._edges is not None:
            index = np.searchsorted(self._edges, values, side="left")  # le semantics, like a histogram
        else:
            index = np.fromiter((self._class_index[v] for v in values.tolist()), dtype=np.intp, count=len(values))
        counts = np.bincount(index, minlength=len(self._predictions)).tolist()
        for inc, count in zip(self._predictions, counts):
            if count:
                inc(count)

    def record_ood(self, report: OodReport) -> None:
        if report.missing is not None:
            _count_per_feature(self._ood_missing, report.missing)
        if not report.rows:
            return
        _count_per_feature(self._ood_values, report.per_feature)
        if report.unseen is not None:
            _count_per_feature(self._ood_unseen, report.unseen)
        self._ood_rows.inc(report.rows)


def _count_per_feature(children: Sequence[Counter] | dict[int, Counter], counts: np.ndarray) -> None:
    for feature in np.flatnonzero(counts).tolist():  # only the features that had any
        children[feature].inc(int(counts[feature]))


class ShadowMetrics:
    """One primary/shadow pair's metric children, bound once: the shadow thread does no label lookups."""

    def __init__(self, model: str, shadow: str):
        families = _families()
        self._events = {
            e: families.shadow_events.labels(model, shadow, e)
            for e in ("evaluated", "compared", "agreed", "error", "dropped", "skipped", "incompatible")
        }
        self._seconds = families.shadow_seconds.labels(model, shadow)
        self._abs_diff = families.shadow_abs_diff.labels(model, shadow)
        self._rel_diff = families.shadow_rel_diff.labels(model, shadow)
        self._psi = families.shadow_psi.labels(model, shadow)
        self._ks = families.shadow_ks.labels(model, shadow)
        self._window = families.shadow_window.labels(model, shadow)

    def count(self, event: str, amount: int = 1) -> None:
        self._events[event].inc(amount)

    def observe_batch(self, seconds: float, requests: int) -> None:
        self._seconds.observe(seconds)
        self._events["evaluated"].inc(requests)

    def observe_differences(self, absolute: np.ndarray, relative: np.ndarray) -> None:
        observe_many(self._abs_diff, absolute)
        observe_many(self._rel_diff, relative)

    def set_stats(self, psi: float, ks: float, rows: int) -> None:
        self._psi.set(psi)
        self._ks.set(ks)
        self._window.set(rows)


# prometheus_client's private per-child state (0.26.0) read below: a Histogram's bucket bounds, bucket
# values and sum, a Counter's value. Without them each falls back to the public call, slower; in the
# server, runtime.integration.prometheus_internals checks at install that prometheus_client sets them.
HISTOGRAM_STATE = ("_upper_bounds", "_buckets", "_sum")
COUNTER_VALUE = "_value"


def _internals(child: Histogram) -> tuple[list, list, Any] | None:
    """prometheus_client's per-child bucket bounds, bucket values and sum, if it has them."""
    bounds, buckets, total = (getattr(child, a, None) for a in HISTOGRAM_STATE)
    if isinstance(bounds, list) and isinstance(buckets, list) and len(bounds) == len(buckets) and total is not None:
        return bounds, buckets, total
    return None


def observer(child: Histogram) -> Callable[[float], None]:
    """`child.observe` for values that are never NaN (durations, row counts): the same bucket and
    sum increments, without prometheus_client's per-call checks and its loop over the bounds (one
    bisection instead). A request makes several observations, most of the runtime's own observation
    cost (docs/performance.md, "The fast path"). Made once per child; tests/unit/test_shadow compares
    it with `observe`."""
    found = _internals(child)
    if found is None:
        return child.observe
    bounds, buckets, total = found

    def observe(value: float) -> None:
        buckets[bisect_left(bounds, value)].inc(1)
        total.inc(value)

    return observe


def incrementer(child: Counter) -> Callable[[float], None]:
    """`child.inc` for amounts that are never negative (counts of predictions): the same increment
    of the child's value without prometheus_client's per-call checks, a large part of its cost
    (docs/performance.md, "The fast path"); a 100-row
    request makes one per bucket its predictions fall in. Made once per child; tests/unit/test_shadow
    compares it with `inc`."""
    value = getattr(child, COUNTER_VALUE, None)
    inc = getattr(value, "inc", None)
    return inc if callable(inc) else child.inc


def observe_many(child: Histogram, values: np.ndarray) -> None:
    """`values.size` observations of one histogram child, the same as calling `observe` on each
    (NaN left out).

    Observing the shadow's differences one row at a time held the event loop for a whole tick's rows
    in one block, which showed in the primary's p99 (docs/performance.md, "Shadow model").
    prometheus_client has no bulk observe (declined upstream: prometheus/client_python#733, #1124,
    pointing to custom collectors, which parallel workers' multiprocess metrics never export). So
    numpy counts the values per bucket and each bucket and the sum are incremented once, through the
    child's own values (`_upper_bounds`, `_buckets`, `_sum` of prometheus_client 0.26.0, locked;
    tests/unit/test_shadow compares this with `observe`, so an upgrade that moves them fails there).
    Without them: one observe a value.
    """
    values = values[~np.isnan(values)]
    found = _internals(child)
    if found is None:
        for value in values.tolist():
            child.observe(value)
        return
    bounds, buckets, total = found
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(buckets, counts.tolist()):
        if count:
            bucket.inc(count)
    total.inc(float(values.sum()))


class FeatureStoreMetrics:
    """One model's feature store children (runtime.features.store), bound once."""

    POOL_STATES = {"size": "pool_size", "available": "pool_available", "waiting": "requests_waiting"}

    def __init__(self, model: str):
        families = _families()
        self._seconds = families.lookup_seconds.labels(model)
        self._rows = families.lookup_rows.labels(model)
        self._hits = families.lookup_cache.labels(model, "hit")
        self._misses = families.lookup_cache.labels(model, "miss")
        self._errors = {
            k: families.lookup_errors.labels(model, k)
            for k in ("unknown_id", "timeout", "unavailable", "breaker_open", "pool_full")
        }
        self._breaker = families.store_breaker.labels(model)
        self._pool = {state: families.store_pool.labels(model, state) for state in (*self.POOL_STATES, "in_use")}

    def cache(self, hits: int, misses: int) -> None:
        if hits:
            self._hits.inc(hits)
        if misses:
            self._misses.inc(misses)

    def fetched(self, seconds: float, rows: int) -> None:
        self._seconds.observe(seconds)
        self._rows.inc(rows)

    def error(self, kind: str, amount: int = 1) -> None:
        self._errors[kind].inc(amount)

    def set_breaker(self, value: int) -> None:
        self._breaker.set(value)

    def pool(self, stats: dict[str, int]) -> None:
        for state, key in self.POOL_STATES.items():
            self._pool[state].set(stats.get(key, 0))
        self._pool["in_use"].set(stats.get("pool_size", 0) - stats.get("pool_available", 0))
