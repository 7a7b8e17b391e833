"""Server live/ready, model ready, and model metadata over REST and gRPC."""

from __future__ import annotations

import json

import grpc
import pytest

from harness.models import BREAST_CANCER, DIABETES, Pipeline, pipeline
from harness.v2 import REQUEST_TIMEOUT_S
from runtime.core.predictor import ATOL, RTOL, compile_predictor
from tests.integration import support

# (model, version or None for the default/alias)
READY_TARGETS = [(DIABETES, None), (DIABETES, "1"), (DIABETES, "2"), (BREAST_CANCER, None), (BREAST_CANCER, "1")]
READY_IDS = [f"{m}@{v or 'default'}" for m, v in READY_TARGETS]
ABSENT = [("no-such-model", None), (DIABETES, "3")]


def _ready_path(model, version):
    if version is None:
        return f"/v2/models/{model}/ready"
    return f"/v2/models/{model}/versions/{version}/ready"


# ---- health: REST ---------------------------------------------------------------------------


def test_rest_json_health(server):
    assert support.rest_get(server, "/v2/health/live").status_code == 200
    assert support.rest_get(server, "/v2/health/ready").status_code == 200
    for model, version in READY_TARGETS:
        resp = support.rest_get(server, _ready_path(model, version))
        assert resp.status_code == 200, (model, version, resp.status_code, resp.text)
    for model, version in ABSENT:  # the ready checks can fail
        resp = support.rest_get(server, _ready_path(model, version))
        assert resp.status_code == 404, (model, version, resp.status_code, resp.text)


def test_triton_http_health(triton_http):
    assert triton_http.is_server_live()
    assert triton_http.is_server_ready()
    for model, version in READY_TARGETS:
        assert triton_http.is_model_ready(model, version or ""), (model, version)
    for model, version in ABSENT:
        assert not triton_http.is_model_ready(model, version or ""), (model, version)


def test_kserve_rest_health(kserve_clients):
    """kserve's is_server_live/ready parse a JSON body ({"live": true}) that the V2 spec does not
    require and MLServer does not send (200, empty body); the status-based model check is what
    this client can verify here, and live/ready are covered by the other REST clients."""
    checks = [["model", m] for m in (DIABETES, BREAST_CANCER, "no-such-model")]
    ans = kserve_clients.call({"op": "health", "transport": "rest", "checks": checks})
    assert ans["ok"], ans
    results = [c.get("value") for c in ans["checks"]]
    assert results == [True, True, False], ans["checks"]


# ---- health: gRPC ---------------------------------------------------------------------------


def test_triton_grpc_health(triton_grpc):
    assert triton_grpc.is_server_live()
    assert triton_grpc.is_server_ready()
    for model, version in READY_TARGETS:
        assert triton_grpc.is_model_ready(model, version or ""), (model, version)


def test_grpc_ready_fails_for_absent_models(server):
    """A negative control for the gRPC ready checks: absent models are never reported ready.
    (MLServer 1.7.1 answers UNKNOWN rather than NOT_FOUND here; the contract does not cover it.)"""
    from tritonclient.grpc import service_pb2

    stub = support.grpc_stub(server)
    for model, version in ABSENT:
        try:
            resp = stub.ModelReady(
                service_pb2.ModelReadyRequest(name=model, version=version or ""), timeout=REQUEST_TIMEOUT_S
            )
        except grpc.RpcError as err:
            assert err.code() != grpc.StatusCode.OK, (model, version, err)
            support.AUDIT.check("gRPC ModelReady", err.details())
        else:
            assert not resp.ready, (model, version)


def test_kserve_grpc_health(kserve_clients):
    checks = [["live"], ["ready"]] + [["model", m] for m in (DIABETES, BREAST_CANCER)]
    ans = kserve_clients.call({"op": "health", "transport": "grpc", "checks": checks})
    assert ans["ok"], ans
    assert [c.get("value") for c in ans["checks"]] == [True, True, True, True], ans["checks"]


# ---- metadata -------------------------------------------------------------------------------


def _expected_outputs(p: Pipeline) -> dict[str, tuple[str, list[int]]]:
    if p.is_classifier:
        assert p.manifest.classes is not None
        n = len(p.manifest.classes)
        # scikit-learn's shapes: one decision score per row for two classes, one per class beyond.
        return {
            "predict": ("INT64", [-1]),
            "predict_proba": ("FP64", [-1, n]),
            "decision_function": ("FP64", [-1] if n == 2 else [-1, n]),
        }
    return {"predict": ("FP64", [-1])}


def _check_metadata(meta: dict, model: str, version: str | None, where: str, parameters: bool = True):
    p = pipeline(model, version or "1")
    assert meta["name"] == model, where
    assert len(meta["inputs"]) == 1, f"{where}: {meta['inputs']}"
    (inp,) = meta["inputs"]
    assert inp["name"] == "features", where
    assert inp["datatype"] == "FP64", where
    assert [int(d) for d in inp["shape"]] == [-1, p.n_features], where
    if parameters:
        names = support.parse_feature_names((inp.get("parameters") or {}).get("feature_names"))
        assert names == p.feature_names, where
        _check_classes(meta.get("parameters") or {}, p, where)
        _check_prediction_path(meta.get("parameters") or {}, p, where)
    outs = {o["name"]: (o["datatype"], [int(d) for d in o["shape"]]) for o in meta["outputs"]}
    assert outs == _expected_outputs(p), where


def _check_classes(parameters: dict, p: Pipeline, where: str) -> None:
    """A classifier's labels in the order of its predict_proba columns, as a JSON string (a V2
    metadata parameter is a scalar); none for a regressor."""
    if p.is_classifier:
        # As the fitted estimator orders them: predict_proba's columns.
        assert json.loads(parameters["classes"]) == p.model.classes_.tolist(), f"{where}: {parameters}"
    else:
        assert "classes" not in parameters, f"{where}: {parameters}"


def _check_prediction_path(parameters: dict, p: Pipeline, where: str) -> None:
    """The path the server compiled, as this process compiles the same artifacts, and how it was
    checked: these shipped models are compiled, so against scikit-learn."""
    stated = json.loads(parameters["prediction_path"])
    kind = compile_predictor(p.loaded).kind
    assert kind != "sklearn" or p.name != DIABETES, f"{where}: diabetes is served compiled"
    assert stated == {"path": kind, "verified": "allclose", "against": "scikit-learn", "rtol": RTOL, "atol": ATOL}, (
        f"{where}: {parameters}"
    )


@pytest.mark.parametrize(("model", "version"), READY_TARGETS, ids=READY_IDS)
def test_rest_json_metadata(server, model, version):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
    resp = support.rest_get(server, path)
    assert resp.status_code == 200, resp.text
    _check_metadata(resp.json(), model, version, "rest-json")


@pytest.mark.parametrize(("model", "version"), READY_TARGETS, ids=READY_IDS)
def test_triton_http_metadata(triton_http, model, version):
    meta = triton_http.get_model_metadata(model, version or "")
    _check_metadata(meta, model, version, "rest-triton-http")


@pytest.mark.parametrize(("model", "version"), READY_TARGETS, ids=READY_IDS)
def test_triton_grpc_metadata(triton_grpc, model, version):
    """tritonclient's proto has no TensorMetadata.parameters: names, types and shapes only."""
    meta = triton_grpc.get_model_metadata(model, version or "", as_json=True)
    _check_metadata(meta, model, version, "triton-grpc", parameters=False)


@pytest.mark.parametrize(("model", "version"), READY_TARGETS, ids=READY_IDS)
def test_grpc_metadata_carries_feature_names(server, model, version):
    msg = support.grpc_metadata_with_parameters(server, model, version or "")
    meta = {
        "name": msg.name,
        "inputs": [
            {
                "name": t.name,
                "datatype": t.datatype,
                "shape": list(t.shape),
                "parameters": {k: v.string_param for k, v in t.parameters.items()},
            }
            for t in msg.inputs
        ],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in msg.outputs],
        "parameters": {k: v.string_param for k, v in msg.parameters.items()},
    }
    _check_metadata(meta, model, version, "grpc-parameters")


def test_metadata_of_unknown_model_is_not_found(server):
    resp = support.rest_get(server, "/v2/models/no-such-model")
    assert resp.status_code == 404, resp.text


# ---- the server's log -----------------------------------------------------------------------


def test_every_line_the_server_wrote_is_json(server):
    """The shipped logging configuration: every line so far is one JSON object, including what
    MLServer logs before applying logging_settings (runtime.integration.startup.StartupRepository).
    The alias lives in its model's folder, so MLServer has no name/folder mismatch to warn about.
    Shutdown lines: test_batching.py stops its servers and checks theirs."""
    server.log_records(strict=True)
    assert not any("different than model's folder name" in line for line in server.log_text().splitlines())
