"""Every MLServer patch point of runtime.integration, pinned by the behaviour it exists for,
through real `mlserver start .` servers. An MLServer upgrade that changes what a point relies on
fails here first; `test_every_patch_point_is_pinned` keeps this list equal to the registry. A point
that only reads a private attribute is pinned by what the runtime does with what it reads.

Three servers start side by side: one with parallel_workers 0 (auth, batching, tracing), one with
a parallel worker (batching, tracing, a slow model for abandoned calls) and one that is drained.
This process talks to them with plain HTTP and tritonclient only: it must not import MLServer.
"""

from __future__ import annotations

import functools
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as tgrpc
from sklearn.datasets import load_diabetes
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from harness.models import REPO_ROOT, sample_rows
from harness.otlp import ReceivedSpan, TraceReceiver
from harness.repository import add_model, make_repository
from harness.server import Server, served
from pipeline_tools.package import write_model_dir
from tests.reliability.support import SLOW_RUNTIME
from tests.security.support import closed_within, connect, exchange, head, read_response

TOKEN = "pin-token-3f1c"
ADMIN_TOKEN = "pin-admin-77d0"
MAX_REQUEST_BYTES = 200_000
BATCHING = {"max_batch_size": 8, "max_batch_time": 0.05}
DRAIN_DELAY_S = 2.0
ABANDONED_MS = 1000  # the slow model of the parallel-worker server
IN_FLIGHT_MS = 4000  # the drained server's slow request outlives the drain delay
HEAD_TIMEOUT_S, KEEPALIVE_TIMEOUT_S = 2.0, 1.0  # the workers-0 server's
ROW = sample_rows("diabetes", 1)
_DATAPLANE = "mlserver.handlers.dataplane:DataPlane"
_PY_GRPC = "py_grpc_prometheus.prometheus_server_interceptor:PromServerInterceptor"
_MLSERVERS_PROM = "mlserver.grpc.interceptors:PromServerInterceptor"

PINNED: dict[str, Callable[..., None]] = {}


def pins(target: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(test: Callable[..., None]) -> Callable[..., None]:
        PINNED[target] = test
        return test

    return register


# ------------------------------------------------------------------------------ the servers


@pytest.fixture(scope="module")
def receiver():
    receiver = TraceReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, receiver):
    base = tmp_path_factory.mktemp("pins")
    tracing = {"tracing_server": receiver.endpoint}
    env = {
        "PYTHONPATH": str(REPO_ROOT),
        "PIN_TOKENS": TOKEN,
        "PIPELINE_ADMIN_TOKENS": ADMIN_TOKEN,
        "PIPELINE_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
    }

    inproc = make_repository(base / "workers-0", workers=0, settings=tracing)
    write_model_dir(_boosted(), "boosted", "1", inproc / "models")
    add_model(inproc, "plain")
    add_model(inproc, "guarded", extra={"auth_token_env": "PIN_TOKENS"})
    add_model(inproc, "batched", settings=BATCHING)

    pooled = make_repository(base / "workers-1", workers=1, settings=tracing)
    write_model_dir(_boosted(), "boosted", "1", pooled / "models")
    add_model(pooled, "plain")
    add_model(pooled, "batched", settings=BATCHING)
    add_model(pooled, "slow", implementation=SLOW_RUNTIME)
    pooled_env = {**env, "SLOW_RUNTIME_DELAY_MS": str(ABANDONED_MS)}

    drained = make_repository(base / "drained", workers=0)
    add_model(drained, "plain")
    add_model(drained, "slow", implementation=SLOW_RUNTIME, extra={"offload_compute": True})
    drain_env = {
        **env,
        "SLOW_RUNTIME_DELAY_MS": str(IN_FLIGHT_MS),
        "PIPELINE_DRAIN_DELAY_S": str(DRAIN_DELAY_S),
        "PIPELINE_DRAIN_TIMEOUT_S": "10",
    }

    inproc_env = {
        **env,
        "PIPELINE_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "PIPELINE_KEEPALIVE_TIMEOUT_S": str(KEEPALIVE_TIMEOUT_S),
    }
    launched = {
        "workers-0": Server.launch(
            base / "workers-0.log",
            root=inproc,
            env=inproc_env,
            models=[("plain", None), ("guarded", None), ("batched", None), ("boosted", None)],
        ),
        "workers-1": Server.launch(
            base / "workers-1.log",
            root=pooled,
            env=pooled_env,
            models=[("plain", None), ("batched", None), ("slow", None), ("boosted", None)],
        ),
        "drained": Server.launch(
            base / "drained.log", root=drained, env=drain_env, models=[("plain", None), ("slow", None)]
        ),
    }
    yield from served(launched)


@functools.cache
def _boosted() -> Pipeline:
    data = load_diabetes()
    return make_pipeline(StandardScaler(), GradientBoostingRegressor(n_estimators=30, random_state=0)).fit(
        data.data, data.target
    )


def _rows(n: int, request_id: str | None = None) -> dict:
    rows = sample_rows("diabetes", n)
    body: dict = {
        "inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]
    }
    return body if request_id is None else {"id": request_id, **body}


def _rest(
    server: Server,
    model: str,
    body: dict | None = None,
    path: str = "infer",
    headers: dict | None = None,
    timeout: float = 20,
) -> requests.Response:
    body = body or _rows(1)
    return requests.post(f"{server.http_url}/v2/models/{model}/{path}", json=body, headers=headers, timeout=timeout)


def _grpc_infer(server: Server, model: str, x: np.ndarray = ROW, **kwargs) -> tgrpc.InferResult:
    client = tgrpc.InferenceServerClient(server.grpc_url)
    try:
        tensor = tgrpc.InferInput("X", list(x.shape), "FP64")
        tensor.set_data_from_numpy(x.astype(np.float64))
        return client.infer(model, [tensor], **kwargs)
    finally:
        client.close()


def _grpc_stream(server: Server, model: str, metadata: tuple = ()) -> list:
    """One request through ModelStreamInfer; its stream's responses."""
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="X", datatype="FP64", shape=list(ROW.shape))
    tensor.contents.fp64_contents.extend(ROW.ravel().tolist())
    request = service_pb2.ModelInferRequest(model_name=model, inputs=[tensor])
    with grpc.insecure_channel(server.grpc_url) as channel:
        # MLServer's stream answers ModelInferResponse messages (Triton's proto says otherwise).
        call = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )
        return list(call(iter([request]), metadata=metadata, timeout=20))


def _grpc_refusal(server: Server, model: str, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as refused:
        _grpc_infer(server, model, **kwargs)
    return refused.value


def _traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def _runtime_spans(receiver: TraceReceiver, trace_id: str) -> list[ReceivedSpan]:
    return receiver.wait_for(trace_id, lambda spans: any(s.name == "predict" for s in spans))


# ------------------------------------------------------------------------------ transport


@pins("mlserver.rest.server:RESTServer._get_config")
@pins("mlserver.rest.server:RESTServer._app")  # whose routes the guard decides by
@pins("mlserver.rest.server:RESTServer._settings")  # whose host the repository lock decides by
def test_rest_guards_body_size_and_the_repository_api(servers):
    # The same point also installs the guarded protocol: the next test.
    server = servers["workers-0"]
    oversized = requests.post(
        f"{server.http_url}/v2/models/plain/infer",
        data=b"0" * (MAX_REQUEST_BYTES + 1),
        headers={"Content-Type": "application/json"},
        timeout=20,
    )
    assert oversized.status_code == 413 and "exceeds this server's limit" in oversized.json()["error"]
    unload = f"{server.http_url}/v2/repository/models/plain/unload"
    refused = requests.post(unload, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
    assert refused.status_code == 401 and "admin token" in refused.json()["error"]
    index = requests.post(
        f"{server.http_url}/v2/repository/index",
        json={},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=20,
    )
    assert index.status_code == 200 and {m["name"] for m in index.json()} >= {"plain", "guarded"}


@pins("mlserver.rest.app:APIRoute.__init__")
def test_a_json_body_without_a_content_type_is_read_as_json(servers):
    # tritonclient.http and KServe's REST client send none. The traced server answers on MLServer's own
    # routes (no fast path while tracing is on), where FastAPI >= 0.132 would refuse such a body.
    server = servers["workers-0"]
    url = f"{server.http_url}/v2/models/plain/infer"
    body = json.dumps({"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": ROW.ravel().tolist()}]})
    untyped = requests.post(url, data=body.encode(), timeout=20)
    assert "Content-Type" not in untyped.request.headers
    assert untyped.status_code == 200 and untyped.json()["outputs"][0]["name"] == "predict", untyped.text
    # Only a missing type is taken for JSON: another type stays a 422, as it always was (CVE-2021-32677).
    typed = requests.post(url, data=body.encode(), headers={"Content-Type": "text/plain"}, timeout=20)
    assert typed.status_code == 422, typed.text


@pins("mlserver.grpc.server:aio")
def test_grpc_guards_message_size_and_the_repository_api(servers):
    import grpc

    server = servers["workers-0"]
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="plain"), timeout=20)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        big = service_pb2.ModelInferRequest(model_name="plain")
        big.inputs.add(name="X", datatype="FP64", shape=[MAX_REQUEST_BYTES // 80 + 1, 10])
        big.raw_input_contents.append(b"\0" * ((MAX_REQUEST_BYTES // 80 + 1) * 80))
        with pytest.raises(grpc.RpcError) as too_big:
            stub.ModelInfer(big, timeout=20)
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _rest(server, "plain").status_code == 200  # both refusals left the model loaded


@pins("mlserver.rest.endpoints:insert_headers")
def test_rest_requests_get_their_deadline_stamped(servers):
    refused = _rest(servers["workers-0"], "plain", headers={"X-Request-Timeout-Ms": "0"})
    assert refused.status_code == 504 and "deadline passed" in refused.json()["error"]
    assert _rest(servers["workers-0"], "plain", headers={"X-Request-Timeout-Ms": "60000"}).status_code == 200


@pins("mlserver.grpc.servicers:InferenceServicer._InsertHeaders")
def test_grpc_requests_get_their_deadline_stamped(servers):
    refused = _grpc_refusal(servers["workers-0"], "plain", headers={"x-request-timeout-ms": "0"})
    assert refused.status() == "StatusCode.DEADLINE_EXCEEDED" and "deadline passed" in refused.message()


@pins("mlserver.grpc.servicers:InferenceServicer.ModelInfer")
@pins("mlserver.grpc.servicers:InferenceServicer._data_plane")
@pins(f"{_DATAPLANE}._settings")  # tracing, read by the gRPC fast path
@pins(f"{_DATAPLANE}._response_cache")  # none: the fast paths serve
@pins("mlserver.rest.server:RESTServer._data_plane")  # the REST fast path's
def test_inference_in_this_process_takes_the_fast_path_unless_tracing_is_on(servers):
    fast, traced = servers["drained"], servers["workers-0"]  # the drained server is drained later
    before = _fast(fast, "grpc"), _fast(fast, "rest")
    assert _grpc_infer(fast, "plain").as_numpy("predict").shape == (1,)
    assert _rest(fast, "plain").status_code == 200
    assert (_fast(fast, "grpc"), _fast(fast, "rest")) == (before[0] + 1, before[1] + 1)
    assert _grpc_infer(traced, "plain").as_numpy("predict").shape == (1,)
    assert _fast(traced, "grpc") == _fast(traced, "rest") == 0  # MLServer's servicer answered


def _fast(server: Server, protocol: str) -> float:
    return server.metric("pipeline_fast_path_requests_total", protocol=protocol)


@pins("fastapi.applications:FastAPI.user_middleware")
def test_the_rest_fast_path_reproduces_mlservers_request_metrics_and_compression(servers):
    server = servers["drained"]  # no tracing: the fast path is on
    route = {"path": "/v2/models/{model_name}/infer", "method": "POST", "status_code": "200"}
    counted, taken = server.metric("rest_server_requests_total", **route), _fast(server, "rest")
    big = _rest(server, "plain", _rows(60), headers={"Accept-Encoding": "gzip"})  # an answer of 500 bytes or more
    assert big.status_code == 200 and len(big.json()["outputs"][0]["data"]) == 60
    assert big.headers["content-encoding"] == "gzip" and big.headers["vary"] == "Accept-Encoding"
    assert _fast(server, "rest") == taken + 1
    assert server.metric("rest_server_requests_total", **route) == counted + 1


@pins(f"{_DATAPLANE}._inference_middleware")
def test_fast_path_answers_carry_mlservers_cloudevents_headers(servers):
    server = servers["drained"]
    taken = _fast(server, "rest"), _fast(server, "grpc")
    answer = _rest(server, "plain", _rows(1, request_id="pin-ce-rest"))
    assert answer.headers["ce-id"] == "pin-ce-rest" and answer.headers["ce-modelid"] == "plain", answer.headers
    request = service_pb2.ModelInferRequest(model_name="plain", id="pin-ce-grpc")
    tensor = request.inputs.add(name="X", datatype="FP64", shape=list(ROW.shape))
    tensor.contents.fp64_contents.extend(ROW.ravel().tolist())
    with grpc.insecure_channel(server.grpc_url) as channel:
        _, call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer.with_call(request, timeout=20)
    trailing = dict(call.trailing_metadata())
    assert trailing["ce-id"] == "pin-ce-grpc" and trailing["ce-modelid"] == "plain", trailing
    assert (_fast(server, "rest"), _fast(server, "grpc")) == (taken[0] + 1, taken[1] + 1)


@pins(f"{_DATAPLANE}._ModelInferRequestSuccess")
@pins(f"{_DATAPLANE}._ModelInferRequestFailure")
@pins(f"{_DATAPLANE}._ModelInferRequestDuration")
def test_fast_path_requests_count_in_mlservers_model_metrics(servers):
    server = servers["drained"]
    names = (
        "model_infer_request_success_total",
        "model_infer_request_failure_total",
        "model_infer_request_duration_count",
    )

    def counts() -> tuple[float, ...]:
        return tuple(server.metric(name, model="plain") for name in names)

    before, taken = counts(), _fast(server, "rest")
    assert _rest(server, "plain").status_code == 200
    bad = {"inputs": [{"name": "X", "shape": [1, 9], "datatype": "FP64", "data": [0.0] * 9}]}
    assert _rest(server, "plain", bad).status_code == 400
    assert _fast(server, "rest") == taken + 2
    assert counts() == (before[0] + 1, before[1] + 1, before[2] + 2)


@pins(f"{_MLSERVERS_PROM}._interceptor")
@pins(f"{_MLSERVERS_PROM}._compute_status_code")
@pins(f"{_PY_GRPC}._metrics")
@pins(f"{_PY_GRPC}._grpc_server_handled_total_counter")
@pins(f"{_PY_GRPC}._enable_handling_time_histogram")
@pins(f"{_PY_GRPC}._legacy")
@pins(f"{_PY_GRPC}._skip_exceptions")
def test_grpc_calls_count_in_mlservers_grpc_metrics(servers):
    # The runtime's interceptor records on MLServer's metric objects: a call served counts as
    # started, handled with its code and timed; a refusal (an abort) as started and timed only.
    server = servers["workers-0"]
    method = {"grpc_method": "ModelInfer", "grpc_service": "inference.GRPCInferenceService"}

    def counts() -> tuple[float, ...]:
        return (
            server.metric("grpc_server_started_total", **method),
            server.metric("grpc_server_handled_total", grpc_code="OK", **method),
            server.metric("grpc_server_handled_total", **method),
            server.metric("grpc_server_handling_seconds_count", **method),
        )

    before = counts()
    assert _grpc_infer(server, "plain").as_numpy("predict").shape == (1,)
    _grpc_refusal(server, "guarded")
    assert counts() == (before[0] + 2, before[1] + 1, before[2] + 1, before[3] + 2)


@pins("sklearn.ensemble._gradient_boosting:predict_stages")
@pins("sklearn.ensemble._gradient_boosting:_predict_regression_tree_stages_sparse")
@pins("sklearn.ensemble._gb:BaseGradientBoosting._raw_predict_init")
@pins("sklearn.ensemble._gb:BaseGradientBoosting._loss")
def test_gradient_boosting_runs_scikit_learns_stage_loop_in_the_server_and_in_workers(servers):
    """Both servers (one computing in-process, one in a parallel worker) serve the model on the boosted
    path, and its answers are scikit-learn's, bit for bit."""
    rows = sample_rows("diabetes", 5)
    for name in ("workers-0", "workers-1"):
        server = servers[name]
        metadata = requests.get(f"{server.http_url}/v2/models/boosted", timeout=20).json()
        assert json.loads(metadata["parameters"]["prediction_path"])["path"] == "boosted-stages", name
        body = {"inputs": [{"name": "X", "shape": [5, 10], "datatype": "FP64", "data": rows.ravel().tolist()}]}
        answer = _rest(server, "boosted", body).json()["outputs"][0]["data"]
        assert answer == _boosted().predict(rows).tolist(), name


@pins("skops.io._utils:whichmodule")
def test_the_server_imports_skops_with_the_lookup_and_the_same_trusted_types():
    """In a fresh process, as `mlserver start` does: the runtime's integration imports skops.io with
    this lookup in place, and every default trusted-type list skops builds equals skops' own."""
    lists = (
        "import hashlib, json, skops.io._trusted_types as t; "
        "found = json.dumps([getattr(t, n) for n in sorted(dir(t)) if n.isupper()], default=repr); "
        "print(len(found), hashlib.sha256(found.encode()).hexdigest())"
    )
    served = (
        "import mlserver.cli.main, runtime.model, skops.io._utils as u, runtime.integration.skops_lookup as s; "
        "assert u.whichmodule is s.whichmodule and type(u.__loader__).__name__ == 'SourceFileLoader'; " + lists
    )
    own = "import mlserver.cli.main; from runtime.core.artifacts import skops_io; skops_io(); " + lists
    answers = [
        subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        for code in (served, own)
    ]
    assert [a.returncode for a in answers] == [0, 0], [a.stderr[-2000:] for a in answers]
    assert answers[0].stdout == answers[1].stdout


@pins("prometheus_client.metrics:Histogram._upper_bounds")
@pins("prometheus_client.metrics:Histogram._buckets")
@pins("prometheus_client.metrics:Histogram._sum")
@pins("prometheus_client.metrics:Counter._value")
def test_the_runtimes_histograms_and_prediction_counts_add_up(servers):
    # Recorded through prometheus_client's per-child state: the exported samples must be what
    # observe() and inc() would have made of the same requests.
    server = servers["drained"]
    model = {"model": "plain"}

    def counts() -> tuple[float, ...]:
        return (
            server.metric("pipeline_request_rows_count", **model),
            server.metric("pipeline_request_rows_sum", **model),
            server.metric("pipeline_request_rows_bucket", le="1.0", **model),
            server.metric("pipeline_request_rows_bucket", le="2.0", **model),
            server.metric("pipeline_request_rows_bucket", le="+Inf", **model),
            server.metric("pipeline_stage_seconds_count", stage="predict", **model),
            server.metric("pipeline_prediction_bucket_total", **model),
        )

    before = counts()
    for _ in range(3):
        assert _rest(server, "plain", _rows(2)).status_code == 200
    assert counts() == tuple(b + d for b, d in zip(before, (3, 6, 0, 3, 3, 3, 6), strict=True))


@pins("mlserver.grpc.converters:ModelInferRequestConverter.to_types")
def test_a_malformed_raw_grpc_buffer_is_invalid_argument_naming_the_input(servers):
    import grpc

    request = service_pb2.ModelInferRequest(model_name="plain")
    tensor = request.inputs.add(name="X", datatype="FP64", shape=[1, 10])
    assert tensor.name == "X"
    request.raw_input_contents.append(b"\0" * 79)
    with grpc.insecure_channel(servers["workers-0"].grpc_url) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=20)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'X'" in refused.value.details() and "needs 80 raw bytes but 79" in refused.value.details()


@pins("mlserver.grpc.utils:STATUS_CODE_MAPPING")
def test_admission_refusals_reach_grpc_clients_with_their_own_code(servers):
    refused = _grpc_refusal(servers["workers-0"], "guarded")
    assert refused.status() == "StatusCode.UNAUTHENTICATED" and "bearer token" in refused.message()


@pins("mlserver.grpc.logging:logger")
def test_a_grpc_refusal_logs_no_traceback(servers):
    server = servers["workers-0"]
    marker = f"Bearer wrong-{secrets.token_hex(4)}"
    _grpc_refusal(server, "guarded", headers={"authorization": marker})
    _grpc_refusal(server, "guarded", headers={"authorization": marker})
    time.sleep(0.3)  # the log line, if any, is written after the answer
    grpc_lines = [r for r in server.log_records() if r.get("logger", "").startswith("mlserver.grpc")]
    assert not [r for r in grpc_lines if "bearer token" in json.dumps(r)], grpc_lines[-3:]


# ------------------------------------------------------------------------------ request heads

_HTTPTOOLS = "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol"


def _unfinished_big_head() -> bytes:
    return b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"x" * (128 * 1024)


def test_rest_refuses_a_malformed_host_and_closes_idle_keep_alive_connections(servers):
    port = servers["workers-0"].http_port
    assert exchange(port, head(hosts=[b"[zz]"])).status == 400
    with connect(port) as sock:
        sock.sendall(head())
        assert read_response(sock).status == 200
        assert closed_within(sock, KEEPALIVE_TIMEOUT_S + 1.5) == b""


@pins("mlserver.metrics.server:MetricsServer._get_config")
def test_the_metrics_port_refuses_a_malformed_host(servers):
    port = servers["workers-0"].metrics_port
    refused = exchange(port, head("/metrics", hosts=[b"[zz]"]))
    assert refused.status == 400 and "Host header" in refused.json()["error"]
    assert exchange(port, head("/metrics")).status == 200


@pins(f"{_HTTPTOOLS}.connection_made")
def test_a_connection_that_sends_nothing_is_closed_after_the_head_timeout(servers):
    started = time.monotonic()
    with connect(servers["workers-0"].http_port) as sock:
        assert closed_within(sock, HEAD_TIMEOUT_S + 2) == b""
    assert time.monotonic() - started >= HEAD_TIMEOUT_S - 0.1


@pins(f"{_HTTPTOOLS}.data_received")
def test_an_oversized_head_is_431_before_it_is_all_sent(servers):
    with connect(servers["workers-0"].http_port) as sock:
        sock.sendall(_unfinished_big_head())
        refused = read_response(sock, timeout_s=5)
    assert refused.status == 431 and "PIPELINE_MAX_HEAD_BYTES" in refused.json()["error"]


@pins(f"{_HTTPTOOLS}.on_headers_complete")
def test_a_malformed_host_or_too_many_headers_never_reach_the_app(servers):
    server = servers["workers-0"]
    assert exchange(server.http_port, head(hosts=[b"a b"])).status == 400
    assert exchange(server.http_port, head(extra=[b"X-%d: 1" % i for i in range(200)])).status == 431
    time.sleep(0.3)  # the log line, if any, is written after the answer
    assert "Exception in ASGI application" not in server.log_text()


@pins(f"{_HTTPTOOLS}.on_message_complete")
def test_the_second_head_on_a_keep_alive_connection_is_limited_too(servers):
    with connect(servers["workers-0"].http_port) as sock:
        sock.sendall(head())
        assert read_response(sock).status == 200
        sock.sendall(_unfinished_big_head())
        assert read_response(sock, timeout_s=5).status == 431


# ------------------------------------------------------------------------------ dataplane


@pins("mlserver.handlers.dataplane:DataPlane.infer")
@pins(f"{_DATAPLANE}._model_registry")  # where admission and the request guard find the model's policy
def test_inference_is_admitted_before_the_model_sees_it(servers):
    server = servers["workers-0"]
    refused = _rest(server, "guarded")
    assert refused.status_code == 401 and "missing bearer token" in refused.json()["error"]
    assert _rest(server, "guarded", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pins("mlserver.handlers.dataplane:DataPlane.infer_stream")
def test_streamed_inference_is_admitted_too(servers):
    server = servers["workers-0"]
    # Over gRPC ModelStreamInfer: over REST the request guard refuses a stream from its head first.
    with pytest.raises(grpc.RpcError) as refused:
        _grpc_stream(server, "guarded")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value
    served = _grpc_stream(server, "guarded", metadata=(("authorization", f"Bearer {TOKEN}"),))
    assert len(served) == 1 and [o.name for o in served[0].outputs] == ["predict"]


@pins("mlserver.rest.endpoints:Endpoints.infer_stream")
def test_a_rest_stream_refused_before_its_first_event_answers_with_its_status(servers):
    # Starlette 1.x sends a stream's 200 headers before its first event: the refusal must come first.
    server = servers["workers-0"]
    refused = _rest(server, "guarded", path="generate_stream")
    assert refused.status_code == 401 and "missing bearer token" in refused.json()["error"]
    missing = _rest(server, "no-such-model", path="infer_stream")
    assert missing.status_code == 404, missing.text
    served = _rest(server, "plain", path="infer_stream")
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/event-stream")
    assert served.text.startswith("data: ") and '"outputs"' in served.text


# ------------------------------------------------------------------------------ batching


def _concurrently(n: int, fn: Callable[[int], requests.Response]) -> list[requests.Response]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


def _bad_one_fails_alone(server: Server) -> None:
    bad = {"inputs": [{"name": "X", "shape": [1, 9], "datatype": "FP64", "data": [0.0] * 9}]}
    answers = _concurrently(8, lambda i: _rest(server, "batched", bad if i == 3 else None))
    assert answers[3].status_code == 400 and "expected 10 features" in answers[3].json()["error"]
    assert [a.status_code for i, a in enumerate(answers) if i != 3] == [200] * 7


@pins("mlserver.batching.hooks:load_batching")
@pins("mlserver.batching.hooks:_AdaptiveBatchingAttr")
def test_a_bad_request_fails_alone_in_an_adaptive_batch(servers):
    _bad_one_fails_alone(servers["workers-0"])


@pins("mlserver.parallel.model:ParallelModel.load")
@pins("mlserver.parallel.model:ParallelModel._model")
def test_a_bad_request_fails_alone_in_a_batch_with_parallel_workers(servers):
    _bad_one_fails_alone(servers["workers-1"])


@pins("mlserver.batching.adaptive:AdaptiveBatcher._predict_fn")
def test_a_batched_model_still_answers_ood_flags_per_request(servers):
    body = {
        "parameters": {"ood_flags": True},
        "inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": [9.0] * 10}],
    }
    answer = _rest(servers["workers-0"], "batched", body)
    assert answer.status_code == 200, answer.text
    assert len(json.loads(answer.json()["parameters"]["ood_flags"])[0]) == 10


# ------------------------------------------------------------------------------ parallel workers


@pins("mlserver.parallel.dispatcher:AsyncResponses.resolve")
@pins("mlserver.parallel.dispatcher:AsyncResponses._futures")
def test_an_abandoned_call_does_not_crash_the_response_loop(servers):
    server = servers["workers-1"]
    refused = _grpc_refusal(server, "slow", client_timeout=0.2)
    assert refused.status() == "StatusCode.DEADLINE_EXCEEDED"
    time.sleep(ABANDONED_MS / 1000 + 0.5)  # the worker answers the call nobody waits for any more
    assert _rest(server, "plain").status_code == 200
    assert "Response processing loop crashed" not in server.log_text()


# ------------------------------------------------------------------------------ tracing


@pins("mlserver.tracing:_TRACER_PROVIDER")
def test_runtime_spans_are_exported_without_parallel_workers(servers, receiver):
    trace_id, traceparent = _traceparent()
    assert _rest(servers["workers-0"], "plain", headers={"traceparent": traceparent}).status_code == 200
    spans = {s.name: s for s in _runtime_spans(receiver, trace_id)}
    assert spans["predict"].attributes["model"] == "plain"


@pins("mlserver.parallel.worker:Worker._settings")
def test_runtime_spans_are_exported_from_a_parallel_worker(servers, receiver):
    trace_id, traceparent = _traceparent()
    assert _rest(servers["workers-1"], "plain", headers={"traceparent": traceparent}).status_code == 200
    spans = {s.name: s for s in _runtime_spans(receiver, trace_id)}
    assert spans["predict"].attributes["model"] == "plain"


@pins("mlserver.parallel.model:ParallelModel.predict")
def test_a_workers_spans_hang_under_the_request_span(servers, receiver):
    trace_id, traceparent = _traceparent()
    assert _rest(servers["workers-1"], "plain", headers={"traceparent": traceparent}).status_code == 200
    spans = _runtime_spans(receiver, trace_id)
    by_id = {s.span_id: s for s in spans}
    predict = next(s for s in spans if s.name == "predict")
    assert predict.parent_span_id in by_id, "the runtime's span is not under the server's request span"


# ------------------------------------------------------------------------------ the drain


def _refused_connection(call: Callable[[], object]) -> bool:
    try:
        call()
    except (requests.ConnectionError, grpc.RpcError):
        return True
    return False


def _grpc_live(server: Server) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=2)


@pytest.fixture(scope="module")
def drain(servers):
    """SIGTERM to the drained server with a slow request in flight; what it answered meanwhile."""
    server = servers["drained"]
    seen: dict[str, object] = {}
    in_flight = threading.Thread(target=lambda: seen.update(slow=_rest(server, "slow", timeout=30)))
    in_flight.start()
    time.sleep(0.5)  # the slow request is being computed
    server.signal(signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.5)  # within the drain delay
    seen["ready"] = requests.get(f"{server.http_url}/v2/health/ready", timeout=5).status_code
    seen["model_ready"] = requests.get(f"{server.http_url}/v2/models/plain/ready", timeout=5).status_code
    seen["live"] = requests.get(f"{server.http_url}/v2/health/live", timeout=5).status_code
    seen["served"] = _rest(server, "plain", timeout=5).status_code
    seen["metrics"] = requests.get(server.metrics_url, timeout=5).status_code
    # Past the delay, while the slow request is still computing: the listeners are closed.
    time.sleep(max(0.0, signalled + DRAIN_DELAY_S + 0.5 - time.monotonic()))
    seen["rest_closed_in_flight"] = _refused_connection(
        lambda: requests.get(f"{server.http_url}/v2/health/live", timeout=2)
    )
    seen["grpc_closed_in_flight"] = _refused_connection(lambda: _grpc_live(server))
    seen["still_in_flight"] = in_flight.is_alive()
    in_flight.join(timeout=30)
    seen["exit"] = server.wait_exit(30)
    try:
        requests.get(f"{server.http_url}/v2/health/live", timeout=2)
        seen["closed"] = False
    except requests.ConnectionError:
        seen["closed"] = True
    return seen


@pins("mlserver.handlers.dataplane:DataPlane.ready")
def test_server_readiness_turns_false_while_draining(drain):
    assert drain["ready"] != 200 and drain["live"] == 200


@pins("mlserver.handlers.dataplane:DataPlane.model_ready")
def test_model_readiness_turns_false_while_draining(drain):
    assert drain["model_ready"] != 200


@pins("mlserver.rest.server:_NoSignalServer.capture_signals")
def test_rest_keeps_serving_during_the_drain_delay(drain):
    assert drain["served"] == 200


@pins("mlserver.metrics.server:_NoSignalServer.capture_signals")
def test_metrics_keep_serving_during_the_drain_delay(drain):
    assert drain["metrics"] == 200


@pins("mlserver.server:MLServer.stop")
@pins("uvicorn.server:Server.server_state")
@pins("uvicorn.server:ServerState.connections")  # the drain waits until none is left
def test_a_request_in_flight_at_sigterm_completes_and_the_server_exits(drain):
    assert drain["slow"].status_code == 200, drain["slow"].text
    assert drain["exit"] == 0


@pins("mlserver.server:MLServer._rest_server")
@pins("mlserver.server:MLServer._grpc_server")
@pins("mlserver.rest.server:RESTServer._server")
@pins("mlserver.grpc.server:GRPCServer._server")
@pins("uvicorn.server:Server.should_exit")
def test_the_drain_closes_the_listeners_while_a_request_is_in_flight(drain):
    assert drain["still_in_flight"], "the slow request ended before the listeners were probed"
    assert drain["rest_closed_in_flight"] and drain["grpc_closed_in_flight"]
    assert drain["closed"]


# ------------------------------------------------------------------------------ the list


def test_every_patch_point_is_pinned():
    # The registry, from a process of its own: this one must not import MLServer.
    listed = subprocess.run(
        [sys.executable, "-m", "runtime.integration", "--names"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert sorted(json.loads(listed)) == sorted(PINNED)
