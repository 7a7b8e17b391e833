"""Every numeric datatype of the contract is accepted (values representable in the type) and
computed in float64: predictions equal the in-process pipeline on the same values.

Each batch holds the type's extremes (min and max for integers, large finite values for floats)
next to ordinary small values, so a range check that is too strict would show here.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.models import DIABETES, assert_parity, default_pipeline
from harness.v2 import json_tensor, pb_outputs, pb_request, pb_tensor, rest_outputs
from runtime.core.datatypes import NUMERIC_DATATYPES
from tests.integration import support

P = default_pipeline(DIABETES)
F = P.n_features
FLOAT_EXTREMES = {"FP16": 65504.0, "FP32": 1.0e30, "FP64": 1.0e15}


def batch(datatype: str) -> np.ndarray:
    """[4, F] values of `datatype`: its low extreme, its high extreme, then small values."""
    dtype = NUMERIC_DATATYPES[datatype]
    rng = np.random.default_rng(20240601)
    small: np.ndarray = rng.integers(0, 100, size=(2, F))
    if dtype.kind == "f":
        low, high = -FLOAT_EXTREMES[datatype], FLOAT_EXTREMES[datatype]
        small = small + 0.5  # halves are exact in every float type
    else:
        info = np.iinfo(dtype)
        low, high = info.min, info.max
    x = np.empty((2, F), dtype=dtype)
    x[0, :], x[1, :] = low, high
    # alternate extremes across columns so both appear in every column and every row
    x[0, 1::2], x[1, 1::2] = high, low
    assert x[0, 0] == low and x[1, 0] == high  # no silent wrap-around in the test data itself
    return np.vstack([x, small.astype(dtype)])


def expected(x: np.ndarray) -> np.ndarray:
    return P.predict(x.astype(np.float64))


@pytest.mark.parametrize("datatype", list(NUMERIC_DATATYPES))
def test_rest_json_datatype(server, datatype):
    x = batch(datatype)
    resp = support.rest_post(server, DIABETES, {"inputs": [json_tensor("X", x, datatype)]})
    assert resp.status_code == 200, f"{datatype}: {resp.status_code} {resp.text[:500]}"
    assert_parity(rest_outputs(resp.json())["predict"], expected(x))


@pytest.mark.parametrize("datatype", list(NUMERIC_DATATYPES))
def test_grpc_raw_datatype(clients, datatype):
    """tritonclient.grpc sends raw_input_contents (little-endian bytes of the type)."""
    x = batch(datatype)
    res = clients.infer("triton-grpc", DIABETES, x, datatype=datatype)
    assert_parity(res.outputs["predict"], expected(x))


@pytest.mark.parametrize("datatype", [d for d in NUMERIC_DATATYPES if d != "FP16"])
def test_grpc_typed_contents_datatype(server, datatype):
    """Hand-built InferTensorContents (int_contents, uint64_contents, fp32_contents...)."""
    x = batch(datatype)
    tensor = pb_tensor("X", list(x.shape), datatype, x.ravel().tolist())
    req = pb_request(DIABETES, [tensor])
    outcome = support.grpc_call(server, req)
    assert outcome.ok, f"{datatype}: {outcome.code} {outcome.details[:500]}"
    assert_parity(pb_outputs(outcome.response)["predict"], expected(x))


@pytest.mark.parametrize("client", ["rest-json", "triton-grpc"])
def test_column_style_with_a_different_datatype_per_feature(clients, server, client):
    names = P.feature_names
    types = list(NUMERIC_DATATYPES)[: len(names)]
    rng = np.random.default_rng(7)
    x = rng.integers(0, 100, size=(6, F)).astype(np.float64)
    cols = [(n, x[:, j].astype(NUMERIC_DATATYPES[t]), t) for j, (n, t) in enumerate(zip(names, types))]
    if client == "rest-json":
        body = {"inputs": [json_tensor(n, a, t) for n, a, t in cols]}
        resp = support.rest_post(server, DIABETES, body)
        assert resp.status_code == 200, resp.text[:500]
        got = rest_outputs(resp.json())["predict"]
    else:
        import tritonclient.grpc as grpcclient

        triton = clients.fixture("triton_grpc")
        inputs = []
        for n, a, t in cols:
            inp = grpcclient.InferInput(n, list(a.shape), t)
            inp.set_data_from_numpy(a)
            inputs.append(inp)
        got = triton.infer(DIABETES, inputs).as_numpy("predict")
    assert_parity(got, expected(x))


@pytest.mark.parametrize("client", ["kserve-rest", "kserve-grpc", "triton-http", "triton-http-binary"])
def test_other_clients_send_integer_and_fp32(clients, client):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 100, size=(3, F)).astype(np.float64)
    for datatype in ("INT32", "FP32", "UINT8"):
        res = clients.infer(client, DIABETES, x, datatype=datatype)
        assert_parity(res.outputs["predict"], expected(x.astype(NUMERIC_DATATYPES[datatype])))
