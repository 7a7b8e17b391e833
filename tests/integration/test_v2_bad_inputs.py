"""Every bad input of the contract table, over REST (plain JSON) and gRPC (hand-built protos).

Client libraries refuse to send most of these payloads (tritonclient checks shapes and types
client-side), so REST uses `requests` and gRPC uses tritonclient's generated stubs directly.

Each case asserts the status (REST 400 unless the table says 4xx; gRPC INVALID_ARGUMENT), that
the message names the input and, where it applies, the row and column, and that a good request
on the same protocol still succeeds right after.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from harness.models import BREAST_CANCER, DIABETES, MODELS_DIR, assert_parity, default_pipeline, sample_rows
from harness.v2 import (
    good_grpc_request_works,
    good_rest_request_works,
    json_tensor,
    pb_2d_request,
    pb_outputs,
    pb_request,
    pb_tensor,
    rest_outputs,
)
from tests.integration import support

P = default_pipeline(DIABETES)
NAMES = P.feature_names  # age sex bmi bp s1 s2 s3 s4 s5 s6
F = P.n_features
X2 = sample_rows(DIABETES, 2)  # float64 [2, 10]
ROW_CAP = support.DEFAULT_MAX_ROWS
ANY4XX = "4xx"


def _rows(x) -> list[list]:
    return np.asarray(x).tolist()


def _cols(x, names=NAMES) -> list[dict]:
    return [json_tensor(n, np.asarray(x)[:, NAMES.index(n)]) for n in names]


def _with(x, row, col, value) -> list[list]:
    rows = _rows(x)
    rows[row][col] = value
    return rows


def _X(data, shape, datatype="FP64", name="X") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _big(n: int) -> np.ndarray:
    return sample_rows(DIABETES, n)


# --------------------------------------------------------------------------------------------
# REST cases: id -> (model, request body or raw text, expected status, message fragments)
# A tuple fragment means "any of these".
# --------------------------------------------------------------------------------------------

REST_CASES: dict[str, tuple[str, object, int | str, list[Any]]] = {
    "wrong-feature-count": (DIABETES, {"inputs": [_X(_rows(X2[:, :7]), [2, 7])]}, 400, ["'X'", "10", "7"]),
    "unknown-feature-name": (
        DIABETES,
        {"inputs": _cols(X2) + [json_tensor("foo", X2[:, 0])]},
        400,
        ["'foo'", "unknown"],
    ),
    "missing-feature-names": (
        DIABETES,
        {"inputs": _cols(X2, [n for n in NAMES if n not in ("bmi", "bp")])},
        400,
        ["'bmi'", "'bp'", "missing"],
    ),
    "duplicated-feature-name": (
        DIABETES,
        {"inputs": _cols(X2) + [json_tensor("bmi", X2[:, 2])]},
        400,
        ["'bmi'", ("more than once", "duplicate", "twice")],
    ),
    "shape-vs-data-length": (DIABETES, {"inputs": [_X(X2.ravel().tolist()[:19], [2, 10])]}, 400, ["'X'", "20", "19"]),
    "ragged-rows": (
        DIABETES,
        {"inputs": [_X([X2[0].tolist(), X2[1].tolist()[:9]], [2, 10])]},
        400,
        ["'X'", "row 1", "9", "10"],
    ),
    "nested-list-in-cell": (
        DIABETES,
        {"inputs": [_X(_with(X2, 0, 1, [1.0, 2.0]), [2, 10])]},
        400,
        ["'X'", "row 0", "column 1", "list"],
    ),
    "string-in-cell": (DIABETES, {"inputs": [_X(_with(X2, 0, 1, "abc"), [2, 10])]}, 400, ["'X'", "row 0", "column 1"]),
    "bytes-datatype": (DIABETES, {"inputs": [_X([["a"] * F, ["b"] * F], [2, 10], "BYTES")]}, 400, ["'X'", "BYTES"]),
    "bool-datatype": (DIABETES, {"inputs": [_X([[True] * F, [False] * F], [2, 10], "BOOL")]}, 400, ["'X'", "BOOL"]),
    "unknown-datatype-FP128": (DIABETES, {"inputs": [_X(_rows(X2), [2, 10], "FP128")]}, ANY4XX, []),
    "out-of-range-INT8": (
        DIABETES,
        {"inputs": [_X(_with(np.zeros((2, F), int), 0, 2, 300), [2, 10], "INT8")]},
        400,
        ["'X'", "row 0", "column 2", "300", "INT8"],
    ),
    "out-of-range-UINT8-negative": (
        DIABETES,
        {"inputs": [_X(_with(np.ones((2, F), int), 1, 0, -1), [2, 10], "UINT8")]},
        400,
        ["'X'", "row 1", "column 0", "-1", "UINT8"],
    ),
    "nan-literal": (
        DIABETES,
        '{"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": [[0, 0, NaN, 0, 0, 0, 0, 0, 0, 0]]}]}',
        ANY4XX,
        [],
    ),
    "infinity-literal": (
        DIABETES,
        '{"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", '
        '"data": [[0, 0, Infinity, 0, 0, 0, 0, 0, 0, 0]]}]}',
        ANY4XX,
        [],
    ),
    "json-null": (
        DIABETES,
        {"inputs": [_X(_with(X2, 0, 2, None), [2, 10])]},
        400,
        ["'X'", "row 0", "column 2", "bmi", "null"],
    ),
    "json-null-in-column": (
        DIABETES,
        {"inputs": [t if t["name"] != "bmi" else {**t, "data": [t["data"][0], None]} for t in _cols(X2)]},
        400,
        ["'bmi'", "row 1", "null"],
    ),
    "empty-batch": (DIABETES, {"inputs": [_X([], [0, 10])]}, 400, ["'X'", ("empty", "0 rows")]),
    "over-row-cap": (
        DIABETES,
        {"inputs": [json_tensor("X", _big(ROW_CAP + 1))]},
        400,
        ["'X'", str(ROW_CAP + 1), str(ROW_CAP)],
    ),
    "unknown-output-predict_proba-on-regressor": (
        DIABETES,
        {"inputs": [json_tensor("X", X2)], "outputs": [{"name": "predict_proba"}]},
        400,
        ["'predict_proba'", support.lists_offered_outputs("predict")],
    ),
    "unknown-output-foo-on-classifier": (
        BREAST_CANCER,
        {"inputs": [json_tensor("X", sample_rows(BREAST_CANCER, 2))], "outputs": [{"name": "foo"}]},
        400,
        ["'foo'", support.lists_offered_outputs("predict", "predict_proba")],
    ),
    "two-2d-tensors": (DIABETES, {"inputs": [json_tensor("a", X2), json_tensor("b", X2)]}, 400, ["'a'", "'b'"]),
    # Layouts outside the contract that the table's InputLayout/Shape rows cover.
    "three-d-tensor": (DIABETES, {"inputs": [json_tensor("X", X2.reshape(1, 2, F))]}, 400, ["'X'"]),
    "2d-and-1d-mixed": (
        DIABETES,
        {"inputs": [json_tensor("X", X2), json_tensor("age", X2[:, 0])]},
        400,
        [("'X'", "'age'")],
    ),
    "column-length-mismatch": (
        DIABETES,
        {"inputs": _cols(X2, NAMES[:-1]) + [json_tensor("s6", np.zeros(3))]},
        400,
        ["'s6'"],
    ),
    "no-inputs": (DIABETES, {"inputs": []}, ANY4XX, []),
}


def _assert_rest_status(resp, expected, case_id):
    if expected == ANY4XX:
        assert 400 <= resp.status_code < 500, f"{case_id}: expected a 4xx, got {resp.status_code}: {resp.text[:500]}"
    else:
        assert resp.status_code == expected, (
            f"{case_id}: expected {expected}, got {resp.status_code}: {resp.text[:500]}"
        )


@pytest.mark.parametrize("case_id", list(REST_CASES))
def test_rest_bad_input(server, case_id):
    model, body, status, fragments = REST_CASES[case_id]
    if isinstance(body, str):
        resp = support.rest_post(server, model, None, raw=body)
    else:
        resp = support.rest_post(server, model, body)
    _assert_rest_status(resp, status, case_id)
    if status == 400:
        payload = resp.json()
        assert isinstance(payload, dict) and isinstance(payload.get("error"), str), (
            f"{case_id}: 400 body must be {{'error': str}}, got {resp.text[:500]}"
        )
        support.assert_mentions(payload["error"], fragments, case_id)
    good_rest_request_works(server.http_url)


def test_rest_row_cap_boundary_is_accepted(server):
    """Exactly the cap is fine: the 10,001-row refusal is the cap, not a smaller limit."""
    x = _big(ROW_CAP)
    resp = support.rest_post(server, DIABETES, {"inputs": [json_tensor("X", x)]})
    assert resp.status_code == 200, resp.text[:500]
    assert_parity(rest_outputs(resp.json())["predict"], P.predict(x))


def test_row_cap_is_the_documented_default():
    """The cases above assume the shipped models keep the default cap of 10,000 rows."""
    for ms in MODELS_DIR.glob("*/*/model-settings.json"):
        extra = json.loads(ms.read_text()).get("parameters", {}).get("extra") or {}
        assert extra.get("max_rows", ROW_CAP) == ROW_CAP, ms


# --------------------------------------------------------------------------------------------
# gRPC cases: hand-built ModelInferRequest protos
# --------------------------------------------------------------------------------------------

T = pb_tensor


def _pb_cols(x, names=NAMES, override=None):
    override = override or {}
    out = []
    for n in names:
        col = override.get(n, np.asarray(x)[:, NAMES.index(n)].tolist())
        out.append(T(n, [len(col)], "FP64", col))
    return out


def _flat_with(x, row, col, value) -> list:
    return [v for r in _with(x, row, col, value) for v in r]


_FP32_NAN_ROW1_COL9 = np.array(X2, dtype=np.float32)
_FP32_NAN_ROW1_COL9[1, 9] = np.nan

GRPC_CASES: dict[str, tuple[Any, list[Any]]] = {
    "wrong-feature-count": (
        pb_request(DIABETES, [T("X", [2, 7], "FP64", X2[:, :7].ravel().tolist())]),
        ["'X'", "10", "7"],
    ),
    "unknown-feature-name": (
        pb_request(DIABETES, _pb_cols(X2) + [T("foo", [2], "FP64", X2[:, 0].tolist())]),
        ["'foo'", "unknown"],
    ),
    "missing-feature-names": (
        pb_request(DIABETES, _pb_cols(X2, [n for n in NAMES if n not in ("bmi", "bp")])),
        ["'bmi'", "'bp'", "missing"],
    ),
    "duplicated-feature-name": (
        pb_request(DIABETES, _pb_cols(X2) + [T("bmi", [2], "FP64", X2[:, 2].tolist())]),
        ["'bmi'", ("more than once", "duplicate", "twice")],
    ),
    "shape-vs-contents-length": (
        pb_request(DIABETES, [T("X", [2, 10], "FP64", X2.ravel().tolist()[:19])]),
        ["'X'", "20", "19"],
    ),
    "shape-vs-raw-bytes-length": (
        pb_request(DIABETES, [T("X", [2, 10], "FP64")], raw=[np.asarray(X2.ravel()[:19], "<f8").tobytes()]),
        ["'X'", ("19", "152")],
    ),
    "raw-bytes-not-a-whole-number-of-values": (
        pb_request(DIABETES, [T("X", [2, 10], "FP64")], raw=[np.asarray(X2.ravel(), "<f8").tobytes()[:-1]]),
        ["'X'", "159"],
    ),
    "bytes-datatype": (pb_request(DIABETES, [T("X", [2, 10], "BYTES", [b"a"] * 2 * F)]), ["'X'", "BYTES"]),
    "bool-datatype": (pb_request(DIABETES, [T("X", [2, 10], "BOOL", [True] * 2 * F)]), ["'X'", "BOOL"]),
    "unknown-datatype-FP128": (
        pb_request(DIABETES, [T("X", [2, 10], "FP128", X2.ravel().tolist(), field_name="fp64_contents")]),
        ["FP128"],
    ),
    "out-of-range-INT8": (
        pb_request(DIABETES, [T("X", [2, 10], "INT8", _flat_with(np.zeros((2, F), int), 0, 2, 300))]),
        ["'X'", "row 0", "column 2", "300", "INT8"],
    ),
    "out-of-range-UINT8": (
        pb_request(DIABETES, [T("X", [2, 10], "UINT8", _flat_with(np.ones((2, F), int), 1, 0, 256))]),
        ["'X'", "row 1", "column 0", "256", "UINT8"],
    ),
    "nan-in-contents": (
        pb_request(DIABETES, [T("X", [2, 10], "FP64", _flat_with(X2, 0, 2, float("nan")))]),
        ["'X'", "row 0", "column 2", "bmi", "nan"],
    ),
    "inf-in-contents": (
        pb_request(DIABETES, [T("X", [2, 10], "FP64", _flat_with(X2, 1, 3, float("inf")))]),
        ["'X'", "row 1", "column 3", "bp", "inf"],
    ),
    "nan-in-raw-fp32": (
        pb_request(DIABETES, [T("X", [2, 10], "FP32")], raw=[_FP32_NAN_ROW1_COL9.astype("<f4").tobytes()]),
        ["'X'", "row 1", "column 9", "s6", "nan"],
    ),
    "nan-in-column": (
        pb_request(DIABETES, _pb_cols(X2, override={"bmi": [X2[0, 2], float("nan")]})),
        ["'bmi'", "row 1", "nan"],
    ),
    "empty-batch": (pb_request(DIABETES, [T("X", [0, 10], "FP64", [])]), ["'X'", ("empty", "0 rows")]),
    "over-row-cap": (pb_2d_request(DIABETES, _big(ROW_CAP + 1)), ["'X'", str(ROW_CAP + 1), str(ROW_CAP)]),
    "unknown-output-predict_proba-on-regressor": (
        pb_2d_request(DIABETES, X2, outputs=["predict_proba"]),
        ["'predict_proba'", support.lists_offered_outputs("predict")],
    ),
    "unknown-output-foo-on-classifier": (
        pb_2d_request(BREAST_CANCER, sample_rows(BREAST_CANCER, 2), outputs=["foo"]),
        ["'foo'", support.lists_offered_outputs("predict", "predict_proba")],
    ),
    "two-2d-tensors": (
        pb_request(
            DIABETES, [T("a", [2, 10], "FP64", X2.ravel().tolist()), T("b", [2, 10], "FP64", X2.ravel().tolist())]
        ),
        ["'a'", "'b'"],
    ),
    "three-d-tensor": (pb_request(DIABETES, [T("X", [1, 2, 10], "FP64", X2.ravel().tolist())]), ["'X'"]),
    "2d-and-1d-mixed": (
        pb_request(DIABETES, [T("X", [2, 10], "FP64", X2.ravel().tolist()), T("age", [2], "FP64", X2[:, 0].tolist())]),
        [("'X'", "'age'")],
    ),
    "column-length-mismatch": (
        pb_request(DIABETES, _pb_cols(X2, NAMES[:-1]) + [T("s6", [3], "FP64", [0.0] * 3)]),
        ["'s6'"],
    ),
    "no-inputs": (pb_request(DIABETES, []), []),
}


@pytest.mark.parametrize("case_id", list(GRPC_CASES))
def test_grpc_bad_input(server, case_id):
    request, fragments = GRPC_CASES[case_id]
    outcome = support.grpc_call(server, request)
    support.assert_grpc_refused(outcome, fragments, case_id)
    good_grpc_request_works(support.grpc_stub(server))


def test_grpc_row_cap_boundary_is_accepted(server):
    x = _big(ROW_CAP)
    outcome = support.grpc_call(server, pb_2d_request(DIABETES, x))
    assert outcome.ok, f"{outcome.code}: {outcome.details[:500]}"
    assert_parity(pb_outputs(outcome.response)["predict"], P.predict(x))


def test_every_table_case_is_covered_on_both_protocols():
    """Guards the case tables themselves: no row of the contract table silently dropped."""
    table_rows = {
        "wrong-feature-count",
        "unknown-feature-name",
        "missing-feature-names",
        "duplicated-feature-name",
        "bytes-datatype",
        "bool-datatype",
        "unknown-datatype-FP128",
        "out-of-range-INT8",
        "empty-batch",
        "over-row-cap",
        "unknown-output-predict_proba-on-regressor",
        "two-2d-tensors",
    }
    assert table_rows <= set(REST_CASES) and table_rows <= set(GRPC_CASES)
    # shape vs data length, NaN/Inf: both protocols, under protocol-specific names
    assert {
        "shape-vs-data-length",
        "nan-literal",
        "infinity-literal",
        "json-null",
        "ragged-rows",
        "nested-list-in-cell",
    } <= set(REST_CASES)
    assert {"shape-vs-contents-length", "nan-in-contents", "inf-in-contents"} <= set(GRPC_CASES)
    # ragged rows, nested lists and JSON null cannot be expressed in gRPC's flat contents.
