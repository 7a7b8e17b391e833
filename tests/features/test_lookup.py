"""Requests by entity id against a real PostgreSQL, over REST and gRPC: the answer equals a
request that sends the same features; mixed requests; unknown, malformed and misplaced ids get a
400 naming them; defaults; where each row's features came from; the lookup's metrics."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from harness.models import dataset
from harness.server import served
from tests.features.support import grpc_by_id, launch, rest_by_features, rest_by_id, rows_of

IDS = ["patient-0003", "patient-0100", "patient-0441", "patient-0003"]  # a repeat on purpose
BMI = 2  # the column of 'bmi' in the manifest's feature order


@pytest.fixture(scope="module")
def server(pg, tmp_path_factory):
    defaults = dict(zip(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], [0.0] * 10))
    models = {
        "plain": None,
        "by-id": {},
        "uncached": {"cache_ttl_s": 0},
        "with-defaults": {"defaults": defaults},
    }
    server = launch(tmp_path_factory.mktemp("lookup"), pg, models)
    yield from served(server)


def _predictions(response) -> list[float]:
    assert response.status_code == 200, response.text
    return response.json()["outputs"][0]["data"]


def test_a_lookup_by_id_answers_as_the_same_features_sent_directly(server, grpc):
    direct = _predictions(rest_by_features(server, "plain", rows_of(IDS)))
    assert _predictions(rest_by_id(server, "by-id", IDS)) == direct
    assert _predictions(rest_by_id(server, "uncached", IDS)) == direct
    assert grpc_by_id(grpc, "by-id", IDS).as_numpy("predict").tolist() == direct


def test_features_sent_beside_the_ids_replace_the_looked_up_ones(server, grpc):
    bmi = np.array([0.05, -0.02, 0.0, 0.1])
    x = rows_of(IDS)
    x[:, BMI] = bmi
    direct = _predictions(rest_by_features(server, "plain", x))
    column = {"name": "bmi", "shape": [len(IDS)], "datatype": "FP64", "data": bmi.tolist()}
    assert _predictions(rest_by_id(server, "by-id", IDS, [column])) == direct
    assert grpc_by_id(grpc, "by-id", IDS, {"bmi": bmi}).as_numpy("predict").tolist() == direct


def test_the_response_says_where_each_rows_features_came_from_when_asked(server):
    ids = ["patient-0200", "patient-0201"]
    first = rest_by_id(server, "by-id", ids, parameters={"feature_sources": True})
    second = rest_by_id(server, "by-id", ids, parameters={"feature_sources": True})
    assert json.loads(first.json()["parameters"]["feature_sources"]) == {"rows": ["store", "store"], "from_request": []}
    assert json.loads(second.json()["parameters"]["feature_sources"]) == {
        "rows": ["cache", "cache"],
        "from_request": [],
    }
    assert "feature_sources" not in (rest_by_id(server, "by-id", ids).json().get("parameters") or {})
    unknown = rest_by_id(server, "with-defaults", ["patient-0001", "nobody"], parameters={"feature_sources": True})
    assert json.loads(unknown.json()["parameters"]["feature_sources"])["rows"] == ["store", "defaults"]
    expected = _predictions(rest_by_features(server, "plain", np.vstack([dataset("diabetes")[1], np.zeros(10)])))
    assert _predictions(unknown) == expected


def test_an_unknown_id_is_the_callers_mistake_naming_the_id_and_its_row(server, grpc):
    response = rest_by_id(server, "by-id", ["patient-0001", "patient-9999"])
    assert response.status_code == 400
    assert response.json()["error"] == "input 'entity_id': row 1: unknown entity id 'patient-9999'"
    with pytest.raises(InferenceServerException) as raised:
        grpc_by_id(grpc, "by-id", ["nobody"])
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "row 0: unknown entity id 'nobody'" in raised.value.message()


def test_a_null_in_a_column_that_may_not_be_missing_is_refused_naming_the_entity_and_feature(server, grpc, pg):
    pg.execute(
        "INSERT INTO diabetes_features SELECT 'patient-gap', age, sex, NULL, bp, s1, s2, s3, s4, s5, s6 "
        "FROM diabetes_features WHERE entity_id = 'patient-0003'"
    )
    try:
        response = rest_by_id(server, "by-id", ["patient-0003", "patient-gap"])
        assert response.status_code == 400, response.text
        assert response.json()["error"] == (
            "input 'entity_id': row 1: entity 'patient-gap' has no value for feature 'bmi' in the feature store"
        )
        with pytest.raises(InferenceServerException) as raised:
            grpc_by_id(grpc, "by-id", ["patient-gap"])
        assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "row 0: entity 'patient-gap' has no value for feature 'bmi'" in raised.value.message()
    finally:
        pg.execute("DELETE FROM diabetes_features WHERE entity_id = 'patient-gap'")


BAD_REQUESTS = [
    (
        "wrong datatype",
        "by-id",
        [{"name": "entity_id", "shape": [1], "datatype": "FP64", "data": [3.0]}],
        "input 'entity_id': datatype FP64; entity ids are sent as BYTES (strings)",
    ),
    (
        "empty id",
        "by-id",
        [{"name": "entity_id", "shape": [2], "datatype": "BYTES", "data": ["patient-0001", ""]}],
        "input 'entity_id': row 1: empty id",
    ),
    (
        "too long",
        "by-id",
        [{"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": ["x" * 129]}],
        "input 'entity_id': row 0: id longer than 128 bytes",
    ),
    (
        "empty batch",
        "by-id",
        [{"name": "entity_id", "shape": [0], "datatype": "BYTES", "data": []}],
        "input 'entity_id': no ids (empty batch)",
    ),
    (
        "2-D ids",
        "by-id",
        [{"name": "entity_id", "shape": [1, 1], "datatype": "BYTES", "data": [["patient-0001"]]}],
        "input 'entity_id': shape [1, 1]; entity ids are one 1-D tensor [N]",
    ),
    (
        "unknown feature beside",
        "by-id",
        [
            {"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": ["patient-0001"]},
            {"name": "height", "shape": [1], "datatype": "FP64", "data": [1.0]},
        ],
        "input 'height': beside 'entity_id' only 1-D feature inputs may be sent",
    ),
    (
        "feature rows disagree",
        "by-id",
        [
            {"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": ["patient-0001"]},
            {"name": "bmi", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
        ],
        "input 'bmi': shape [2], but 'entity_id' has 1 rows",
    ),
    (
        "NaN beside",
        "by-id",
        [
            {"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": ["patient-0001"]},
            {"name": "bmi", "shape": [1], "datatype": "FP32", "data": ["NaN"]},
        ],
        "input 'bmi'",
    ),
    (
        "a model without a store",
        "plain",
        [{"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": ["p"]}],
        "input 'entity_id': model 'plain' has no feature store; send the features themselves",
    ),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_malformed_ids_get_a_400_that_names_them(server, case):
    import requests

    _, model, inputs, message = case
    response = requests.post(f"{server.http_url}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=15)
    assert response.status_code in (400, 422), response.text
    assert message in response.text
    assert _predictions(rest_by_id(server, "by-id", ["patient-0001"]))  # and the server still serves


def test_grpc_refuses_malformed_ids_as_invalid_argument(server, grpc):
    for ids, message in (([""], "row 0: empty id"), (["ok", "x" * 200], "row 1: id longer than 128 bytes")):
        with pytest.raises(InferenceServerException) as raised:
            grpc_by_id(grpc, "by-id", ids)
        assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert message in raised.value.message()


def test_lookups_are_measured(server):
    def metric(name, **labels):
        return server.metric(name, model="uncached", **labels)

    before = {k: metric(k) for k in ("pipeline_feature_lookup_seconds_count", "pipeline_feature_rows_fetched_total")}
    misses = metric("pipeline_feature_cache_total", result="miss")
    unknown = metric("pipeline_feature_lookup_errors_total", kind="unknown_id")
    assert rest_by_id(server, "uncached", ["patient-0010", "patient-0011", "patient-0010"]).status_code == 200
    assert rest_by_id(server, "uncached", ["ghost"]).status_code == 400
    assert metric("pipeline_feature_lookup_seconds_count") == before["pipeline_feature_lookup_seconds_count"] + 2
    assert metric("pipeline_feature_rows_fetched_total") == before["pipeline_feature_rows_fetched_total"] + 2
    assert metric("pipeline_feature_cache_total", result="miss") == misses + 3  # distinct ids
    assert metric("pipeline_feature_lookup_errors_total", kind="unknown_id") == unknown + 1
    assert metric("pipeline_feature_store_breaker_state") == 0
    assert 1 <= metric("pipeline_feature_pool_connections", state="size") <= 4
    refused = server.metric("pipeline_requests_total", model="uncached", outcome="unknown_entity")
    assert refused >= 1  # a refused lookup is a request outcome like any other


def test_lookups_work_in_parallel_workers_each_with_its_own_pool(pg, tmp_path):
    # MLServer's default parallel_workers (1): the model, its pool and its lookups live in a worker.
    workers = launch(tmp_path, pg, {"plain": None, "by-id": {}}, workers=1)
    try:
        workers.wait_ready()
        direct = _predictions(rest_by_features(workers, "plain", rows_of(IDS)))
        assert _predictions(rest_by_id(workers, "by-id", IDS)) == direct
        client = tgrpc.InferenceServerClient(url=workers.grpc_url)
        assert grpc_by_id(client, "by-id", IDS).as_numpy("predict").tolist() == direct
        client.close()
        assert rest_by_id(workers, "by-id", ["ghost"]).status_code == 400
    finally:
        workers.kill()


def test_the_rest_fast_path_answers_lookups_as_mlservers_path_does(pg, tmp_path):
    """Requests by id take the REST fast path (runtime.integration.fast_path) unless it is off:
    the same answers either way (generated request ids aside), good and bad."""
    import re

    import requests

    servers = {}
    for fast in ("1", "0"):
        servers[fast] = launch(tmp_path / f"fast-{fast}", pg, {"by-id": {}}, env={"PIPELINE_FAST_PATH": fast})
    bodies: list[dict[str, Any]] = [
        {"inputs": [{"name": "entity_id", "shape": [2], "datatype": "BYTES", "data": IDS[:2]}]},
        {
            "inputs": [
                {"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": ["patient-0005"]},
                {"name": "bmi", "shape": [1], "datatype": "FP64", "data": [0.5]},
            ],
            "parameters": {"feature_sources": True},
        },
        {"inputs": [{"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": ["ghost"]}]},
        {"inputs": [{"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": [""]}]},
        {"inputs": [{"name": "entity_id", "shape": [2], "datatype": "BYTES", "data": ["patient-0001"]}]},
        {
            "inputs": [{"name": "entity_id", "shape": [1], "datatype": "BYTES", "data": ["patient-0001"]}],
            "parameters": {"feature_sources": "yes"},
        },
    ]
    uuid = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    try:
        for server in servers.values():
            server.wait_ready()
        for body in bodies:
            answers = [
                requests.post(f"{s.http_url}/v2/models/by-id/infer", json=body, timeout=15) for s in servers.values()
            ]
            on, off = ((a.status_code, uuid.sub(b"", a.content)) for a in answers)
            assert on == off, body
    finally:
        for server in servers.values():
            server.kill()
