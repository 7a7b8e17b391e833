"""The REST fast path's seam (runtime.integration.fast_path) and its reader (runtime.edge.fast_json):
which requests it serves itself and which it hands to MLServer's app, body intact. That its
answers equal MLServer's is tested through real servers (tests/integration/test_fast_path.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import orjson
import pytest
from mlserver.errors import ModelNotFound
from mlserver.types import InferenceResponse, ResponseOutput
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Route
from starlette_exporter import PrometheusMiddleware

import runtime.model  # noqa: F401  (installs the integration, as loading the runtime does)
from runtime.core.contract import Contract, Tensor, decode_tensor
from runtime.core.errors import PipelineError
from runtime.edge import fast_json
from runtime.edge.asgi import read_body
from runtime.edge.fast_json import _may_hold_booleans, _parsed, read_simple
from runtime.integration.fast_path import ROUTES, Compression, FastInfer, Layers, enabled, layers
from runtime.integration.patching import IntegrationError

X = {"name": "X", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}


@pytest.fixture(params=["orjson", "simdjson"], autouse=True)
def parser(request, monkeypatch):
    """Every reader test runs on both parsers: orjson reads small bodies, simdjson large ones."""
    if request.param == "simdjson":
        monkeypatch.setattr(fast_json, "IN_PLACE_FROM_BYTES", 0)
    return request.param


@pytest.mark.parametrize(
    "document",
    [
        {"inputs": [X]},
        {"id": "a", "inputs": [X], "outputs": [{"name": "predict"}]},
        {"inputs": [X], "parameters": {"ood_flags": True, "feature_sources": False}},
        {
            "inputs": [
                {"name": "entity_id", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
                {**X, "name": "bmi"},
            ]
        },
    ],
)
def test_the_simple_form_is_read(document, parser):
    body = json.dumps(document).encode()
    request = read_simple(body)
    assert request is not None and np.asarray(request.inputs[-1].data).tolist() == [1.0, 2.0]
    # Numbers come as a numpy array: from simdjson when they are a flat list, from orjson's list
    # unless a JSON boolean anywhere could be among them.
    in_place = parser == "simdjson"
    assert isinstance(request.inputs[-1].data, np.ndarray) == (in_place or b"true" not in body and b"false" not in body)


_RNG = np.random.default_rng(7)
_NUMBERS = [repr(float(v)) for v in _RNG.normal(0, 1, 300)] + [f"{v:.25e}" for v in _RNG.normal(0, 1e-200, 100)]


def _decoded(tensor: Tensor, shape: tuple[int, ...], missing: bool) -> tuple[str, Any]:
    """What the contract makes of a tensor: its float64 values, bit for bit, or its refusal."""
    columns = tuple(f"c{i}" for i in range(shape[-1])) if len(shape) == 2 else (tensor.name,)
    try:
        return "values", decode_tensor(tensor, shape, columns, [missing] * len(columns)).tobytes()
    except PipelineError as refused:
        return "refused", str(refused)


@pytest.mark.parametrize(
    "data, datatype, shape",
    [
        ("[1, 2.5, -0, -0.0, 1E2, 3e-7]", "FP64", (6,)),
        ("[" + ",".join(_NUMBERS) + "]", "FP64", (400,)),
        ("[" + ",".join(_NUMBERS) + "]", "FP32", (400,)),
        ("[" + ",".join(_NUMBERS) + "]", "FP64", (200, 2)),
        ("[1, 2, 3, 9223372036854775807, -9223372036854775808]", "INT64", (5,)),
        ("[1, 2.5]", "INT32", (2,)),
        ("[18446744073709551615, 1]", "UINT64", (2,)),
        ("[18446744073709551615, 1]", "FP64", (2,)),
        ("[[1, 2], [3, 4]]", "FP64", (2, 2)),
        ("[[1, 2], [3, 4]]", "FP64", (4,)),
        ("[[1], [2, 3]]", "FP64", (3,)),
        ("[1, [2]]", "FP64", (2,)),
        ("[[1, 2], []]", "FP64", (2,)),
        ("[1, null]", "FP64", (2,)),
        ("[1, true]", "FP64", (2,)),
        ('[1, "2"]', "FP64", (2,)),
        ("[1e308, -1e308]", "FP32", (2,)),
        ("[]", "FP64", (0,)),
    ],
)
@pytest.mark.parametrize("missing", [False, True])
def test_numbers_read_in_place_decode_as_orjsons_values_do(data, datatype, shape, missing):
    """simdjson reads a flat list of numbers straight into numpy; anything else (nesting, gaps,
    booleans, text) comes as orjson's list. Either way the contract decodes what MLServer's path
    (orjson's values) gives: the same float64 values bit for bit, or the same refusal."""
    for names in (("X", "Y"), ("X[", "Y]")):  # a '[' in a string: nested data must not be read flat
        first = f'{{"name": "{names[0]}", "shape": {list(shape)}, "datatype": "{datatype}", "data": {data}}}'
        second = f'{{"name": "{names[1]}", "shape": [2], "datatype": "FP64", "data": [1, 2]}}'
        body = f'{{"inputs": [{first}, {second}], "outputs": [{{"name": "p"}}]}}'.encode()
        request = read_simple(body)
        assert request is not None
        expected = [Tensor(i["name"], i["shape"], i["datatype"], i["data"]) for i in orjson.loads(body)["inputs"]]
        for got, plain in zip(request.inputs, expected, strict=True):
            form = tuple(plain.shape)
            assert _decoded(got, form, missing) == _decoded(plain, form, missing)


def test_a_parser_still_held_by_a_proxy_is_replaced():
    held = _parsed(json.dumps({"inputs": [X]}).encode())  # as an error's traceback might hold one
    request = read_simple(json.dumps({"inputs": [X]}).encode())
    assert held is not None and request is not None and request.inputs[0].data.tolist() == [1.0, 2.0]


def test_a_repeated_key_is_read_as_orjson_reads_it_the_last_wins():
    body = b'{"inputs": [{"name": "X", "shape": [2], "datatype": "FP64", "data": [1, 2], "data": [3.5, 4]}]}'
    request = read_simple(body)
    assert request is not None and request.inputs[0].data.tolist() == [3.5, 4.0]


@pytest.mark.parametrize(
    "body",
    [
        b"[1.0, true]",
        b"[false, 2]",
        b"[1.0, 2.0]",
        b'{"parameters": {"ood_flags": true}}',
        b'"rl" [1, 2]',
        b'"r" [false]',
        b'"l" [true]',
        b'"tru" [1]',
        b'"fals" [1]',
        b"",
        b"true",
        b"false",
        b'"label" "error"',
    ],
)
def test_the_byte_precheck_for_booleans_agrees_with_searching_the_words(body):
    assert _may_hold_booleans(body) == (b"true" in body or b"false" in body)


def test_a_boolean_among_the_numbers_is_still_refused_by_the_contract():
    request = read_simple(json.dumps({"inputs": [{**X, "data": [1.0, True]}]}).encode())
    assert request is not None and request.inputs[0].data == [1.0, True]
    with pytest.raises(PipelineError, match="row 0, column 1"):
        Contract(("a", "b"), ("predict",), max_rows=10).parse("r", request.inputs, [])


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"inputs": []}',
        json.dumps({"inputs": [X], "parameters": {"ood_flags": "yes"}}).encode(),
        json.dumps({"inputs": [X], "parameters": {"content_type": 3}}).encode(),
        json.dumps({"inputs": [{"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": [1]}]}).encode(),
        json.dumps({"inputs": [{**X, "parameters": {"content_type": "np", "other": 1}}]}).encode(),
        json.dumps({"inputs": [{**X, "parameters": {"ood_flags": True}}]}).encode(),
        json.dumps({"inputs": [{**X, "datatype": "BYTES"}]}).encode(),
        json.dumps({"inputs": [{**X, "shape": [1, True]}]}).encode(),
        json.dumps({"id": 3, "inputs": [X]}).encode(),
        json.dumps({"inputs": [X], "outputs": [{"name": "p", "parameters": {}}]}).encode(),
        b'{"inputs": [{"name": "X", "shape": [1, 1], "datatype": "FP64", "data": [NaN]}]}',
        b"\xef\xbb\xbf" + json.dumps({"inputs": [X]}).encode(),  # a BOM: orjson (MLServer's parser) refuses it
    ],
)
def test_anything_else_is_left_to_mlserver(body):
    assert read_simple(body) is None


def test_a_dataframe_sent_as_pandas_codec_does_takes_the_fast_path():
    """PandasCodec's request: content types named, one [N, 1] tensor per column, BYTES for strings."""
    city = {"name": "city", "shape": [2, 1], "datatype": "BYTES", "parameters": {"content_type": "str"}}
    body = {
        "parameters": {"content_type": "pd", "ood_flags": True},
        "inputs": [
            {**city, "data": ["paris", None]},
            {"name": "age", "shape": [2, 1], "datatype": "FP64", "data": [1, 2]},
        ],
    }
    request = read_simple(json.dumps(body).encode())
    assert request is not None and request.flags == {"ood_flags": True}
    assert [t.data for t in request.inputs][0] == ["paris", None]


class _Model:
    def __init__(self, fast: bool):
        self.fast_path = fast


class _Registry:
    def __init__(self, models: dict[str, Any]):
        self.models = models

    async def get_model(self, name: str, version: Any = None) -> Any:
        if name not in self.models:
            raise ModelNotFound(name, version)
        return self.models[name]


class _DataPlane:
    def __init__(self) -> None:
        self._model_registry = _Registry({"fast": _Model(True), "slow": _Model(False)})
        self.calls: list[Any] = []

    async def infer(self, payload: Any, name: str, version: Any = None) -> InferenceResponse:
        self.calls.append((payload, name, version))
        out = ResponseOutput(name="predict", shape=[1], datatype="FP64", data=[3.0])
        return InferenceResponse(model_name=name, id=payload.id or "generated", outputs=[out])


def _call(path: str, body: bytes) -> tuple[_DataPlane, list[bytes], list[dict]]:
    data_plane, seen, sent = _DataPlane(), [], []

    async def inner(scope, receive, send):  # MLServer's app: records the body it got
        seen.append(await read_body(receive))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]

    async def receive():
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"x-test", b"1")]}
    asyncio.run(FastInfer(inner, data_plane, Layers(None, None))(scope, receive, send))
    return data_plane, seen, sent


def test_a_simple_request_to_a_fast_model_never_reaches_mlservers_app():
    body = json.dumps({"id": "r1", "inputs": [X]}).encode()
    data_plane, seen, sent = _call("/v2/models/fast/versions/2/infer", body)
    assert seen == [] and len(data_plane.calls) == 1
    payload, name, version = data_plane.calls[0]
    assert (name, version, payload.id) == ("fast", "2", "r1")
    assert payload.parameters.headers["x-test"] == "1"  # as MLServer's endpoint inserts them
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["outputs"][0]["data"] == [3.0]


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v2/models/slow/infer", json.dumps({"inputs": [X]}).encode()),  # fast_path false
        ("/v2/models/nope/infer", json.dumps({"inputs": [X]}).encode()),  # MLServer answers the 404
        ("/v2/models/fast/infer", json.dumps({"inputs": [X], "parameters": {"headers": {}}}).encode()),
        ("/v2/models/fast/ready", b""),
    ],
)
def test_everything_else_reaches_mlservers_app_with_its_body(path, body):
    data_plane, seen, sent = _call(path, body)
    assert data_plane.calls == [] and sent[0]["status"] == 299
    assert seen == [body]


def test_the_switch_and_tracing_turn_it_off():
    class Settings:
        tracing_server = None

    assert enabled(Settings(), {}) and not enabled(Settings(), {"PIPELINE_FAST_PATH": "0"})
    Settings.tracing_server = "otel:4317"
    assert not enabled(Settings(), {})


def infer():  # stands for MLServer's Endpoints.infer: the fast path checks the route's endpoint by name
    raise AssertionError("never called")


def _app(*middleware: Any, routes: tuple[str, ...] = ROUTES) -> Starlette:
    app = Starlette(routes=[Route(path, infer, methods=["POST"]) for path in routes])
    for cls, kwargs in middleware:
        app.add_middleware(cls, **kwargs)
    return app


def test_mlservers_middleware_is_reproduced_or_the_fast_path_is_off():
    metrics = (PrometheusMiddleware, {"app_name": "mlserver", "prefix": "rest_server", "skip_paths": ["/metrics"]})
    found = layers(_app((GZipMiddleware, {}), metrics))
    assert found is not None and found.compression == Compression() and found.metrics is not None
    assert [p.pattern for p in found.metrics.skip_paths] == ["/metrics"]
    assert layers(_app((GZipMiddleware, {}), (CORSMiddleware, {"allow_origins": ["*"]}))) is None
    assert layers(_app((GZipMiddleware, {"minimum_size": 10, "other": 1}))) is None  # an option it does not know
    with pytest.raises(IntegrationError, match="no inference route"):
        layers(_app(routes=ROUTES[:1]))


@pytest.mark.parametrize(
    "size, accept, expected",
    [
        (499, "gzip", []),
        (500, "", [(b"vary", b"Accept-Encoding")]),
        (500, "deflate, gzip", [(b"vary", b"Accept-Encoding"), (b"content-encoding", b"gzip")]),
    ],
)
def test_compression_as_starlettes_gzip(size, accept, expected):
    import gzip

    headers: list = []
    body = Compression().apply(b"x" * size, headers, accept)
    assert headers == expected
    assert (gzip.decompress(body) if expected[1:] else body) == b"x" * size


def test_generated_ids_are_what_mlservers_generate_uuid_makes():
    import uuid

    from runtime.integration.direct import random_uuid4

    ids = {random_uuid4() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("own", [(), (("x-pipeline-note", "a b"), ("x-other", "2"))])
def test_response_headers_are_the_answers_then_mlservers_cloudevents_in_each_form(own):
    """direct.response_headers fills a per-model template made by MLServer's own inference
    middleware, after the answer's own headers; what it gives equals what MLServer's path sends
    for the same answer (v2.response, then the middleware, then the endpoint's extract_headers),
    pair by pair and in order, for both protocols' forms and for an empty id (which MLServer
    leaves out)."""
    from types import SimpleNamespace

    from mlserver.cloudevents import CloudEventsMiddleware
    from mlserver.settings import ModelSettings, Settings
    from mlserver.utils import extract_headers

    from runtime.core.call import Answer
    from runtime.integration import fast_path_grpc, v2
    from runtime.integration.direct import DirectInference
    from runtime.integration.fast_path import _raw_pair

    middleware = CloudEventsMiddleware(Settings(server_name="srv"))
    plane = SimpleNamespace(_inference_middleware=middleware, _response_cache=None)
    direct = DirectInference(plane)

    class Model:  # weakly referenced, as a loaded model is
        settings = ModelSettings(name="m", implementation="runtime.model.PipelineRuntime")

    model = Model()
    answer = Answer("m", "1", [], {"served_by": "b:1"}, own)
    for request_id in ("req-7", "f" * 36, ""):
        sent = v2.response(answer)
        sent.id = request_id
        middleware.response_middleware(sent, model.settings)
        expected = extract_headers(sent) or {}
        assert (request_id == "") == ("Ce-Id" not in expected)
        assert list(expected.items())[: len(own)] == list(own) and "Ce-Modelid" in expected
        grpc_form = [fast_path_grpc._metadata_pair(k, v) for k, v in expected.items()]
        assert list(direct.response_headers(model, answer, request_id, fast_path_grpc._metadata_pair)) == grpc_form
        rest_form = [_raw_pair(k, v) for k, v in expected.items()]
        assert list(direct.response_headers(model, answer, request_id.encode(), _raw_pair)) == rest_form
