"""POST /predict and /predict/{model} on a real server: the same answers as V2 (numbers exactly),
the same refusals with the same messages, the same auth, plus probabilities for classifiers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pytest
import requests

from harness.models import REPO_ROOT, pipeline, sample_rows
from harness.repository import add_model, link_model, make_repository
from harness.server import Server
from tests.integration import support

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
    # Which column is which class: the fitted estimator's order, as the model metadata says.
    assert doc["classes"] == pipeline("breast-cancer", "1").model.classes_.tolist()
    metadata = requests.get(f"{legacy.http_url}/v2/models/breast-cancer", timeout=20).json()
    assert json.loads(metadata["parameters"]["classes"]) == doc["classes"]


def _records(model: str, rows: np.ndarray) -> list[dict[str, Any]]:
    return support.records(pipeline(model, "1").feature_names, rows)


@pytest.mark.parametrize("model", ["diabetes", "breast-cancer"])
def test_records_are_answered_as_rows_are(legacy, model):
    rows = sample_rows(model, 5)
    by_rows = _predict(legacy, f"/predict/{model}", {"features": rows.tolist()})
    by_records = _predict(legacy, f"/predict/{model}", {"instances": _records(model, rows)})
    assert by_rows.status_code == by_records.status_code == 200, by_records.text
    for key in ("predictions", "probabilities", "classes", "model", "version"):
        assert by_records.json().get(key) == by_rows.json().get(key), key
    assert ("classes" in by_records.json()) == (model == "breast-cancer")


def _diabetes_records(n: int) -> list[dict[str, Any]]:
    return _records("diabetes", sample_rows("diabetes", n))


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda r: r[1].update(agee=1.0),
            "input 'instances': row 1: unknown column 'agee'; this model's columns: age, sex,",
        ),
        (lambda r: r[2].pop("bmi"), "input 'instances': row 2: missing column 'bmi'"),
        (
            lambda r: r.__setitem__(1, list(r[1].values())),
            "input 'instances': row 1: expected an object of column: value, got a list",
        ),
        (lambda r: r.__setitem__(0, None), "input 'instances': row 0: expected an object of column: value, got null"),
        # null passes through: the contract judges the column (this model takes no missing value)
        (lambda r: r[1].update(bmi=None), "input 'bmi': row 1: null"),
        (lambda r: r[2].update(s6="x"), "input 's6': row 2: expected a number, got a string"),
        (lambda r: r[1].update(bmi={"v": 1}), "input 'bmi': row 1: expected a number, got an object"),
        (lambda r: r[1].update(bmi=[1.0, 2.0]), "input 'bmi': row 1: expected a number, got a list"),
        (lambda r: r[0].update(bmi=True), "input 'bmi': row 0: expected a number, got a boolean"),
        # a column of strings goes as BYTES, for the contract to judge (with a gap, too)
        (lambda r: [x.update(s6=v) for x, v in zip(r, ["a", None, "b"], strict=True)], "input 's6'"),
    ],
)
def test_bad_records_are_refused_naming_row_and_column(legacy, edit, message):
    records = _diabetes_records(3)
    edit(records)
    answer = _predict(legacy, "/predict", {"instances": records})
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text


def test_rows_and_records_do_not_mix(legacy):
    records = _diabetes_records(1)
    both = _predict(legacy, "/predict", {"features": sample_rows("diabetes", 1).tolist(), "instances": records})
    assert both.status_code == 400 and "keys sent: 'features', 'instances'" in both.json()["error"], both.text
    a_record_as_a_row = _predict(legacy, "/predict", {"features": [[0.0] * 10, records[0]]})
    assert a_record_as_a_row.status_code == 400, a_record_as_a_row.text
    assert "input 'features': row 1: expected a list of numbers, got an object" in a_record_as_a_row.json()["error"]


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
