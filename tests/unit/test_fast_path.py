"""The REST fast path's seam (runtime.integration.fast_path) and its reader (runtime.fast_json):
which requests it serves itself and which it hands to MLServer's app, body intact. That its
answers equal MLServer's is tested through real servers (tests/integration/test_fast_path.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from mlserver.errors import ModelNotFound
from mlserver.types import InferenceResponse, ResponseOutput
from starlette.routing import Route, Router

import runtime.model  # noqa: F401  (installs the integration, as loading the runtime does)
from runtime.fast_json import read_simple
from runtime.integration.fast_path import FastInfer, enabled

X = {"name": "X", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}


def _endpoint():  # MLServer's Endpoints.infer stands here
    raise AssertionError("the fast path never calls the route's endpoint")


ROUTES = [Route("/v2/models/{model_name}/infer", _endpoint, methods=["POST"]),
          Route("/v2/models/{model_name}/versions/{model_version}/infer", _endpoint, methods=["POST"])]  # fmt: skip


@pytest.mark.parametrize("document", [
    {"inputs": [X]},
    {"id": "a", "inputs": [X], "outputs": [{"name": "predict"}]},
    {"inputs": [X], "parameters": {"ood_flags": True, "feature_sources": False}},
    {"inputs": [{"name": "entity_id", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}, {**X, "name": "bmi"}]},
])  # fmt: skip
def test_the_simple_form_is_read(document):
    request = read_simple(json.dumps(document).encode())
    assert request is not None and request.inputs[-1].data == [1.0, 2.0]


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"inputs": []}', json.dumps({"inputs": [X], "parameters": {"ood_flags": "yes"}}).encode(),
    json.dumps({"inputs": [X], "parameters": {"content_type": "np"}}).encode(),
    json.dumps({"inputs": [{"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": [1]}]}).encode(),
    json.dumps({"inputs": [{**X, "parameters": {}}]}).encode(), json.dumps({"inputs": [{**X, "datatype": "BYTES"}]}).encode(),
    json.dumps({"inputs": [{**X, "shape": [1, True]}]}).encode(), json.dumps({"id": 3, "inputs": [X]}).encode(),
    json.dumps({"inputs": [X], "outputs": [{"name": "p", "parameters": {}}]}).encode(),
    b'{"inputs": [{"name": "X", "shape": [1, 1], "datatype": "FP64", "data": [NaN]}]}',
])  # fmt: skip
def test_anything_else_is_left_to_mlserver(body):
    assert read_simple(body) is None


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
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]

    async def receive():
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"x-test", b"1")]}
    asyncio.run(FastInfer(inner, data_plane, Router(ROUTES))(scope, receive, send))
    _call.scope = scope  # type: ignore[attr-defined]
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
    # As routing leaves it, for MLServer's metrics middleware (it counts only routed requests).
    scope = _call.scope  # type: ignore[attr-defined]
    assert scope["endpoint"] is _endpoint and scope["router"].routes == ROUTES
    assert scope["path_params"] == {"model_name": "fast", "model_version": "2"}


@pytest.mark.parametrize("path, body", [
    ("/v2/models/slow/infer", json.dumps({"inputs": [X]}).encode()),  # fast_path false
    ("/v2/models/nope/infer", json.dumps({"inputs": [X]}).encode()),  # MLServer answers the 404
    ("/v2/models/fast/infer", json.dumps({"inputs": [X], "parameters": {"headers": {}}}).encode()),
    ("/v2/models/fast/ready", b""),
])  # fmt: skip
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
