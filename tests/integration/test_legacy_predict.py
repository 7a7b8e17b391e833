"""POST /predict and /predict/{model} on a real server: the same answers as V2 (numbers exactly),
the same refusals with the same messages, the same auth, plus probabilities for classifiers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pytest
import requests

from harness.models import REPO_ROOT, sample_rows
from harness.repository import add_model, link_model, make_repository
from harness.server import Server

TOKEN = "legacy-token-2c7e"


def _launch(request: pytest.FixtureRequest) -> Server:
    root = make_repository(request.getfixturevalue("tmp_path_factory").mktemp("legacy") / "repo")
    link_model(root, "diabetes/1")
    link_model(root, "breast-cancer/1")
    add_model(root, "guarded", extra={"auth_token_env": "LEGACY_TOKENS"})
    env = {"PIPELINE_DEFAULT_MODEL": "diabetes", "LEGACY_TOKENS": TOKEN, "PYTHONPATH": str(REPO_ROOT)}
    return Server.launch(
        root / "server.log", root=root, env=env, models=[("diabetes", "1"), ("breast-cancer", "1"), ("guarded", None)]
    )


SERVERS = {"legacy": _launch}


@pytest.fixture
def legacy(fleet) -> Server:
    return fleet["legacy"]


def _predict(server: Server, path: str, body, headers=None) -> requests.Response:
    kwargs = {"json": body} if not isinstance(body, bytes) else {"data": body}
    return requests.post(f"{server.http_url}{path}", headers=headers, timeout=20, **kwargs)


def _v2(server: Server, model: str, rows: np.ndarray, outputs: list[str]) -> dict:
    body: dict[str, Any] = {
        "inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}],
        "outputs": [{"name": o} for o in outputs],
    }
    response = requests.post(f"{server.http_url}/v2/models/{model}/infer", json=body, timeout=20)
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


def test_the_default_model_answers_as_v2_does(legacy):
    rows = sample_rows("diabetes", 3)
    answer = _predict(legacy, "/predict", {"features": rows.tolist()})
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["predictions"] == _v2(legacy, "diabetes", rows, ["predict"])["predict"]
    assert (doc["model"], doc["version"]) == ("diabetes", "1") and "probabilities" not in doc
    assert datetime.fromisoformat(doc["timestamp"]).tzinfo is not None


def test_a_classifier_answers_with_probabilities(legacy):
    rows = sample_rows("breast-cancer", 2)
    doc = _predict(legacy, "/predict/breast-cancer", {"features": rows.tolist()}).json()
    v2 = _v2(legacy, "breast-cancer", rows, ["predict", "predict_proba"])
    assert doc["predictions"] == v2["predict"]
    assert doc["probabilities"] == [v2["predict_proba"][0:2], v2["predict_proba"][2:4]]


@pytest.mark.parametrize(
    "body,status,message",
    [
        ({"features": [[0.0] * 9]}, 400, "input 'features': expected 10 features (columns), got 9"),
        ({"features": [[0.0] * 10, [0.0] * 9]}, 400, "input 'features': row 1 has 9 values, expected 10"),
        ({"features": [[0.0] * 9 + ["x"]]}, 400, "row 0, column 9 ('s6'): expected a number, got a string"),
        ({"features": [[0.0] * 9 + [None]]}, 400, "row 0, column 9 ('s6'): null is not a number"),
        ({"rows": [[0.0] * 10]}, 400, 'body must be exactly {"features": [[...], ...]}'),
        ({"features": []}, 400, '"features" must be a non-empty list of rows'),
        (b"{not json", 400, "body is not JSON"),
    ],
)
def test_bad_bodies_get_the_contracts_messages(legacy, body, status, message):
    answer = _predict(legacy, "/predict", body)
    assert answer.status_code == status and message in answer.json()["error"], answer.text


def test_unknown_models_and_auth_behave_as_over_v2(legacy):
    unknown = _predict(legacy, "/predict/nope", {"features": [[0.0] * 10]})
    v2_unknown = requests.post(f"{legacy.http_url}/v2/models/nope/infer", json={"inputs": []}, timeout=20)
    assert unknown.status_code == v2_unknown.status_code == 404
    assert unknown.json() == v2_unknown.json()
    refused = _predict(legacy, "/predict/guarded", {"features": [[0.0] * 10]})
    assert refused.status_code == 401 and "missing bearer token" in refused.json()["error"]
    ok = _predict(legacy, "/predict/guarded", {"features": [[0.0] * 10]}, {"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
