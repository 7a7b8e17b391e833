"""Fuzzing requests by entity id over REST and gRPC against a real feature store: any datatype,
shape, id (unicode, control characters, bytes, numbers, nesting, length) and any feature input
beside it. Whatever arrives, the answer is a 200 or a 4xx with a message (gRPC: INVALID_ARGUMENT),
never a 5xx or a traceback, and the server keeps serving."""

from __future__ import annotations

import json

import pytest
import requests
import tritonclient.grpc as tgrpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from harness.server import served
from tests.features.support import launch, rest_by_id

EXAMPLES = 300
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
KNOWN = [f"patient-{i:04d}" for i in (0, 1, 441)]

ids = st.one_of(st.sampled_from(KNOWN), st.text(max_size=140), st.just(""), st.just("x" * 129))
cells = st.one_of(ids, st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.lists(ids, max_size=3))
features = st.sampled_from(["age", "bmi", "s6", "nope", "entity_id"])


@st.composite
def rest_bodies(draw) -> dict:
    data = draw(st.lists(cells, max_size=6))
    shape = draw(st.one_of(st.just([len(data)]), st.lists(st.integers(-2, 8), max_size=3)))
    datatype = draw(st.sampled_from(["BYTES", "BYTES", "FP64", "INT32", "BOOL", "STRING"]))
    inputs = [{"name": "entity_id", "shape": shape, "datatype": datatype, "data": data}]
    for name in draw(st.lists(features, max_size=2)):
        column = draw(st.lists(st.one_of(st.floats(), st.integers(-5, 5), st.text(max_size=3)), max_size=6))
        inputs.append(
            {
                "name": name,
                "shape": [len(column)],
                "datatype": draw(st.sampled_from(["FP64", "FP32", "BYTES"])),
                "data": column,
            }
        )
    return {
        "inputs": inputs,
        "parameters": draw(st.sampled_from([{}, {"feature_sources": True}, {"feature_sources": "yes"}])),
    }


@pytest.fixture(scope="module")
def server(pg, tmp_path_factory):
    server = launch(tmp_path_factory.mktemp("fuzz"), pg, {"by-id": {}})
    yield from served(server)


def _still_serves(server) -> None:
    response = rest_by_id(server, "by-id", KNOWN)
    assert response.status_code == 200 and len(response.json()["outputs"][0]["data"]) == 3


def test_rest_entity_requests_never_get_a_server_error(server):
    session = requests.Session()
    url = f"{server.http_url}/v2/models/by-id/infer"

    @SETTINGS
    @given(body=rest_bodies())
    def prop(body):
        response = session.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=20)
        assert response.status_code in (200, 400, 422), (response.status_code, response.text[:300], body)
        assert "Traceback" not in response.text
        if response.status_code != 200:  # ours say "error"; FastAPI's own validation (422) "detail"
            document = response.json()
            assert document.get("error") or document.get("detail"), body

    prop()
    _still_serves(server)


def test_grpc_entity_requests_never_get_a_server_error(server):
    client = tgrpc.InferenceServerClient(url=server.grpc_url)

    @SETTINGS
    @given(
        values=st.lists(st.one_of(st.binary(max_size=140), ids.map(str.encode)), max_size=6),
        shape_delta=st.sampled_from([0, 0, 0, 1, -1]),
    )
    def prop(values, shape_delta):
        tensor = tgrpc.InferInput("entity_id", [max(0, len(values) + shape_delta)], "BYTES")
        tensor._raw_content = b"".join(len(v).to_bytes(4, "little") + v for v in values)  # any bytes, any count
        tensor._input.ClearField("contents")
        try:
            result = client.infer("by-id", [tensor])
            assert result.as_numpy("predict").shape == (len(values),)
        except InferenceServerException as error:
            assert error.status() == "StatusCode.INVALID_ARGUMENT", (error.status(), error.message(), values)

    prop()
    client.close()
    _still_serves(server)
