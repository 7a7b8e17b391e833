"""Minimal requests the fuzzer found that break the contract, kept as regression tests.

Each is `xfail(strict=True)` with the reason: it fails today and the fix belongs to the lead (the
runtime or its MLServer integration). Once fixed, the test XPASSes and so fails: remove its
marker and, for server errors, the matching entry of fuzz_support.KNOWN_ISSUES (the fuzzer
tolerates exactly those signatures meanwhile and counts them in its summary).
"""

from __future__ import annotations

import json

import grpc
import pytest
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

ZEROS = [0.0] * 10
SHORT_DEADLINE_S = 2.0  # these requests answer in milliseconds when they answer at all


def _post(server, body: str, path: str = "/v2/models/diabetes/infer") -> requests.Response:
    with requests.Session() as s:  # a fresh connection: some of these make the server drop it
        return s.post(server.http_url + path, data=body.encode(),
                      headers={"Content-Type": "application/json"}, timeout=10)


def _body(data, datatype="FP64", **extra) -> str:
    return json.dumps({**extra, "inputs": [{"name": "X", "shape": [1, 10], "datatype": datatype,
                                            "data": data}]})


def _grpc(server, request, timeout=SHORT_DEADLINE_S):
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            return stub.ModelInfer(request, timeout=timeout), None
        except grpc.RpcError as err:
            return None, err


def _pb_zeros(model="diabetes", rid=""):
    req = service_pb2.ModelInferRequest(model_name=model, id=rid)
    t = req.inputs.add(name="X", datatype="FP64", shape=[1, 10])
    t.contents.fp64_contents.extend(ZEROS)
    return req


def _assert_client_error_or_ok_rest(resp):
    assert resp.status_code < 500, f"{resp.status_code} {resp.text[:300]}"


# ---- server errors and dropped/hung calls (also tolerated by the fuzzer as KNOWN_ISSUES) -----

ID_REASON = ("MLServer's CloudEvents middleware copies the request id into the Ce-Id/Ce-Requestid "
             "response headers (REST) / trailing metadata (gRPC) unchecked; the runtime should "
             "refuse such ids with 400/INVALID_ARGUMENT (or the id must not reach the headers)")


@pytest.mark.xfail(strict=True, reason="500 Internal Server Error: " + ID_REASON)
def test_rest_request_id_beyond_latin1_is_not_a_server_error(server):
    """POST /v2/models/diabetes/infer {"id":"\\u0100","inputs":[{"name":"X","shape":[1,10],
    "datatype":"FP64","data":[0,0,0,0,0,0,0,0,0,0]}]} -> 500 'Internal Server Error'."""
    _assert_client_error_or_ok_rest(_post(server, _body(ZEROS, id="\u0100")))


@pytest.mark.xfail(strict=True, reason="connection closed without an answer: " + ID_REASON)
@pytest.mark.parametrize("rid", ["\n", "\x1f", "\x7f"], ids=["newline", "unit-sep", "del"])
def test_rest_request_id_with_control_char_gets_an_answer(server, rid):
    """POST {"id":"\\n","inputs":[...valid...]} -> the server drops the connection (uvicorn:
    RuntimeError 'Invalid HTTP header value.')."""
    try:
        resp = _post(server, _body(ZEROS, id=rid))
    except requests.ConnectionError as exc:
        pytest.fail(f"no answer: {exc}")
    _assert_client_error_or_ok_rest(resp)


@pytest.mark.xfail(strict=True, reason="the call never completes (client DEADLINE_EXCEEDED; server "
                                       "log: 'validate_metadata: INTERNAL:Illegal header value'): "
                                       + ID_REASON)
@pytest.mark.parametrize("rid", ["\u00e9", "a\tb"], ids=["e-acute", "tab"])  # each waits the deadline
def test_grpc_request_id_outside_printable_ascii_gets_an_answer(server, rid):
    """ModelInferRequest{model_name:"diabetes", id:"é", inputs:[X FP64 [1,10] zeros]} -> no
    answer at all until the client's deadline."""
    _, err = _grpc(server, _pb_zeros(rid=rid))
    assert err is None or err.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        f"{err.code().name}: {err.details()}")


PARAM_REASON = ("MLServer's gRPC converter builds pydantic Parameters from the InferParameter maps; "
                "content_type must be a string and headers a dict, and the ValidationError escapes "
                "as INTERNAL with pydantic's text (REST answers the same request with 422)")


@pytest.mark.xfail(strict=True, reason="INTERNAL: " + PARAM_REASON)
@pytest.mark.parametrize("level,key,kind,value", [
    ("request", "content_type", "int64_param", 1),
    ("request", "content_type", "bool_param", False),
    ("request", "headers", "string_param", "x"),
    ("input", "content_type", "bool_param", True),
])
def test_grpc_mistyped_mlserver_parameter_is_a_client_error(server, level, key, kind, value):
    """e.g. ModelInferRequest{model_name:"diabetes", parameters:{"content_type":{int64_param:1}},
    inputs:[X FP64 [1,10] zeros]} -> INTERNAL '1 validation error for Parameters ...'."""
    req = _pb_zeros()
    params = req.parameters if level == "request" else req.inputs[0].parameters
    setattr(params[key], kind, value)
    _, err = _grpc(server, req)
    assert err is None or err.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        f"{err.code().name}: {err.details()}")


# ---- contract deviations without a server error (the fuzzer treats these cases as 'any') -----


@pytest.mark.xfail(strict=True, reason="JSON booleans pass the fast path (np.asarray makes them "
                                       "0/1) although the contract refuses non-numbers and "
                                       "contract._check_element names 'a boolean'")
def test_rest_boolean_in_a_numeric_tensor_is_refused(server):
    """{"inputs":[{"name":"X","shape":[1,10],"datatype":"FP64","data":[[1,2,3,4,5,6,7,8,9,true]]}]}
    -> 200 (true read as 1)."""
    resp = _post(server, _body([[1, 2, 3, 4, 5, 6, 7, 8, 9, True]]))
    assert resp.status_code == 400, f"{resp.status_code} {resp.text[:300]}"


@pytest.mark.xfail(strict=True, reason="the 64-bit range check compares in float64, where 2**63 "
                                       "and 2**64 round to the type's max: out-of-range accepted")
@pytest.mark.parametrize("datatype,value", [("INT64", 2**63), ("INT64", -(2**63) - 1),
                                            ("UINT64", 2**64)])
def test_rest_64bit_integer_just_out_of_range_is_refused(server, datatype, value):
    """{"inputs":[{"name":"X","shape":[1,10],"datatype":"INT64","data":[9223372036854775808,0,...]}]}
    -> 200."""
    resp = _post(server, _body([value] + [0] * 9, datatype=datatype))
    assert resp.status_code == 400, f"{resp.status_code} {resp.text[:300]}"


NONFINITE_REASON = ("finite inputs whose prediction overflows get 200/OK with a non-finite output "
                    "(REST writes null into FP64 data, gRPC -inf/NaN); the contract has no row for "
                    "it, so the lead decides: e.g. 400 'prediction is not finite' from the runtime")


@pytest.mark.xfail(strict=True, reason=NONFINITE_REASON)
def test_rest_overflowing_prediction_is_not_a_null(server):
    """{"inputs":[{"name":"X","shape":[1,10],"datatype":"FP64","data":[1e308,-1e308,1e308,...]}]}
    -> 200 {"outputs":[{"name":"predict",...,"data":[null]}]}."""
    resp = _post(server, _body([1e308, -1e308] + [1e308] * 8))
    assert resp.status_code < 500, resp.text[:300]
    if resp.status_code == 200:
        data = resp.json()["outputs"][0]["data"]
        assert all(isinstance(v, (int, float)) for v in data), data


@pytest.mark.xfail(strict=True, reason=NONFINITE_REASON)
def test_grpc_overflowing_probabilities_are_not_nan(server):
    """ModelInferRequest{model_name:"breast-cancer", inputs:[X FP64 [1,30] all 1e308],
    outputs:[predict_proba]} -> OK with predict_proba [NaN, NaN]."""
    import math

    req = service_pb2.ModelInferRequest(model_name="breast-cancer")
    t = req.inputs.add(name="X", datatype="FP64", shape=[1, 30])
    t.contents.fp64_contents.extend([1e308] * 30)
    req.outputs.add(name="predict_proba")
    resp, err = _grpc(server, req, timeout=10)
    if err is not None:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        return
    values = list(resp.outputs[0].contents.fp64_contents)
    assert all(math.isfinite(v) for v in values), values
