"""Admission in process: the options, deadlines (runtime.policy.deadlines), the compute offload
(runtime.service.compute), the admission steps around MLServer's DataPlane with a stand-in model registry
(runtime.policy.admission, runtime.integration.dataplane) and the MLServer fixes beside them. The same
behaviour over real servers is in tests/reliability."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from mlserver import MLModel
from mlserver.errors import ModelNotFound
from mlserver.handlers.dataplane import DataPlane
from mlserver.parallel.dispatcher import AsyncResponses
from mlserver.settings import ModelParameters, ModelSettings, Settings
from mlserver.types import InferenceRequest, InferenceResponse, Parameters

import runtime.model  # noqa: F401  (installs the patches)
from runtime.core.errors import ArtifactError, DeadlineExceeded, InvalidTimeoutError, Overloaded, Unauthenticated
from runtime.core.options import AdmissionOptions, RuntimeOptions
from runtime.integration.grpc_service import QuietRefusals
from runtime.integration.v2 import RuntimeRequestError, as_mlserver_error
from runtime.policy import deadlines
from runtime.policy.inflight import IN_FLIGHT
from runtime.service.compute import compute

# ------------------------------------------------------------------------------ options


def test_options_accept_the_reliability_keys_and_still_refuse_unknown_ones():
    options = RuntimeOptions.from_extra(
        {
            "max_in_flight": 4,
            "request_timeout_ms": 250,
            "trusted_types": ["a.B"],
            "allow_sklearn_version_mismatch": True,
            "auth_token_file": "/run/secrets/tokens",
        }
    )
    policy = options.load_policy()
    assert policy.extra_trusted_types == ("a.B",) and policy.allow_sklearn_version_mismatch
    assert RuntimeOptions.from_extra(None).load_policy() == type(policy)()
    with pytest.raises(ArtifactError, match="max_in_flgiht"):
        RuntimeOptions.from_extra({"max_in_flgiht": 4})
    with pytest.raises(ArtifactError):
        RuntimeOptions.from_extra({"max_in_flight": -1})
    with pytest.raises(ArtifactError):
        RuntimeOptions.from_extra({"request_timeout_ms": 0})
    # The server process reads only its own keys and ignores the rest.
    assert AdmissionOptions.model_validate({"max_rows": 5, "max_in_flight": 2}).max_in_flight == 2


@pytest.mark.parametrize(
    "extra,offload",
    [
        ({}, False),
        ({"max_in_flight": 3}, True),
        ({"request_timeout_ms": 100}, True),
        ({"max_in_flight": 3, "offload_compute": False}, False),
        ({"offload_compute": True}, True),
    ],
)
def test_compute_is_offloaded_only_when_something_needs_to_see_the_queue(extra, offload):
    assert AdmissionOptions.model_validate(extra).offload is offload


# ------------------------------------------------------------------------------ deadlines


def test_stamp_records_arrival_and_deadlines_and_ignores_client_sent_values():
    before = time.time()
    headers = deadlines.stamp(
        {"x-request-timeout-ms": "250", deadlines.DEADLINE_AT: "1e12", deadlines.GRPC_DEADLINE_AT: "1e12"},
        grpc_remaining=0.1,
    )
    received = float(headers[deadlines.RECEIVED_AT])
    assert before <= received <= time.time()
    assert float(headers[deadlines.DEADLINE_AT]) == pytest.approx(received + 0.25)
    assert float(headers[deadlines.GRPC_DEADLINE_AT]) == pytest.approx(received + 0.1)
    plain = deadlines.stamp({deadlines.DEADLINE_AT: "1e12"})
    assert deadlines.DEADLINE_AT not in plain and deadlines.GRPC_DEADLINE_AT not in plain


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "inf", ""])
def test_a_malformed_timeout_is_a_400(raw):
    with pytest.raises(InvalidTimeoutError, match="x-request-timeout-ms") as error:
        deadlines.stamp({"x-request-timeout-ms": raw})
    assert error.value.status == 400


def _settled(header_ms: float | None, default_ms: float | None, grpc_s: float | None) -> Any:
    headers = {"x-request-timeout-ms": str(header_ms)} if header_ms is not None else {}
    deadlines.stamp(headers, grpc_s)
    deadlines.settle_deadline(headers, default_ms)
    if deadlines.DEADLINE_AT not in headers:
        return None
    return round((float(headers[deadlines.DEADLINE_AT]) - float(headers[deadlines.RECEIVED_AT])) * 1000)


def test_the_header_replaces_the_default_and_grpc_caps_both():
    assert _settled(None, None, None) is None
    assert _settled(None, 150, None) == 150
    assert _settled(5000, 150, None) == 5000  # the client may ask for longer
    assert _settled(50, 150, None) == 50
    assert _settled(None, 150, 30.0) == 150  # a long transport timeout does not lift the default
    assert _settled(5000, 150, 0.2) == 200
    assert _settled(None, None, 0.2) == 200


def test_check_deadline_names_where_and_how_long_it_waited():
    deadlines.check_deadline(None, "x")
    deadlines.check_deadline({}, "x")
    now = time.time()
    deadlines.check_deadline({deadlines.DEADLINE_AT: repr(now + 60)}, "x")
    waited = r"before its computation started \(request waited [12]\d\d ms\)"
    with pytest.raises(DeadlineExceeded, match=waited) as e:
        deadlines.check_deadline(
            {deadlines.DEADLINE_AT: repr(now - 0.1), deadlines.RECEIVED_AT: repr(now - 0.15)},
            "its computation started",
        )
    assert e.value.status == 504


# ------------------------------------------------------------------------------ compute


def _payload(headers: dict | None = None) -> InferenceRequest:
    return InferenceRequest(inputs=[], parameters=Parameters(headers=headers or {}))


VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def test_offloaded_compute_runs_on_the_compute_thread_with_the_callers_context():
    def fn(_arg):
        return threading.current_thread().name, VAR.get()

    async def main():
        VAR.set("from the request")
        offloaded = await compute(fn, None, {}, offload=True)
        return offloaded, await compute(fn, None, {}, offload=False)

    (thread, value), (inline_thread, _) = asyncio.run(main())
    assert thread.startswith("pipeline-compute") and value == "from the request"
    assert inline_thread == threading.current_thread().name


@pytest.mark.parametrize("offload", [True, False])
def test_compute_refuses_work_whose_deadline_passed_without_running_it(offload):
    ran: list[str] = []
    late = {deadlines.DEADLINE_AT: repr(time.time() - 1)}
    with pytest.raises(DeadlineExceeded, match="its computation started"):
        asyncio.run(compute(ran.append, "job", late, offload))
    assert ran == []


def test_the_deadline_is_checked_when_the_compute_thread_picks_the_job_up():
    ran: list[str] = []

    async def main():
        blocker = asyncio.ensure_future(compute(lambda _: time.sleep(0.3), None, {}, True))
        await asyncio.sleep(0.05)
        queued = {deadlines.DEADLINE_AT: repr(time.time() + 0.1)}  # valid when queued
        with pytest.raises(DeadlineExceeded):
            await compute(ran.append, "job", queued, True)
        await blocker

    asyncio.run(main())
    assert ran == []


# ------------------------------------------------------------------------------ the DataPlane wrapper


class _Model:
    def __init__(self, name: str, version: str | None, extra: dict) -> None:
        self.name, self.version, self.ready = name, version, True
        self.settings = ModelSettings(
            name=name, implementation=MLModel, parameters=ModelParameters(version=version, extra=extra)
        )
        self.release = asyncio.Event()
        self.calls: list[InferenceRequest] = []

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self.calls.append(payload)
        await self.release.wait()
        return InferenceResponse(model_name=self.name, outputs=[])


class _Registry:
    def __init__(self, *models: _Model) -> None:
        self.models = {m.name: m for m in models}

    async def get_model(self, name: str, version: str | None = None) -> Any:
        if name not in self.models:
            raise ModelNotFound(name, version)
        return self.models[name]


@pytest.fixture(scope="module")
def dataplane() -> DataPlane:
    return DataPlane(Settings(), _Registry())  # one per process: it registers Prometheus metrics


def test_the_cap_refuses_at_once_and_frees_up_when_requests_finish(dataplane, monkeypatch):
    model = _Model("capped", "1", {"max_in_flight": 2})
    monkeypatch.setattr(dataplane, "_model_registry", _Registry(model))

    async def main():
        first = [asyncio.ensure_future(dataplane.infer(_payload(), "capped")) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert IN_FLIGHT.per_model[("capped", "1")] == 2
        with pytest.raises(RuntimeRequestError, match="'capped' already has 2 request") as refused:
            await dataplane.infer(_payload(), "capped")
        assert refused.value.status_code == Overloaded.status
        model.release.set()
        await asyncio.gather(*first)
        assert IN_FLIGHT.per_model[("capped", "1")] == 0
        await dataplane.infer(_payload(), "capped")

    asyncio.run(main())
    assert len(model.calls) == 3  # the refused one never reached the model


def test_an_expired_deadline_or_a_missing_token_never_reaches_the_model(dataplane, monkeypatch, tmp_path):
    (tmp_path / "tokens").write_text("sesame\n")
    model = _Model("guarded", None, {"auth_token_file": str(tmp_path / "tokens"), "request_timeout_ms": 1})
    model.release.set()
    monkeypatch.setattr(dataplane, "_model_registry", _Registry(model))

    async def main():
        with pytest.raises(RuntimeRequestError, match="missing bearer token") as refused:
            await dataplane.infer(_payload(), "guarded")
        assert refused.value.status_code == Unauthenticated.status
        stale = _payload({"authorization": "Bearer sesame", deadlines.RECEIVED_AT: repr(time.time() - 1)})
        with pytest.raises(RuntimeRequestError, match="before the request was admitted") as refused:
            await dataplane.infer(stale, "guarded")
        assert refused.value.status_code == DeadlineExceeded.status
        with pytest.raises(ModelNotFound):
            await dataplane.infer(_payload(), "unknown")
        fresh = _payload({"authorization": "Bearer sesame", deadlines.RECEIVED_AT: repr(time.time())})
        await dataplane.infer(fresh, "guarded")

    asyncio.run(main())
    assert len(model.calls) == 1
    assert "authorization" not in model.calls[0].parameters.headers  # consumed, not passed on
    assert IN_FLIGHT.total == 0


def test_streams_are_admitted_and_counted_too(dataplane, monkeypatch):
    model = _Model("capped-stream", "1", {"max_in_flight": 1})
    seen = []

    async def predict_stream(payloads):
        async for payload in payloads:
            seen.append(payload)
            yield InferenceResponse(model_name="capped-stream", outputs=[])

    monkeypatch.setattr(model, "predict_stream", predict_stream, raising=False)
    monkeypatch.setattr(dataplane, "_model_registry", _Registry(model))

    async def payloads(n):
        for _ in range(n):
            yield _payload()

    async def main():
        stream = dataplane.infer_stream(payloads(3), "capped-stream")
        first = await stream.__anext__()
        assert IN_FLIGHT.per_model[("capped-stream", "1")] == 1
        with pytest.raises(RuntimeRequestError, match="already has 1 request"):
            async for _ in dataplane.infer_stream(payloads(1), "capped-stream"):
                pass
        rest = [r async for r in stream]
        return [first, *rest]

    assert len(asyncio.run(main())) == 3 and len(seen) == 3
    assert IN_FLIGHT.per_model[("capped-stream", "1")] == 0


# ------------------------------------------------------------------------------ MLServer fixes


def test_a_late_worker_answer_for_a_caller_that_left_is_dropped():
    responses = AsyncResponses()
    responses.resolve(SimpleNamespace(id="gone", exception=None))  # KeyError before the patch


def test_refusals_do_not_log_a_traceback_on_the_grpc_logger():
    quiet = QuietRefusals()

    def record(exc: Exception) -> logging.LogRecord:
        return logging.LogRecord("mlserver.grpc", logging.ERROR, "", 0, exc, None, (type(exc), exc, None))

    assert not quiet.filter(record(as_mlserver_error(Overloaded("x"))))
    assert not quiet.filter(record(as_mlserver_error(DeadlineExceeded("x"))))
    assert not quiet.filter(record(as_mlserver_error(Unauthenticated("x"))))
    assert quiet.filter(record(as_mlserver_error(ArtifactError("x"))))
    assert quiet.filter(record(ValueError("x")))
