"""The REST fast path (runtime.integration.fast_path) changes nothing but speed: the same corpus
sent to a server with it on and to one with it off (PIPELINE_FAST_PATH=0) gets the same status,
headers and body, generated request ids and the date aside. The corpus: every bad-input case of the
contract table on both protocols, good requests in every layout and datatype, /predict bodies,
V2's binary tensor extension (binary inputs, mixed with JSON ones, binary outputs, broken binary
bodies), and a few thousand fuzzed requests (harness.strategies, binary bodies among them)."""

from __future__ import annotations

import json
import re

import grpc
import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import mixed_model
from harness import strategies as S
from harness.fuzz import fuzz_repository
from harness.models import BREAST_CANCER, DIABETES, sample_rows
from harness.server import Server
from harness.v2 import json_tensor, pb_2d_request, pb_request, pb_tensor, raw_dtype
from tests.integration import support
from tests.integration.test_v2_bad_inputs import GRPC_CASES, REST_CASES

FUZZED_REST = 2000
FUZZED_GRPC = 500
# A generated request id (no id in the request), and /predict's timestamp.
_VARYING = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d{4}-\d\d-\d\dT[\d:.]+\+00:00")


def _launch(request: pytest.FixtureRequest, fast: bool) -> Server:
    """The shipped models and a model with string columns (harness.mixed_model)."""
    root = request.getfixturevalue("tmp_path_factory").mktemp("fast-on" if fast else "fast-off") / "repo"
    models = fuzz_repository(root)
    return Server.launch(
        root / "mlserver.log", root=root, models=models, env={"PIPELINE_FAST_PATH": "1" if fast else "0"}
    )


SERVERS = {"fast-on": lambda r: _launch(r, True), "fast-off": lambda r: _launch(r, False)}


@pytest.fixture(scope="module")
def pair(fleet) -> tuple[Server, Server]:
    return fleet["fast-on"], fleet["fast-off"]


def _answer(
    server: Server, path: str, body: bytes, content_type: str | None = "application/json", more: dict | None = None
) -> tuple:
    sent = ({"Content-Type": content_type} if content_type else {}) | (more or {})
    r = requests.post(server.http_url + path, data=body, headers=sent, timeout=30)
    # Every header but the date: MLServer's CloudEvents headers, GZip's vary and content-encoding.
    headers = {k.lower(): _VARYING.sub(b"<varies>", v.encode()) for k, v in r.headers.items() if k.lower() != "date"}
    if headers.get("content-encoding") == b"gzip":  # the generated id compresses as it will
        headers.pop("content-length")
    return r.status_code, headers, _VARYING.sub(b"<varies>", r.content)


def _same_rest(
    pair, path: str, body: bytes, content_type: str | None = "application/json", more: dict | None = None
) -> tuple:
    on, off = (_answer(s, path, body, content_type, more) for s in pair)
    assert on == off, f"POST {path} {more} {body[:300]!r}"
    return on


def _same_grpc(pair, request) -> None:
    on, off = (support.grpc_call(s, request) for s in pair)
    assert (on.code, on.details) == (off.code, off.details), request
    if on.ok:
        for response in (on.response, off.response):
            response.id = ""
        assert on.response == off.response


def _body(document) -> bytes:
    return document.encode() if isinstance(document, str) else json.dumps(document).encode()


@pytest.mark.parametrize("case_id", list(REST_CASES))
def test_every_rest_bad_input_gets_the_same_answer(pair, case_id):
    model, document, _, _ = REST_CASES[case_id]
    _same_rest(pair, f"/v2/models/{model}/infer", _body(document))


@pytest.mark.parametrize("case_id", list(GRPC_CASES))
def test_every_grpc_bad_input_gets_the_same_answer(pair, case_id):
    _same_grpc(pair, GRPC_CASES[case_id][0])


GOOD = {
    "2-D FP64": (DIABETES, {"inputs": [json_tensor("X", sample_rows(DIABETES, 3))]}),
    "2-D nested, an id": (
        DIABETES,
        {
            "id": "mine",
            "inputs": [{"name": "X", "shape": [2, 10], "datatype": "FP64", "data": sample_rows(DIABETES, 2).tolist()}],
        },
    ),
    "INT32": (DIABETES, {"inputs": [{"name": "X", "shape": [1, 10], "datatype": "INT32", "data": [1] * 10}]}),
    "columns": (
        DIABETES,
        {
            "inputs": [
                json_tensor(n, sample_rows(DIABETES, 2)[:, i])
                for i, n in enumerate(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"])
            ]
        },
    ),
    "classifier, outputs": (
        BREAST_CANCER,
        {
            "inputs": [json_tensor("X", sample_rows(BREAST_CANCER, 2))],
            "outputs": [{"name": "predict_proba"}, {"name": "predict"}],
        },
    ),
    "OOD flags": (
        DIABETES,
        {"inputs": [json_tensor("X", sample_rows(DIABETES, 2) * 100)], "parameters": {"ood_flags": True}},
    ),
    "a version": (DIABETES, {"inputs": [json_tensor("X", sample_rows(DIABETES, 1))]}),
}


@pytest.mark.parametrize("case_id", list(GOOD))
def test_good_requests_get_the_same_answer(pair, case_id):
    model, document = GOOD[case_id]
    _same_rest(pair, f"/v2/models/{model}/infer", _body(document))
    _same_rest(pair, f"/v2/models/{model}/versions/1/infer", _body(document))
    _same_rest(pair, "/predict/" + model, _body({"features": sample_rows(model, 2).tolist()}))


def _large(rows: int = 1000, name: str = "X", datatype: str = "FP64", edit=None, nested: bool = False) -> bytes:
    """A body past fast_json.IN_PLACE_FROM_BYTES (simdjson reads its numbers in place), `edit`
    changing its flat list of values (as JSON text) first."""
    X = sample_rows(DIABETES, rows)
    values = [json.dumps(v) for v in X.ravel().tolist()]
    if edit is not None:
        edit(values)
    if nested:
        data = "[" + ",".join("[" + ",".join(values[r * 10 : r * 10 + 10]) + "]" for r in range(rows)) + "]"
    else:
        data = "[" + ",".join(values) + "]"
    tensor = f'{{"name": "{name}", "shape": [{rows}, 10], "datatype": "{datatype}", "data": {data}}}'
    return f'{{"inputs": [{tensor}]}}'.encode()


def _set(index: int, text: str):
    def edit(values: list[str]) -> None:
        values[index] = text

    return edit


LARGE = {
    "flat": _large(),
    "nested": _large(nested=True),
    "a '[' in a name": _large(name="X[0]"),
    "a gap at row 700": _large(edit=_set(7003, "null")),
    "a boolean at row 700": _large(edit=_set(7003, "true")),
    "text at row 700": _large(edit=_set(7003, '"1.5"')),
    "ragged": _large(nested=True, edit=lambda v: v.pop(7003)),
    "INT64, a fraction": _large(datatype="INT64", edit=lambda v: v.__setitem__(slice(None), ["1"] * 9999 + ["1.5"])),
    "an integer past 64 bits": _large(edit=_set(5, "123456789012345678901234567890")),
    "a number past a double": _large(edit=_set(5, "1e400")),
    "a byte order mark": b"\xef\xbb\xbf" + _large(),
}


@pytest.mark.parametrize("case_id", list(LARGE))
def test_large_bodies_get_the_same_answer(pair, case_id):
    """Bodies the fast path parses with simdjson (numbers read in place), MLServer's path with orjson."""
    _same_rest(pair, f"/v2/models/{DIABETES}/infer", LARGE[case_id])


def test_headers_and_deadlines_are_honoured_the_same(pair):
    body = _body(GOOD["2-D FP64"][1])
    for headers in (
        {"X-Request-Timeout-Ms": "abc"},
        {"X-Request-Timeout-Ms": "0.001"},
        {"X-Request-Timeout-Ms": "5000"},
    ):
        on, off = (
            requests.post(
                f"{s.http_url}/v2/models/{DIABETES}/infer",
                data=body,
                timeout=30,
                headers={"Content-Type": "application/json", **headers},
            )
            for s in pair
        )
        assert (on.status_code, _VARYING.sub(b"", on.content)) == (off.status_code, _VARYING.sub(b"", off.content)), (
            headers
        )


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/json; charset=utf-8",
        "application/vnd.v2+json",
        "APPLICATION/JSON",
        "application/x-www-form-urlencoded",
    ],
)
def test_content_types_are_told_apart_as_fastapi_does(pair, content_type):
    # FastAPI parses a body as JSON only without a content type or with application/json or
    # application/*+json; any other body is validated as bytes: a 422 the fast path must leave alone.
    _same_rest(pair, f"/v2/models/{DIABETES}/infer", _body(GOOD["2-D FP64"][1]), content_type)


def test_repeated_headers_count_as_the_first(pair):
    body = _body(GOOD["2-D FP64"][1])
    headers = [
        ("Content-Type", "application/json"),
        ("X-Request-Timeout-Ms", "0.001"),
        ("X-Request-Timeout-Ms", "5000"),
    ]
    answers = []
    for server in pair:
        import http.client

        connection = http.client.HTTPConnection(server.http_hostport, timeout=30)
        connection.putrequest("POST", f"/v2/models/{DIABETES}/infer")
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        answers.append((response.status, _VARYING.sub(b"", response.read())))
        connection.close()
    assert answers[0] == answers[1]


def _binary(document: dict, values: dict[str, np.ndarray | list[str]]) -> tuple[bytes, dict[str, str]]:
    """The V2 binary extension's body: each named input's values after the JSON, the others in JSON."""
    chunks = []
    for item in document["inputs"]:
        if item["name"] in values:
            chunk = _raw(values[item["name"]], item["datatype"])
            item["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
    return S.BinaryDraft(document, chunks).encode()


def _raw(values: np.ndarray | list[str], datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(len(v.encode()).to_bytes(4, "little") + v.encode() for v in values)
    return np.asarray(values).astype(raw_dtype(datatype)).tobytes()


def _mixed_columns(frame) -> list[dict]:
    return [
        {"name": c, "shape": [len(frame)], "datatype": "BYTES" if c in mixed_model.STRINGS else "FP64"}
        for c in mixed_model.COLUMNS
    ]


_X = sample_rows(DIABETES, 3)
_CANCER = sample_rows(BREAST_CANCER, 4)
_FRAME = mixed_model.rows(6, seed=4).assign(plan=lambda f: f["plan"].fillna("pro"))  # BYTES carry no gap
_NAMES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
BINARY = {
    "2-D FP64": (DIABETES, _binary({"inputs": [{"name": "X", "shape": [3, 10], "datatype": "FP64"}]}, {"X": _X})),
    "FP32 columns, half in JSON": (
        DIABETES,
        _binary(
            {
                "id": "mine",
                "inputs": [
                    {"name": n, "shape": [3], "datatype": "FP32"}
                    | ({} if i % 2 else {"data": _X[:, i].astype(np.float32).tolist()})
                    for i, n in enumerate(_NAMES)
                ],
            },
            {n: _X[:, i] for i, n in enumerate(_NAMES) if i % 2},
        ),
    ),
    "outputs binary and JSON": (
        BREAST_CANCER,
        _binary(
            {
                "inputs": [{"name": "X", "shape": [4, 30], "datatype": "FP64"}],
                "outputs": [
                    {"name": "predict_proba", "parameters": {"binary_data": True}},
                    {"name": "predict", "parameters": {"binary_data": False}},
                ],
            },
            {"X": _CANCER},
        ),
    ),
    "every output binary, OOD flags": (
        BREAST_CANCER,
        _binary(
            {
                "inputs": [{"name": "X", "shape": [4, 30], "datatype": "INT64"}],
                "parameters": {"binary_data_output": True, "ood_flags": True},
            },
            {"X": (_CANCER * 100).astype(np.int64)},
        ),
    ),
    "string columns, gaps NaN": (
        mixed_model.NAME,
        _binary(
            {"inputs": _mixed_columns(_FRAME), "parameters": {"binary_data_output": True}},
            {c: _FRAME[c].tolist() for c in mixed_model.STRINGS}
            | {c: _FRAME[c].to_numpy(np.float64) for c in mixed_model.NUMERIC},
        ),
    ),
    "NaN where none may be": (
        DIABETES,
        _binary({"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64"}]}, {"X": np.full((1, 10), np.nan)}),
    ),
    "JSON inputs, binary outputs": (
        DIABETES,
        (
            json.dumps(
                {
                    "inputs": [json_tensor("X", _X)],
                    "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
                }
            ).encode(),
            {},
        ),
    ),
}


@pytest.mark.parametrize("case_id", list(BINARY))
def test_binary_requests_get_the_same_answer(pair, case_id):
    model, (body, headers) = BINARY[case_id]
    # A binary body is read whatever its content type; a JSON one only as JSON (FastAPI's rule).
    for content_type in (None, "application/octet-stream" if headers else "application/json"):
        status, answer_headers, _ = _same_rest(pair, f"/v2/models/{model}/infer", body, content_type, headers)
        assert status == (400 if case_id == "NaN where none may be" else 200)
        # An answer with binary outputs says where its JSON ends.
        assert ("inference-header-content-length" in answer_headers) == ("binary" in case_id or "string" in case_id)


BROKEN = {
    "a size that does not match": (
        "binary_data_size",
        lambda b, h: (b.replace(b'"binary_data_size":240', b'"binary_data_size":232', 1), h),
    ),
    "an input past the end": ("past the end", lambda b, h: (b[:-8], h)),
    "a header length past the body": ("past the end", lambda b, h: (b, {S.HEADER_LENGTH: str(len(b) + 1)})),
    "bytes no input claims": ("claimed by no input", lambda b, h: (b + b"\x00" * 8, h)),
}


@pytest.mark.parametrize("case_id", list(BROKEN))
def test_broken_binary_bodies_are_refused_alike_naming_the_input(pair, case_id):
    words, breaking = BROKEN[case_id]
    body, headers = breaking(*BINARY["2-D FP64"][1])
    status, _, content = _same_rest(pair, f"/v2/models/{DIABETES}/infer", body, None, headers)
    assert status == 400 and words.encode() in content, content
    if case_id in ("a size that does not match", "an input past the end"):
        assert b"input 'X'" in content


def test_tritonclient_http_defaults_on_string_columns(pair):
    """tritonclient.http as it comes (every tensor in binary, BYTES length-prefixed, gaps NaN) on
    the model with string columns: the pipeline's own answers, fast path on and off."""
    import tritonclient.http as httpclient

    frame = mixed_model.rows(40, seed=9).assign(plan=lambda f: f["plan"].fillna("team"))
    expected = mixed_model.pipeline()
    for server in pair:
        client = httpclient.InferenceServerClient(url=server.http_hostport, network_timeout=30)
        try:
            inputs = []
            for column in mixed_model.COLUMNS:
                strings = column in mixed_model.STRINGS
                tensor = httpclient.InferInput(column, [len(frame)], "BYTES" if strings else "FP64")
                tensor.set_data_from_numpy(frame[column].to_numpy(object if strings else np.float64))
                inputs.append(tensor)
            outputs = [httpclient.InferRequestedOutput(o) for o in ("predict", "predict_proba")]
            result = client.infer(mixed_model.NAME, inputs, outputs=outputs)
        finally:
            client.close()
        assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
        np.testing.assert_array_equal(result.as_numpy("predict"), expected.predict(frame))
        np.testing.assert_allclose(result.as_numpy("predict_proba"), expected.predict_proba(frame), rtol=1e-9)


GRPC_GOOD = {
    "typed, no id": pb_2d_request(DIABETES, sample_rows(DIABETES, 2)),
    "an id, a version": pb_2d_request(DIABETES, sample_rows(DIABETES, 1), version="2"),
    "classifier, outputs": pb_2d_request(
        BREAST_CANCER, sample_rows(BREAST_CANCER, 2), outputs=["predict_proba", "predict"]
    ),
    "raw inputs": pb_request(
        DIABETES, [pb_tensor("X", [2, 10], "FP64")], raw=[sample_rows(DIABETES, 2).astype("<f8").tobytes()]
    ),
    "a bad one": pb_2d_request(DIABETES, sample_rows(DIABETES, 1)[:, :3]),
}
GRPC_GOOD["an id, a version"].id = "mine"


@pytest.mark.parametrize("case_id", list(GRPC_GOOD))
def test_grpc_answers_and_trailing_metadata_are_the_same(pair, case_id):
    """The response (raw outputs for raw inputs) and MLServer's response headers, sent as
    trailing metadata (CloudEvents), generated ids aside."""
    seen = []
    for server in pair:
        future = support.grpc_stub(server).ModelInfer.future(GRPC_GOOD[case_id], timeout=30)
        try:
            response = future.result()
            response.id = _VARYING.sub(b"<varies>", response.id.encode()).decode()
            status = (grpc.StatusCode.OK, "")
        except grpc.RpcError:
            response, status = None, (future.code(), future.details())
        trailing = sorted((k, _VARYING.sub(b"<varies>", v.encode())) for k, v in future.trailing_metadata() or ())
        seen.append((status, response, trailing))
    assert seen[0] == seen[1]
    assert seen[0][0][0] != grpc.StatusCode.OK or any(k == "ce-modelid" for k, _ in seen[0][2])


SETTINGS = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


def test_fuzzed_rest_requests_get_the_same_answer(pair):
    @settings(SETTINGS, max_examples=FUZZED_REST)
    @given(case=S.rest_cases())
    def prop(case):
        _same_rest(pair, case.target.rest_path(), case.body, case.content_type, case.headers)

    prop()


MIXED_REST = 600
MIXED_GRPC = 300


def test_fuzzed_requests_to_a_model_with_string_columns_get_the_same_answer(pair):
    """Per-column tensors (PandasCodec's [N, 1] and content types too), gaps, unseen categories and
    every way the fuzzers break them; /predict rows and records."""

    @settings(SETTINGS, max_examples=MIXED_REST)
    @given(case=st.one_of(S.mixed_rest_cases(), S.legacy_mixed_cases(), S.mixed_binary_cases()))
    def rest(case):
        _same_rest(pair, case.url_path(), case.body, case.content_type, case.headers)

    @settings(SETTINGS, max_examples=MIXED_GRPC)
    @given(case=S.mixed_grpc_cases())
    def grpc_(case):
        _same_grpc(pair, case.request)

    rest()
    grpc_()


def test_fuzzed_grpc_requests_get_the_same_answer(pair):
    @settings(SETTINGS, max_examples=FUZZED_GRPC)
    @given(case=S.grpc_cases())
    def prop(case):
        _same_grpc(pair, case.request)

    prop()


COUNTED = re.compile(
    r"^(rest_server_|grpc_server_|model_infer_|pipeline_(requests|request_rows|prediction_bucket|ood_|admission))"
)


def _counts(server: Server) -> dict:
    """Every request count the server exports (counters, histogram counts), durations aside."""
    return {
        key: value
        for key, value in server.scrape().items()
        if COUNTED.match(key[0]) and (key[0].endswith("_total") or key[0].endswith("_count"))
    }


def test_every_request_above_was_counted_the_same_by_mlserver_and_the_runtime(pair):
    """Runs last: the two servers got the same traffic, so MLServer's REST, gRPC and model
    metrics and the runtime's must hold the same counts (starlette_exporter counts only requests
    whose scope was routed: the fast path must leave the route in it)."""
    on, off = (_counts(s) for s in pair)
    rest = [k for k in on if k[0] == "rest_server_requests_total" and dict(k[1]).get("path", "").endswith("/infer")]
    assert rest and sum(on[k] for k in rest) > FUZZED_REST // 2  # the inference requests were counted at all
    assert on == off, {k: (on.get(k), off.get(k)) for k in set(on) | set(off) if on.get(k) != off.get(k)}
