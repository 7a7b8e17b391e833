"""Issue 26's acceptance matrix: the pipelines users really have (harness.pipelines.MATRIX), each
packaged with write_model_dir, all served by one real `mlserver start`, answered over REST (plain JSON,
one tensor per column, [N] or PandasCodec's [N, 1]; numeric-only models also one [N, F] tensor), gRPC
(typed contents and tritonclient's raw contents) and /predict records exactly as the fitted pipeline
answers 200 rows with gaps and unseen categories where its schema allows them (a string gap only where
JSON null can carry it: gRPC's BYTES cannot), also with its requests merged by adaptive batching; the
metadata describing each column; every bad input of the per-column contract refused on both protocols
with a message naming input, row and value (the input of a per-column tensor is its column); a
FunctionTransformer of arbitrary code refused by the packager in one line.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import requests

from harness.models import REPO_ROOT, assert_parity
from harness.pipelines import CASES, MATRIX, STRINGS, UNSEEN, Case, refused_function_pipeline
from harness.repository import make_repository
from harness.server import Server
from harness.v2 import REQUEST_TIMEOUT_S, pb_outputs, pb_request, pb_tensor
from pipeline_tools.package import write_model_dir
from tests.integration import support

ROWS = 200
VERSION = "1"
BATCHED = CASES["nested"]
BATCHED_NAME = "nested-batched"
# The cases whose every step compiles into numpy (runtime.core.columns), bit-identical to scikit-learn.
COMPILED = frozenset({"imputed-logistic", "columns-gb", "ordinal-forest", "nested", "log1p"})
BATCHING = {"max_batch_size": 16, "max_batch_time": 0.05}
BATCH_REQUESTS = 12


def _launch(request: pytest.FixtureRequest) -> Server:
    root = make_repository(request.getfixturevalue("tmp_path_factory").mktemp("matrix") / "repo")
    for case in MATRIX:
        write_model_dir(case.fitted(), case.name, VERSION, root / "models", reference=case.training())
    # The model with string columns and gaps again, its requests merged by MLServer's adaptive batcher.
    batched = write_model_dir(BATCHED.fitted(), BATCHED_NAME, VERSION, root / "models")
    settings = json.loads((batched / "model-settings.json").read_text())
    (batched / "model-settings.json").write_text(json.dumps({**settings, **BATCHING}))
    models = [(c.name, VERSION) for c in MATRIX] + [(BATCHED_NAME, VERSION)]
    return Server.launch(root / "server.log", root=root, models=models)


SERVERS = {"matrix": _launch}


@pytest.fixture(scope="module")
def matrix(fleet) -> Server:
    return fleet["matrix"]


@pytest.fixture(scope="module")
def triton(matrix):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=matrix.grpc_url)
    yield client
    client.close()


# ------------------------------------------------------------------------------ values


def _is_gap(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def _json_values(values: pd.Series) -> list[Any]:
    """A column as JSON values: null for a gap."""
    return [None if _is_gap(v) else v for v in values.tolist()]


def _text(values: Any) -> np.ndarray:
    """Labels as str, however the transport delivered them (bytes over gRPC)."""
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()])


def _assert_same(case: Case, answers: dict[str, Any], rows: pd.DataFrame, where: str) -> None:
    """Each output the case offers, as the fitted pipeline computes it on the same rows."""
    fitted = case.fitted()
    for output in case.outputs:
        expected = np.asarray(getattr(fitted, output)(rows))
        got = np.asarray(answers[output])
        if expected.dtype.kind in "OUS":
            np.testing.assert_array_equal(_text(got), expected.astype(str), err_msg=f"{where} {output}")
        else:
            assert_parity(got.reshape(expected.shape), expected, output)


# ------------------------------------------------------------------------------ request forms
# Each sends the case's rows one way and returns its answers by output name.


def _column_tensors(rows: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "name": column,
            "shape": [len(rows)],
            "datatype": "BYTES" if column in STRINGS else "FP64",
            "data": _json_values(rows[column]),
        }
        for column in rows.columns
    ]


def _rest(server: Server, case: Case, inputs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body = {"inputs": inputs, "outputs": [{"name": o} for o in case.outputs], **extra}
    resp = support.rest_post(server, case.name, body)
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:500]}"
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in resp.json()["outputs"]}


def rest_columns(server: Server, case: Case, rows: pd.DataFrame) -> dict[str, Any]:
    return _rest(server, case, _column_tensors(rows))


def rest_pandas_columns(server: Server, case: Case, rows: pd.DataFrame) -> dict[str, Any]:
    """As mlserver-sklearn users send a DataFrame (PandasCodec): one [N, 1] tensor per column."""
    inputs = [{**t, "shape": [len(rows), 1], "data": [[v] for v in t["data"]]} for t in _column_tensors(rows)]
    return _rest(server, case, inputs, parameters={"content_type": "pd"})


def rest_matrix(server: Server, case: Case, rows: pd.DataFrame) -> dict[str, Any]:
    data = [[None if _is_gap(v) else v for v in row] for row in rows.to_numpy().tolist()]
    return _rest(server, case, [{"name": "X", "shape": list(rows.shape), "datatype": "FP64", "data": data}])


def _typed(column: str, values: pd.Series, shape: tuple[int, ...] = ()) -> Any:
    """One column as a typed tensor, [N] unless `shape` (PandasCodec's [N, 1])."""
    dims = list(shape or (len(values),))
    if column in STRINGS:
        return pb_tensor(column, dims, "BYTES", [str(v).encode() for v in values])
    return pb_tensor(column, dims, "FP64", values.astype(np.float64).tolist())


def _grpc(server: Server, case: Case, inputs: list[Any]) -> dict[str, Any]:
    outcome = support.grpc_call(server, pb_request(case.name, inputs, outputs=case.outputs))
    assert outcome.ok, f"{outcome.code}: {outcome.details[:500]}"
    return pb_outputs(outcome.response)


def grpc_typed_columns(server: Server, case: Case, rows: pd.DataFrame) -> dict[str, Any]:
    return _grpc(server, case, [_typed(c, rows[c]) for c in rows.columns])


def grpc_pandas_columns(server: Server, case: Case, rows: pd.DataFrame) -> dict[str, Any]:
    return _grpc(server, case, [_typed(c, rows[c], (len(rows), 1)) for c in rows.columns])


def grpc_typed_matrix(server: Server, case: Case, rows: pd.DataFrame) -> dict[str, Any]:
    x = rows.to_numpy(dtype=np.float64)
    return _grpc(server, case, [pb_tensor("X", list(x.shape), "FP64", x.ravel().tolist())])


def grpc_raw_columns(client: Any, case: Case, rows: pd.DataFrame) -> dict[str, Any]:
    """tritonclient.grpc's own InferInput: raw_input_contents (BYTES length-prefixed)."""
    import tritonclient.grpc as grpcclient

    inputs = []
    for column in rows.columns:
        if column in STRINGS:
            values = np.asarray([str(v).encode() for v in rows[column]], dtype=object)
            tensor = grpcclient.InferInput(column, [len(rows)], "BYTES")
        else:
            values = rows[column].to_numpy(dtype=np.float64)
            tensor = grpcclient.InferInput(column, [len(rows)], "FP64")
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    outputs = [grpcclient.InferRequestedOutput(o) for o in case.outputs]
    result = client.infer(case.name, inputs, outputs=outputs, client_timeout=REQUEST_TIMEOUT_S)
    return {o: result.as_numpy(o) for o in case.outputs}


def predict_records(server: Server, case: Case, rows: pd.DataFrame) -> dict[str, Any]:
    records = [{c: None if _is_gap(v) else v for c, v in record.items()} for record in rows.to_dict("records")]
    resp = requests.post(f"{server.http_url}/predict/{case.name}", json={"instances": records}, timeout=30)
    support.AUDIT.check(f"/predict/{case.name}", resp.content)
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:500]}"
    doc = resp.json()
    classes = case.fitted().classes_.tolist() if case.classifier else None
    assert doc.get("classes") == classes, doc.get("classes")
    answers = {"predict": doc["predictions"]}
    if case.classifier:
        answers["predict_proba"] = doc["probabilities"]
    return answers


# form -> (sender, whether it reaches the server over gRPC: no gap in a BYTES column, whether it
# needs every column numeric)
FORMS: dict[str, tuple[Callable[..., dict[str, Any]], bool, bool]] = {
    "rest-columns": (rest_columns, False, False),
    "rest-pandas-columns": (rest_pandas_columns, False, False),
    "rest-matrix": (rest_matrix, False, True),
    "grpc-typed-columns": (grpc_typed_columns, True, False),
    "grpc-pandas-columns": (grpc_pandas_columns, True, False),
    "grpc-typed-matrix": (grpc_typed_matrix, True, True),
    "grpc-raw-columns": (grpc_raw_columns, True, False),
    "predict-records": (predict_records, False, False),
}

SERVED = [
    pytest.param(case.name, form, id=f"{case.name}-{form}")
    for case in MATRIX
    for form, (_, _, numeric) in FORMS.items()
    if case.numeric_only or not numeric
]


@pytest.mark.parametrize(("name", "form"), SERVED)
def test_answers_equal_the_pipeline(matrix, triton, name, form):
    case = CASES[name]
    send, over_grpc, _ = FORMS[form]
    rows = case.rows(ROWS, string_gaps=not over_grpc)
    answers = send(triton if form == "grpc-raw-columns" else matrix, case, rows)
    _assert_same(case, answers, rows, f"{name} over {form}")


def test_rows_hold_what_the_schemas_allow():
    """The matrix really sends gaps and unseen categories (a table edit cannot quietly drop them)."""
    gaps = {c.name for c in MATRIX if c.rows(ROWS).isna().any().any()}
    assert gaps == {c.name for c in MATRIX if c.missing}
    assert {"columns-gb", "target-hgb", "nested"} <= {c.name for c in MATRIX if c.unseen}
    for case in MATRIX:
        rows = case.rows(ROWS)
        for column in case.unseen:
            assert (rows[column] == UNSEEN[column]).any(), (case.name, column)


@pytest.mark.parametrize("name", [c.name for c in MATRIX])
def test_metadata_describes_each_column(matrix, name):
    case = CASES[name]
    resp = support.rest_get(matrix, f"/v2/models/{name}")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    if case.numeric_only:  # one [N, F] tensor (per-column tensors are taken too), its columns named
        (matrix_input,) = doc["inputs"]
        assert (matrix_input["datatype"], matrix_input["shape"]) == ("FP64", [-1, len(case.columns)]), doc
        parameters = matrix_input["parameters"]
        assert support.parse_feature_names(parameters["feature_names"]) == list(case.columns)
        gaps = parameters.get("may_be_missing")
        assert (support.parse_feature_names(gaps) if gaps else []) == list(case.missing), parameters
    else:
        inputs = {i["name"]: (i["datatype"], i["parameters"]["may_be_missing"]) for i in doc["inputs"]}
        assert inputs == {c: ("BYTES" if c in STRINGS else "FP64", c in case.missing) for c in case.columns}, doc
    parameters = doc.get("parameters") or {}
    # Compiled or handed to scikit-learn, every matrix model was checked at load against an original:
    # bit for bit where its preprocessing is compiled, else allclose.
    path = json.loads(parameters["prediction_path"])
    assert (path["path"] == "compiled-pipeline") == (case.name in COMPILED), path
    assert path["verified"] == ("bit-identical" if case.name in COMPILED else "allclose"), path
    if case.classifier:
        classes = parameters.get("classes")
        classes = classes if isinstance(classes, list) else support.parse_feature_names(classes)
        assert classes == case.fitted().classes_.tolist(), parameters


def test_the_schema_says_which_columns_may_be_missing(matrix):
    """Each model's manifest lets exactly the case's columns be missing: a schema stricter than the
    pipeline would refuse what the matrix sends; a looser one would let a gap reach a step that fails."""
    from harness.repository import read_manifest_json

    for case in MATRIX:
        manifest = read_manifest_json(matrix.root / "models" / case.name / VERSION)
        may = {c["name"] for c in manifest["inputs"] if c["missing"]}
        assert may == set(case.missing), (case.name, may)
        refused = {c["name"] for c in manifest["inputs"] if c.get("unseen") == "refused"}
        assert refused == set(case.refused), (case.name, refused)


def test_requests_merged_by_adaptive_batching_answer_as_the_pipeline(matrix):
    """String columns with gaps, sent side by side in both column layouts, each answered alone."""
    case = replace(BATCHED, name=BATCHED_NAME)
    sends = [rest_columns if i % 2 else rest_pandas_columns for i in range(BATCH_REQUESTS)]
    batches = [case.rows(5, seed=100 + i) for i in range(BATCH_REQUESTS)]
    with ThreadPoolExecutor(BATCH_REQUESTS) as pool:
        answers = list(pool.map(lambda sent: sent[0](matrix, case, sent[1]), zip(sends, batches, strict=True)))
    for rows, answer in zip(batches, answers, strict=True):
        _assert_same(case, answer, rows, "batched")


# ------------------------------------------------------------------------------ bad inputs
# On the ordinal-forest model: age, tenure numeric, city and plan categorical (an unseen value
# refused), none may be missing.

BAD = CASES["ordinal-forest"]
GOOD = BAD.rows(3)
ALLOWED = ["'berlin'", "'london'", "'madrid'"]  # the first categories of 'city', as the refusal lists them


def _bad_rest(override: dict[str, dict[str, Any] | None], extra: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """GOOD's columns, one replaced (or dropped with None), plus `extra` tensors."""
    inputs = []
    for tensor in _column_tensors(GOOD):
        changed = override.get(tensor["name"], {})
        if changed is not None:
            inputs.append({**tensor, **changed})
    return {"inputs": inputs + list(extra)}


def _with(column: str, row: int, value: Any) -> dict[str, Any]:
    data = _json_values(GOOD[column])
    data[row] = value
    return {"data": data}


REST_BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "fp64-for-string-column": (
        _bad_rest({"city": {"datatype": "FP64", "data": [1.0, 2.0, 3.0]}}),
        ["'city'", "FP64", "BYTES"],
    ),
    "bytes-for-numeric-column": (
        _bad_rest({"age": {"datatype": "BYTES", "data": ["a", "b", "c"]}}),
        ["'age'", "BYTES"],
    ),
    "unknown-column": (
        _bad_rest({}, ({"name": "colour", "shape": [3], "datatype": "BYTES", "data": ["red"] * 3},)),
        ["'colour'", "unknown"],
    ),
    "missing-column": (_bad_rest({"plan": None}), ["'plan'", "missing"]),
    "string-in-numeric-column": (_bad_rest({"age": _with("age", 1, "forty")}), ["'age'", "row 1", "'forty'"]),
    "number-in-string-column": (_bad_rest({"city": _with("city", 2, 7)}), ["'city'", "row 2", "7"]),
    "null-in-numeric-column": (_bad_rest({"tenure": _with("tenure", 1, None)}), ["'tenure'", "row 1", "null"]),
    "null-in-string-column": (_bad_rest({"plan": _with("plan", 0, None)}), ["'plan'", "row 0", "null"]),
    "unseen-category": (
        _bad_rest({"city": _with("city", 2, "tokyo")}),
        ["'city'", "row 2", "'tokyo'", *ALLOWED],
    ),
    "one-matrix-for-string-columns": (
        {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
        ["'city'", "'plan'", "BYTES"],
    ),
}


@pytest.mark.parametrize("case_id", list(REST_BAD))
def test_rest_refuses(matrix, case_id):
    body, fragments = REST_BAD[case_id]
    resp = support.rest_post(matrix, BAD.name, body)
    assert resp.status_code == 400, f"{case_id}: {resp.status_code} {resp.text[:500]}"
    error = resp.json().get("error")
    assert isinstance(error, str), resp.text
    support.assert_mentions(error, fragments, case_id)


def _bad_grpc(override: dict[str, Any], extra: tuple[Any, ...] = (), raw: dict[str, bytes] | None = None) -> Any:
    """GOOD's columns as typed tensors, one replaced (or dropped with None); a column in `raw` goes
    as raw_input_contents instead (then every column does: V2 does not mix the two)."""
    tensors = []
    for column in GOOD.columns:
        tensor = override.get(column, _typed(column, GOOD[column]))
        if tensor is not None:
            tensors.append(tensor)
    tensors += list(extra)
    if raw is None:
        return pb_request(BAD.name, tensors)
    buffers = []
    for tensor in tensors:
        buffers.append(raw.get(tensor.name) or _raw(tensor))
        tensor.ClearField("contents")
    return pb_request(BAD.name, tensors, raw=buffers)


def _raw(tensor: Any) -> bytes:
    if tensor.datatype == "BYTES":
        return _raw_strings(list(tensor.contents.bytes_contents))
    return np.asarray(tensor.contents.fp64_contents, dtype="<f8").tobytes()


def _raw_strings(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _strings(column: str, row: int, value: bytes) -> Any:
    values = [str(v).encode() for v in GOOD[column]]
    values[row] = value
    return pb_tensor(column, [len(values)], "BYTES", values)


def _numbers(column: str, row: int, value: float) -> Any:
    values = GOOD[column].astype(np.float64).tolist()
    values[row] = value
    return pb_tensor(column, [len(values)], "FP64", values)


NOT_UTF8 = b"par\xffis"

GRPC_BAD: dict[str, tuple[Any, list[str]]] = {
    "fp64-for-string-column": (
        _bad_grpc({"city": pb_tensor("city", [3], "FP64", [1.0, 2.0, 3.0])}),
        ["'city'", "FP64", "BYTES"],
    ),
    "bytes-for-numeric-column": (
        _bad_grpc({"age": pb_tensor("age", [3], "BYTES", [b"a", b"b", b"c"])}),
        ["'age'", "BYTES"],
    ),
    "string-in-numeric-column": (
        _bad_grpc({"age": pb_tensor("age", [3], "FP64", [b"30", b"forty", b"50"], field_name="bytes_contents")}),
        ["'age'", "row 0", "b'30'"],
    ),
    "unknown-column": (
        _bad_grpc({}, (pb_tensor("colour", [3], "BYTES", [b"red"] * 3),)),
        ["'colour'", "unknown"],
    ),
    "missing-column": (_bad_grpc({"plan": None}), ["'plan'", "missing"]),
    "nan-in-numeric-column": (_bad_grpc({"tenure": _numbers("tenure", 1, float("nan"))}), ["'tenure'", "row 1", "nan"]),
    "nan-in-raw-numeric-column": (
        _bad_grpc({"age": _numbers("age", 2, float("nan"))}, raw={}),
        ["'age'", "row 2", "nan"],
    ),
    "unseen-category": (
        _bad_grpc({"city": _strings("city", 0, b"tokyo")}),
        ["'city'", "row 0", "'tokyo'", *ALLOWED],
    ),
    "unseen-category-raw": (
        _bad_grpc({"plan": _strings("plan", 1, b"platinum")}, raw={}),
        ["'plan'", "row 1", "'platinum'", "'basic'"],
    ),
    "not-utf8": (_bad_grpc({"city": _strings("city", 1, NOT_UTF8)}), ["'city'", "row 1", "UTF-8", r"\xff"]),
    "not-utf8-raw": (
        _bad_grpc({"city": _strings("city", 2, NOT_UTF8)}, raw={}),
        ["'city'", "row 2", "UTF-8", r"\xff"],
    ),
}


@pytest.mark.parametrize("case_id", list(GRPC_BAD))
def test_grpc_refuses(matrix, case_id):
    request, fragments = GRPC_BAD[case_id]
    outcome = support.grpc_call(matrix, request)
    support.assert_grpc_refused(outcome, fragments, case_id)


PREDICT_BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "missing-column": ({"age": 30, "tenure": 3, "city": "paris"}, ["'plan'", "row 0", "missing"]),
    "unknown-column": (
        {"age": 30, "tenure": 3, "city": "paris", "plan": "pro", "colour": "red"},
        ["'colour'", "row 0", "unknown"],
    ),
    "unseen-category": ({"age": 30, "tenure": 3, "city": "tokyo", "plan": "pro"}, ["'city'", "row 0", "'tokyo'"]),
    "null-where-not-missing": ({"age": None, "tenure": 3, "city": "rome", "plan": "pro"}, ["'age'", "row 0", "null"]),
    "number-in-string-column": ({"age": 30, "tenure": 3, "city": 5, "plan": "pro"}, ["'city'", "row 0", "5"]),
}


@pytest.mark.parametrize("case_id", list(PREDICT_BAD))
def test_predict_records_refuse(matrix, case_id):
    record, fragments = PREDICT_BAD[case_id]
    resp = requests.post(f"{matrix.http_url}/predict/{BAD.name}", json={"instances": [record]}, timeout=30)
    support.AUDIT.check(f"/predict/{BAD.name}", resp.content)
    assert resp.status_code == 400, f"{case_id}: {resp.status_code} {resp.text[:500]}"
    support.assert_mentions(resp.json()["error"], fragments, case_id)


def test_refusals_leave_the_model_serving(matrix, triton):
    """After every refusal above, the same model still answers on both protocols."""
    _assert_same(BAD, rest_columns(matrix, BAD, GOOD), GOOD, "rest after refusals")
    _assert_same(BAD, grpc_raw_columns(triton, BAD, GOOD), GOOD, "grpc after refusals")


# ------------------------------------------------------------------------------ refused at packaging


def test_arbitrary_function_is_refused_in_one_line(tmp_path):
    """FunctionTransformer(lambda x: x): exit code 2, one line naming the step and why, nothing written."""
    path = tmp_path / "function.pkl"
    path.write_bytes(cloudpickle.dumps(refused_function_pipeline()))  # a lambda needs pickling by value
    out = tmp_path / "models"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline_tools.package",
            str(path),
            "--name",
            "fn",
            "--version",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    support.assert_mentions(lines[0], ["error:", "'functiontransformer'", "<lambda>", "not a numpy ufunc"])
    assert not (out / "fn").exists() or not any((out / "fn").iterdir())
