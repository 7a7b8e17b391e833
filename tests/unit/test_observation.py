"""The runtime's observation of each request, in process: metrics in prometheus_client's default
registry (what MLServer serves with parallel_workers 0), spans under the caller's span, the
request log line, and the trace context carried to parallel workers."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from mlserver import tracing as mlserver_tracing
from mlserver.parallel.messages import ModelResponseMessage
from mlserver.parallel.model import ParallelModel
from mlserver.settings import ModelParameters, ModelSettings, Settings
from mlserver.types import InferenceRequest, InferenceResponse
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY
from sklearn.datasets import load_diabetes

from runtime.core import errors
from runtime.core.errors import InternalPredictionError, InvalidRequest
from runtime.core.predictor import Predictor
from runtime.integration import tracing
from runtime.integration.v2 import RuntimeRequestError
from runtime.model import PipelineRuntime
from runtime.observation.metrics import INTERNAL_ERROR, OK, STAGES, known_outcomes, outcome_of

MODEL, VERSION = "diabetes", "1"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _load(models_dir: Path, version: str = VERSION, **extra: Any) -> PipelineRuntime:
    uri = str(models_dir / MODEL / version)
    settings = ModelSettings(
        name=MODEL,
        implementation=PipelineRuntime,
        parameters=ModelParameters(uri=uri, version=version, extra=extra),
    )
    runtime = PipelineRuntime(settings)
    asyncio.run(runtime.load())
    return runtime


def _request(rows: np.ndarray, name: str = "X", **parameters: Any) -> InferenceRequest:
    data = rows.ravel().tolist()
    tensor = {"name": name, "shape": list(rows.shape), "datatype": "FP64", "data": data}
    body: dict[str, Any] = {"id": "req-1", "inputs": [tensor]}
    if parameters:
        body["parameters"] = parameters
    return InferenceRequest.model_validate(body)


def _predict(runtime: PipelineRuntime, request: InferenceRequest) -> InferenceResponse:
    # asyncio.run copies the current context (and span) into its task, as MLServer's handling does.
    return asyncio.run(runtime.predict(request))


def _sample(name: str, version: str = VERSION, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": MODEL, "version": version, **labels}) or 0.0


def _rows(n: int) -> np.ndarray:
    return np.array(load_diabetes().data[:n])


# ------------------------------------------------------------------------------------ outcomes


def test_outcome_is_derived_from_the_error_class():
    assert outcome_of(None) == OK
    assert outcome_of(errors.FeatureCountError("x")) == "feature_count"
    assert outcome_of(errors.NonFiniteError("x")) == "non_finite"
    assert outcome_of(InvalidRequest("x")) == "invalid_request"
    assert outcome_of(InternalPredictionError("x")) == INTERNAL_ERROR
    assert outcome_of(RuntimeError("x")) == INTERNAL_ERROR


def test_every_client_error_class_has_an_outcome():
    def leaves(cls: type[Exception]) -> list[type[Exception]]:
        return [cls] + [c for sub in cls.__subclasses__() for c in leaves(sub)]

    outcomes = known_outcomes()
    assert outcomes[0] == OK and outcomes[-1] == INTERNAL_ERROR
    assert {outcome_of(cls("x")) for cls in leaves(InvalidRequest)} <= set(outcomes)
    assert len(set(outcomes)) == len(outcomes)


def test_an_error_class_defined_after_load_still_counts(models_dir):
    runtime = _load(models_dir)

    class LateError(InvalidRequest):
        """Defined after the model loaded, so its series was not created at load."""

    runtime.service._observer.metrics.record(outcome_of(LateError("x")), None, {})
    assert _sample("pipeline_requests_total", outcome="late") == 1


# ------------------------------------------------------------------------------------- metrics


def test_load_publishes_model_info_and_every_outcome_series(models_dir):
    runtime = _load(models_dir, version="2")
    manifest = json.loads((models_dir / MODEL / "2" / "manifest.json").read_text())
    info = {
        "predictor": runtime.service._predictor.kind,
        "model_sha256": manifest["model"]["sha256"],
        "scaler_sha256": manifest["scaler"]["sha256"],
    }
    assert _sample("pipeline_model_info", version="2", **info) == 1.0
    assert _sample("pipeline_model_load_seconds", version="2") > 0
    assert _sample("pipeline_model_load_timestamp_seconds", version="2") > 1e9
    for outcome in known_outcomes():
        assert (
            REGISTRY.get_sample_value("pipeline_requests_total", {"model": MODEL, "version": "2", "outcome": outcome})
            is not None
        )


def test_counters_move_by_the_right_amounts(models_dir):
    runtime = _load(models_dir)
    before = {
        "ok": _sample("pipeline_requests_total", outcome="ok"),
        "feature_count": _sample("pipeline_requests_total", outcome="feature_count"),
        "rows_count": _sample("pipeline_request_rows_count"),
        "rows_sum": _sample("pipeline_request_rows_sum"),
        **{s: _sample("pipeline_stage_seconds_count", stage=s) for s in STAGES},
    }
    for n in (1, 3, 5):
        _predict(runtime, _request(_rows(n)))
    with pytest.raises(RuntimeRequestError, match="expected 10 features"):
        _predict(runtime, _request(np.zeros((2, 7))))
    assert _sample("pipeline_requests_total", outcome="ok") - before["ok"] == 3
    refused = _sample("pipeline_requests_total", outcome="feature_count")
    assert refused - before["feature_count"] == 1
    assert _sample("pipeline_request_rows_count") - before["rows_count"] == 3
    assert _sample("pipeline_request_rows_sum") - before["rows_sum"] == 9
    # The failed request spent time decoding, and stopped there.
    assert _sample("pipeline_stage_seconds_count", stage="decode") - before["decode"] == 4
    for stage in ("validate", "predict", "encode"):
        assert _sample("pipeline_stage_seconds_count", stage=stage) - before[stage] == 3


def test_out_of_distribution_counts(models_dir):
    runtime = _load(models_dir)
    low, high = runtime.service._ood.low, runtime.service._ood.high
    rows = _rows(3)
    rows[0, 2] = high[2] + 1.0  # bmi above
    rows[1, 2] = low[2] - 1.0  # bmi below
    rows[1, 9] = high[9] * 10  # s6 above

    def counts() -> dict[str, float]:
        return {f: _sample("pipeline_ood_values_total", feature=f) for f in ("bmi", "s6", "age")}

    before = counts()
    rows_before = _sample("pipeline_ood_rows_total")
    _predict(runtime, _request(rows))
    after = counts()
    assert {f: after[f] - before[f] for f in after} == {"bmi": 2, "s6": 1, "age": 0}
    assert _sample("pipeline_ood_rows_total") - rows_before == 2


def test_flags_in_the_response_only_when_asked(models_dir):
    runtime = _load(models_dir)
    rows = _rows(2)
    rows[1, 0] = runtime.service._ood.high[0] + 1.0
    assert _predict(runtime, _request(rows)).parameters is None
    flagged = _predict(runtime, _request(rows, ood_flags=True))
    assert json.loads(flagged.parameters.model_extra["ood_flags"]) == [[], ["age"]]
    with pytest.raises(RuntimeRequestError, match="ood_flags"):
        _predict(runtime, _request(rows, ood_flags="yes"))


def _label_sets() -> set[tuple[str, frozenset]]:
    return {
        (s.name, frozenset(s.labels.items()))
        for family in REGISTRY.collect()
        if family.name.startswith("pipeline_")
        for s in family.samples
    }


def test_nothing_a_client_sends_creates_a_series(models_dir):
    runtime = _load(models_dir)
    _predict(runtime, _request(_rows(1)))
    known = _label_sets()
    hostile = [
        _request(_rows(2), name='evil"name\n', ood_flags=True, anything="x"),
        _request(np.zeros((1, 3)), name="other"),
        InferenceRequest.model_validate(
            {"id": "new-id", "inputs": [{"name": "bmi", "shape": [1], "datatype": "FP64", "data": [0]}]}
        ),
        InferenceRequest.model_validate(
            {
                "inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": [0] * 10}],
                "outputs": [{"name": "made-up-output"}],
            }
        ),
    ]
    for request in hostile:
        try:
            _predict(runtime, request)
        except RuntimeRequestError as refused:
            assert refused.status_code == 400
    assert _label_sets() == known


# ------------------------------------------------------------------------------ failures and logs


class _Boom:
    kind = "broken"

    def predict(self, features: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        raise ZeroDivisionError("boom")


def test_internal_error_is_counted_logged_with_traceback_hidden_from_client(models_dir, caplog):
    runtime = _load(models_dir)
    runtime.service._predictor = cast(Predictor, _Boom())
    before = _sample("pipeline_requests_total", outcome=INTERNAL_ERROR)
    with caplog.at_level(logging.DEBUG, logger="runtime"):
        with pytest.raises(RuntimeRequestError, match="internal error") as raised:
            _predict(runtime, _request(_rows(2)))
    assert "boom" not in str(raised.value)
    assert _sample("pipeline_requests_total", outcome=INTERNAL_ERROR) - before == 1
    (record,) = [r for r in caplog.records if getattr(r, "outcome", None) == INTERNAL_ERROR]
    assert record.levelno == logging.ERROR and record.exc_info[0] is ZeroDivisionError
    fields = (record.request_id, record.model, record.version, record.rows)
    assert fields == ("req-1", MODEL, VERSION, 2)


def test_request_lines_debug_when_ok_warning_when_refused(models_dir, caplog):
    runtime = _load(models_dir)
    with caplog.at_level(logging.DEBUG, logger="runtime"):
        _predict(runtime, _request(_rows(3)))
        with pytest.raises(RuntimeRequestError, match="expected 10 features"):
            _predict(runtime, _request(np.zeros((2, 7))))
    ok, refused = [r for r in caplog.records if hasattr(r, "outcome")]
    assert (ok.levelno, ok.outcome, ok.rows, ok.request_id) == (logging.DEBUG, "ok", 3, "req-1")
    assert ok.duration_ms > 0
    assert (refused.levelno, refused.outcome) == (logging.WARNING, "feature_count")
    assert refused.rows is None
    assert "expected 10 features" in refused.getMessage()


# ------------------------------------------------------------------------------------- tracing


@pytest.fixture
def spans(monkeypatch) -> Iterator[InMemorySpanExporter]:
    """MLServer's tracer provider, as set when `tracing_server` is configured, to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(mlserver_tracing, "_TRACER_PROVIDER", provider)
    tracing.runtime_tracing.cache_clear()
    yield exporter
    tracing.runtime_tracing.cache_clear()


def _by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in finished}


def _parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    assert span.attributes is not None, f"{span.name} has no attributes"
    return dict(span.attributes)


def test_spans_are_children_of_the_request_span(models_dir, spans):
    runtime = _load(models_dir)
    tracer = mlserver_tracing._TRACER_PROVIDER.get_tracer("test")
    with tracer.start_as_current_span("POST /v2/models/diabetes/infer") as request_span:
        _predict(runtime, _request(_rows(2)))
    finished = _by_name(spans.get_finished_spans())
    root = finished["predict"]
    assert _parent_id(root) == request_span.context.span_id
    assert root.context.trace_id == request_span.context.trace_id
    for name in ("validate", "transform", "encode"):
        assert _parent_id(finished[name]) == root.context.span_id
    for name in ("predict", "validate", "transform", "encode"):
        expected = {"model": MODEL, "version": VERSION, "rows": 2, "outcome": "ok"}
        assert _attributes(finished[name]) == expected


def test_a_refused_request_is_not_a_span_error(models_dir, spans):
    runtime = _load(models_dir)
    with pytest.raises(RuntimeRequestError, match="expected 10 features"):
        _predict(runtime, _request(np.zeros((2, 7))))
    finished = _by_name(spans.get_finished_spans())
    assert set(finished) == {"predict", "validate"}
    for span in finished.values():
        assert _attributes(span)["outcome"] == "feature_count"
        assert span.status.status_code is StatusCode.UNSET


def test_an_internal_error_is_a_span_error(models_dir, spans):
    runtime = _load(models_dir)
    runtime.service._predictor = cast(Predictor, _Boom())
    with pytest.raises(RuntimeRequestError, match="internal error"):
        _predict(runtime, _request(_rows(2)))
    finished = _by_name(spans.get_finished_spans())
    for name in ("predict", "transform"):
        assert finished[name].status.status_code is StatusCode.ERROR
        assert _attributes(finished[name])["outcome"] == INTERNAL_ERROR
    assert _attributes(finished["validate"])["outcome"] == "ok"


def test_no_spans_when_tracing_is_off(models_dir, monkeypatch):
    monkeypatch.setattr(mlserver_tracing, "_TRACER_PROVIDER", None)
    tracing.runtime_tracing.cache_clear()
    try:
        runtime = _load(models_dir)
        assert runtime.service._observer.tracing is None
        _predict(runtime, _request(_rows(1)))
    finally:
        tracing.runtime_tracing.cache_clear()


class _Worker:
    """Stands for MLServer's Worker process object, which carries the server settings."""

    def __init__(self, settings: Settings):
        self._settings = settings


def test_in_a_worker_spans_hang_under_the_carried_request_span(models_dir, monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    built_from: list[Settings] = []

    def get_tracer_provider(settings: Settings) -> TracerProvider:
        built_from.append(settings)
        return provider

    monkeypatch.setattr(mlserver_tracing, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(mlserver_tracing, "get_tracer_provider", get_tracer_provider)
    settings = Settings(tracing_server="127.0.0.1:4317")
    monkeypatch.setattr(multiprocessing, "current_process", lambda: _Worker(settings))
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())  # as in a worker
    tracing.runtime_tracing.cache_clear()
    try:
        runtime = _load(models_dir)
        request = _request(_rows(2), **{tracing.TRACEPARENT_PARAMETER: TRACEPARENT})
        _predict(runtime, request)
    finally:
        tracing.runtime_tracing.cache_clear()
    assert built_from == [settings]
    assert tracing.TRACEPARENT_PARAMETER not in request.parameters.model_extra
    root = _by_name(exporter.get_finished_spans())["predict"]
    assert format(root.context.trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert format(_parent_id(root), "016x") == TRACEPARENT.split("-")[2]


class _Dispatcher:
    def __init__(self) -> None:
        self.sent: list[InferenceRequest] = []

    async def dispatch_request(self, message: Any) -> ModelResponseMessage:
        self.sent.append(message.method_args[0])
        response = InferenceResponse(model_name=MODEL, outputs=[])
        return ModelResponseMessage(id=message.id, return_value=response)


def _dispatch(model: Any, request: InferenceRequest, span_name: str | None) -> tuple[Any, Any]:
    """What MLServer's ParallelModel sends to a worker, and the request span it ran under."""
    dispatcher = _Dispatcher()
    parallel = ParallelModel(model, dispatcher)

    async def run() -> Any:
        if span_name is None:
            return await parallel.predict(request)
        tracer = mlserver_tracing._TRACER_PROVIDER.get_tracer("test")
        with tracer.start_as_current_span(span_name) as span:
            await parallel.predict(request)
            return span

    span = asyncio.run(run())
    return dispatcher.sent[0], span


def test_the_server_process_sends_the_request_span_to_the_worker(models_dir, spans):
    runtime = _load(models_dir)
    forged = _request(_rows(1), **{tracing.TRACEPARENT_PARAMETER: TRACEPARENT})
    sent, span = _dispatch(runtime, forged, "POST /v2/models/diabetes/infer")
    carried = sent.parameters.model_extra[tracing.TRACEPARENT_PARAMETER]
    _, trace_id, span_id, _ = carried.split("-")
    assert trace_id == format(span.context.trace_id, "032x")
    assert span_id == format(span.context.span_id, "016x")


def test_nothing_is_carried_when_tracing_is_off_or_for_other_runtimes(models_dir, monkeypatch):
    runtime = _load(models_dir)
    monkeypatch.setattr(mlserver_tracing, "_TRACER_PROVIDER", None)
    forged = _request(_rows(1), **{tracing.TRACEPARENT_PARAMETER: TRACEPARENT})
    sent, _ = _dispatch(runtime, forged, None)
    # A client's value is dropped, and nothing is added.
    assert tracing.TRACEPARENT_PARAMETER not in sent.parameters.model_extra
    from mlserver import MLModel

    other = MLModel(ModelSettings(name="other", implementation=MLModel))
    untouched, _ = _dispatch(other, _request(_rows(1)), None)
    assert untouched.parameters is None
