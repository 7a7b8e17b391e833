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
the code.

Each model version's series exist from its load, at 0 (so `rate()` and `increase()` see every
increment), but its children are bound at their first use (`DeclaredFamily`): most series of a
version are never used (the refusals' outcomes, features never out of range), and a child costs
0.6 KiB (a counter) to 4.4 KiB (a histogram) and ~10 µs to bind, ~48 KiB and ~0.5 ms a model
(docs/performance.md, "Growth").
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, NamedTuple

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

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


# ------------------------------------------------------------------------- series declared at load


class Declared(NamedTuple):
    """One model version's series of a family: each one's own label values (after the version's),
    a gauge's value, and when they were declared."""

    suffixes: tuple[tuple[str, ...], ...]
    value: float
    created: float


class DeclaredFamily:
    """A metric family whose per-model series exist from the model's load without a child each.

    Registered in the family's place: `/metrics` shows the family's children, then every declared
    series that has no child yet as the samples of a zero-valued `template` (a gauge: its declared
    value) with the series' labels and `_created` at its declaration. The first use binds the child
    (`bind`), which shows from then on, its count from 0 (its `_created` the first use's time: it
    was 0 until then). With parallel workers `/metrics` reads the workers' multiprocess files, not
    this collector: there (`template` None) declaring binds every child at once, as before.
    """

    def __init__(self, family: MetricWrapperBase, template: MetricWrapperBase | None, labelnames: tuple[str, ...]):
        self.family = family
        self._template = template
        self._labelnames = labelnames
        self._declared: dict[tuple[str, ...], Declared] = {}
        self._bound: set[tuple[str, ...]] = set()

    def declare(self, prefix: tuple[str, ...], suffixes: tuple[tuple[str, ...], ...], value: float = 0.0) -> None:
        """The series prefix + each suffix exist from now on, at 0 (a gauge: at `value`)."""
        if self._template is None:
            for suffix in suffixes:
                child = self.bind(*prefix, *suffix)
                if value:
                    child.set(value)
            return
        self._declared[prefix] = Declared(suffixes, value, time.time())

    def bind(self, *labels: str) -> Any:
        """The child of these label values, from now on exported as itself."""
        # Marked before it exists: collect may then miss the series for one scrape, never show it twice.
        self._bound.add(labels)
        return self.family.labels(*labels)

    def describe(self) -> Iterable[Metric]:
        return self.family.describe()

    def collect(self) -> Iterable[Metric]:
        metrics = list(self.family.collect())
        if self._template is None or not self._declared:
            return metrics
        (metric,) = metrics
        zero = next(iter(self._template.collect())).samples
        for prefix, declared in list(self._declared.items()):
            for suffix in declared.suffixes:
                labels = prefix + suffix
                if labels in self._bound:  # read after the family's children were: see bind
                    continue
                named = dict(zip(self._labelnames, labels, strict=True))
                for sample in zero:
                    value = declared.created if sample.name.endswith("_created") else declared.value
                    metric.samples.append(sample._replace(labels={**named, **sample.labels}, value=value))
        return metrics


def _declaring(
    cls: type[MetricWrapperBase], name: str, documentation: str, labelnames: list[str], **kwargs: Any
) -> DeclaredFamily:
    """`cls`'s family, registered as a DeclaredFamily; its zero template only where this process's
    own registry is what `/metrics` shows (no multiprocess values: those would export it too)."""
    family = cls(name, documentation, labelnames, registry=None, **kwargs)
    in_process = values.ValueClass is values.MutexValue
    template = cls(name, documentation, registry=None, **kwargs) if in_process else None
    declared = DeclaredFamily(family, template, tuple(labelnames))
    REGISTRY.register(declared)  # a Collector: collect() and describe()
    return declared


@lru_cache(maxsize=256)
def each(values: tuple[str, ...]) -> tuple[tuple[str], ...]:
    """One suffix per value, shared by the models that declare the same values (a schema's features)."""
    return tuple((v,) for v in values)


@dataclass(frozen=True)
class _Families:
    requests: DeclaredFamily
    rows: DeclaredFamily
    predictions: DeclaredFamily
    stage_seconds: DeclaredFamily
    model_info: DeclaredFamily
    load_seconds: DeclaredFamily
    load_timestamp: DeclaredFamily
    ood_values: DeclaredFamily
    ood_rows: DeclaredFamily
    ood_unseen: DeclaredFamily
    ood_missing: DeclaredFamily
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
        requests=_declaring(
            Counter,
            "pipeline_requests",
            "Inference requests seen by the runtime, by outcome.",
            per_model + ["outcome"],
        ),
        rows=_declaring(
            Histogram,
            "pipeline_request_rows",
            "Rows per request whose inputs decoded (all OOD-checked).",
            per_model,
            buckets=ROW_BUCKETS,
        ),
        # bucket: a regressor's bucket upper edge ("+Inf" last) or a classifier's class label,
        # both from the model (bounded), never from a client.
        predictions=_declaring(
            Counter,
            "pipeline_prediction_bucket",
            "Predicted values by bucket (regressors) or class (classifiers).",
            per_model + ["bucket"],
        ),
        stage_seconds=_declaring(
            Histogram,
            "pipeline_stage_seconds",
            "Time spent per request in each stage of the runtime.",
            per_model + ["stage"],
            buckets=SECONDS_BUCKETS,
        ),
        model_info=_declaring(
            Gauge,
            "pipeline_model_info",
            "The loaded model version (always 1); artifacts in labels.",
            per_model + ["predictor", "model_sha256", "scaler_sha256"],
            multiprocess_mode="max",
        ),
        load_seconds=_declaring(
            Gauge,
            "pipeline_model_load_seconds",
            "How long loading and verifying the model took.",
            per_model,
            multiprocess_mode="max",
        ),
        load_timestamp=_declaring(
            Gauge,
            "pipeline_model_load_timestamp_seconds",
            "When the model was loaded (Unix time).",
            per_model,
            multiprocess_mode="max",
        ),
        ood_values=_declaring(
            Counter,
            "pipeline_ood_values",
            "Input values outside the training band, per feature.",
            per_model + ["feature"],
        ),
        ood_rows=_declaring(
            Counter,
            "pipeline_ood_rows",
            "Input rows with at least one value outside the training band or an unseen category.",
            per_model,
        ),
        # Series only for the columns they apply to: categorical ones whose unseen values are served.
        ood_unseen=_declaring(
            Counter,
            "pipeline_ood_unseen_values",
            "Values of a categorical input column outside its training categories (served), per feature.",
            per_model + ["feature"],
        ),
        # Series only for the columns the schema lets be missing.
        ood_missing=_declaring(
            Counter,
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


class _Children(dict[Any, Any]):
    """One model version's children of one family by key (a label value, or its index), each bound
    at its first use and wrapped for the request path (`observer`, `incrementer`); a dict, so a
    request finds a bound one with no call."""

    __slots__ = ("_family", "_prefix", "_suffix", "_wrap")

    def __init__(
        self,
        family: DeclaredFamily,
        prefix: tuple[str, ...],
        suffix: Callable[[Any], tuple[str, ...]],
        wrap: Callable[[Any], Any],
    ):
        super().__init__()
        self._family, self._prefix, self._suffix, self._wrap = family, prefix, suffix, wrap

    def __missing__(self, key: Any) -> Any:
        child = self[key] = self._wrap(self._family.bind(*self._prefix, *self._suffix(key)))
        return child


def _same(child: Any) -> Any:
    return child


def _label(value: str) -> tuple[str]:
    return (value,)


def _unlabelled(key: Any) -> tuple[()]:
    return ()


class ModelMetrics:
    """One model version's series, declared at load (each shows 0 from then on) and bound at first
    use, so a request does at most one dict lookup per series."""

    def __init__(self, model: str, version: str, features: tuple[str, ...], columns: ColumnChecks | None = None):
        """`columns`: the model's categorical columns whose unseen values it serves and the columns
        that may be missing, counted per feature too."""
        families = _families()
        self._labels = labels = (model, version)
        by_feature = each(features).__getitem__  # a column's index -> its feature label
        self._requests = _Children(families.requests, labels, _label, incrementer)
        self._rows = _Children(families.rows, labels, _unlabelled, observer)
        self._stages = _Children(families.stage_seconds, labels, _label, observer)
        self._ood_values = _Children(families.ood_values, labels, by_feature, _same)
        self._ood_rows = _Children(families.ood_rows, labels, _unlabelled, _same)
        self._ood_unseen = _Children(families.ood_unseen, labels, by_feature, _same)
        self._ood_missing = _Children(families.ood_missing, labels, by_feature, _same)
        categorical = [col for col, _ in columns.categories] if columns is not None else []
        gaps = columns.gaps.tolist() if columns is not None else []
        families.requests.declare(labels, each(known_outcomes()))
        families.rows.declare(labels, ((),))
        families.stage_seconds.declare(labels, each(STAGES))
        families.ood_values.declare(labels, each(features))
        families.ood_rows.declare(labels, ((),))
        families.ood_unseen.declare(labels, each(tuple(features[j] for j in categorical)))
        families.ood_missing.declare(labels, each(tuple(features[j] for j in gaps)))

    def loaded(self, manifest: Manifest, predictor: str, seconds: float) -> None:
        families = _families()
        artifacts = (manifest.model.sha256, manifest.scaler.sha256 if manifest.scaler else "")
        families.model_info.declare(self._labels, ((predictor, *artifacts),), 1)
        families.load_seconds.declare(self._labels, ((),), seconds)
        families.load_timestamp.declare(self._labels, ((),), time.time())

    def record(self, outcome: str, rows: int | None, stage_seconds: dict[str, float]) -> None:
        # An outcome not declared at load (an InvalidRequest subclass defined later) is bound all the same.
        self._requests[outcome](1)
        if rows is not None:
            self._rows[()](rows)
        for stage, seconds in stage_seconds.items():
            self._stages[stage](seconds)

    def bind_predictions(self, edges: np.ndarray | None, classes: list | None) -> None:
        """What the predictions are counted by: a regressor's bucket edges or a classifier's
        classes, every series declared at load (a version that never predicts a class still
        shows 0)."""
        families = _families()
        self._edges = edges
        self._edge_list = edges.tolist() if edges is not None else []
        self._class_index = {c: i for i, c in enumerate(classes or [])}
        labels = [_edge_label(e) for e in edges] + ["+Inf"] if edges is not None else [str(c) for c in classes or []]
        buckets = each(tuple(labels))
        families.predictions.declare(self._labels, buckets)
        self._bucket_count = len(buckets)
        self._predictions = _Children(families.predictions, self._labels, buckets.__getitem__, incrementer)

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
        counts = np.bincount(index, minlength=self._bucket_count).tolist()
        for i, count in enumerate(counts):
            if count:
                self._predictions[i](count)

    def record_ood(self, report: OodReport) -> None:
        if report.missing is not None:
            _count_per_feature(self._ood_missing, report.missing)
        if not report.rows:
            return
        _count_per_feature(self._ood_values, report.per_feature)
        if report.unseen is not None:
            _count_per_feature(self._ood_unseen, report.unseen)
        self._ood_rows[()].inc(report.rows)


def _count_per_feature(children: dict[int, Counter], counts: np.ndarray) -> None:
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
