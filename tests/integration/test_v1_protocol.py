"""KServe's V1 protocol on a real server (issue 27, item 2): `POST /v1/models/{model}:predict` with
`{"instances": [...]}` answers every shipped model and packaged models with string columns and string
labels as their pipelines do, with plain `requests` as KServe's docs show and with KServe's own V1
client; `GET /v1/models/{model}` and `GET /v1/models` as KServe's server answers them; the same
refusals, auth, deadlines and metrics as V2."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from harness.models import REPO_ROOT, assert_parity, default_pipeline, pipeline, sample_rows, shipped_models
from harness.pipelines import CASES, UNSEEN, Case
from harness.repository import add_model, link_model, make_repository
from harness.server import Server
from pipeline_tools.package import write_model_dir
from tests.integration import support

TOKEN = "v1-token-5a1f"
# Models with string columns and string labels ("churn" / "stay"): gaps in numbers and strings and an
# unseen city taken (nested); string columns whose unseen values are refused (ordinal-forest).
STRING_MODELS = (CASES["nested"], CASES["ordinal-forest"])
TIMEOUT_S = 20


def _launch(request: pytest.FixtureRequest) -> Server:
    root = make_repository(request.getfixturevalue("tmp_path_factory").mktemp("v1") / "repo")
    link_model(root, "diabetes/1")
    add_model(root, "guarded", extra={"auth_token_env": "V1_TOKENS"})
    for case in STRING_MODELS:
        write_model_dir(case.fitted(), case.name, "1", root / "models", reference=case.training())
    models = [("diabetes", "1"), ("guarded", None)] + [(case.name, "1") for case in STRING_MODELS]
    env = {"V1_TOKENS": TOKEN, "PYTHONPATH": str(REPO_ROOT)}
    return Server.launch(root / "server.log", root=root, env=env, models=models)


SERVERS = {"v1": _launch}


@pytest.fixture
def v1(fleet) -> Server:
    return fleet["v1"]


def _predict(server: Server, model: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    """A V1 predict as KServe's docs send one: POST the JSON to /v1/models/{model}:predict."""
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    url = f"{server.http_url}/v1/models/{model}:predict"
    answer = requests.post(url, headers=headers, timeout=TIMEOUT_S, **kwargs)
    support.AUDIT.check(f"POST {url}", answer.content)
    return answer


def _v2_infer(server: Server, model: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(f"{server.http_url}/v2/models/{model}/infer", json=body, headers=headers, timeout=TIMEOUT_S)


def _json_table(frame: pd.DataFrame) -> list[list[Any]]:
    """A DataFrame's rows as JSON rows: null for a gap, in numbers and strings alike."""
    return [[None if isinstance(v, float) and math.isnan(v) else v for v in row] for row in frame.itertuples(False)]


# ------------------------------------------------------------------------------ every shipped model


@pytest.mark.parametrize("name", sorted(shipped_models()))
def test_every_shipped_model_answers_v1_as_its_pipeline(server, name):
    rows = sample_rows(name, 25, offset=7)
    expected = default_pipeline(name).predict(rows)
    by_rows = _predict(server, name, {"instances": rows.tolist()})
    assert by_rows.status_code == 200, by_rows.text
    assert set(by_rows.json()) == {"predictions"}
    assert_parity(by_rows.json()["predictions"], expected)
    by_records = _predict(server, name, {"instances": support.records(default_pipeline(name).feature_names, rows)})
    assert by_records.status_code == 200, by_records.text
    assert by_records.json() == by_rows.json()
    as_inputs = _predict(server, name, {"inputs": rows.tolist()})  # KServe's other key for the instances
    assert as_inputs.status_code == 200 and as_inputs.json() == by_rows.json(), as_inputs.text
    status = requests.get(f"{server.http_url}/v1/models/{name}", timeout=TIMEOUT_S)
    assert (status.status_code, status.json()) == (200, {"name": name, "ready": True})


@pytest.mark.parametrize("name", sorted(shipped_models()))
def test_kserves_own_v1_client_gets_the_pipelines_answers(server, kserve_clients, name):
    rows = sample_rows(name, 10, offset=3)
    answer = kserve_clients.call({"op": "v1_predict", "transport": "rest", "model": name, "instances": rows.tolist()})
    assert answer["ok"], answer
    assert_parity(answer["predictions"], default_pipeline(name).predict(rows))
    ready = kserve_clients.call({"op": "v1_ready", "transport": "rest", "model": name})
    assert ready == {"ok": True, "ready": True}
    unknown = kserve_clients.call({"op": "v1_ready", "transport": "rest", "model": "no-such-model"})
    assert not unknown["ok"] and unknown["status"] == 404, unknown


# ------------------------------------------------------------------------------ string columns and labels


@pytest.mark.parametrize("case", STRING_MODELS, ids=lambda c: c.name)
def test_a_model_with_string_columns_and_labels_answers_records_and_rows(v1, case: Case):
    frame = case.rows(60)
    expected = np.asarray(case.fitted().predict(frame)).astype(str)
    assert set(expected) == {"churn", "stay"}
    table = _json_table(frame)
    records = [dict(zip(case.columns, row, strict=True)) for row in table]
    by_records = _predict(v1, case.name, {"instances": records})
    assert by_records.status_code == 200, by_records.text
    np.testing.assert_array_equal(np.asarray(by_records.json()["predictions"]), expected)
    by_rows = _predict(v1, case.name, {"instances": table})
    assert by_rows.status_code == 200, by_rows.text
    assert by_rows.json() == by_records.json()


@pytest.mark.parametrize(
    "model,edit,message",
    [
        (
            "ordinal-forest",
            lambda r: r[1].update(city=UNSEEN["city"]),
            "input 'city': row 1: 'tokyo' is not a category this model was trained on",
        ),
        ("ordinal-forest", lambda r: r[0].update(city=3), "input 'city': row 0: expected a string, got the number 3"),
        ("ordinal-forest", lambda r: r[2].update(plan=None), "input 'plan': row 2: null"),
        ("nested", lambda r: r[1].update(age="old"), "input 'age': row 1: expected a number, got a string"),
        ("nested", lambda r: r[0].pop("city"), "input 'instances': row 0: missing column 'city'"),
        (
            "nested",
            lambda r: r.__setitem__(1, list(r[1].values())),
            "input 'instances': row 1: expected an object of column: value, got a list",
        ),
    ],
)
def test_bad_records_of_a_string_model_are_refused_naming_row_and_column(v1, model, edit, message):
    case = CASES[model]
    records = [dict(zip(case.columns, row, strict=True)) for row in _json_table(case.rows(3))]
    edit(records)
    answer = _predict(v1, model, {"instances": records})
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text


def test_rows_of_a_string_model_must_hold_every_column(v1):
    short = _predict(v1, "nested", {"instances": [[40.0, None]]})
    assert short.status_code == 400, short.text
    assert short.json()["error"] == "input 'instances': row 0 has 2 values, expected 3"


# ------------------------------------------------------------------------------ the contract's refusals


def _diabetes_records(n: int) -> list[dict[str, Any]]:
    return support.records(pipeline("diabetes", "1").feature_names, sample_rows("diabetes", n))


@pytest.mark.parametrize(
    "body,message",
    [
        ({"instances": [[0.0] * 9]}, "input 'instances': expected 10 features (columns), got 9"),
        ({"instances": [[0.0] * 10, [0.0] * 9]}, "input 'instances': row 1 has 9 values, expected 10"),
        (
            {"instances": [[0.0] * 9 + ["x"]]},
            "input 'instances': row 0, column 9 ('s6'): expected a number, got a string",
        ),
        ({"instances": [[0.0] * 9 + [None]]}, "row 0, column 9 ('s6'): null is not a number"),
        (
            {"instances": [[0.0] * 10, {"age": 1.0}]},
            "input 'instances': row 1: expected a list of numbers, got an object",
        ),
        (
            {"instances": [1.0, 2.0]},
            "input 'instances': row 0: expected a list of the model's column values or an object",
        ),
        ({"instances": []}, '"instances" must be a non-empty list of rows'),
        ({"rows": [[0.0] * 10]}, "keys sent: 'rows'"),
        ({"instances": [[0.0] * 10], "inputs": [[0.0] * 10]}, "keys sent: 'instances', 'inputs'"),
        ({"inputs": [[0.0] * 9]}, "input 'inputs': expected 10 features (columns), got 9"),
        ({"instances": [[0.0] * 10], "parameters": {}}, "keys sent: 'instances', 'parameters'"),
        (b"{not json", 'body is not JSON; send {"instances": [[...], ...]}'),
        (b"", "the request has no body"),  # refused by the guard, as on every inference route
    ],
)
def test_bad_bodies_get_the_contracts_messages(v1, body, message):
    answer = _predict(v1, "diabetes", body)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda r: r[1].update(agee=1.0),
            "input 'instances': row 1: unknown column 'agee'; this model's columns: age,",
        ),
        (lambda r: r[2].pop("bmi"), "input 'instances': row 2: missing column 'bmi'"),
        (lambda r: r[1].update(bmi=None), "input 'bmi': row 1: null"),
        (lambda r: r[0].update(bmi=True), "input 'bmi': row 0: expected a number, got a boolean"),
        (
            lambda r: r.__setitem__(2, [0.0] * 10),
            "input 'instances': row 2: expected an object of column: value, got a list",
        ),
    ],
)
def test_bad_records_are_refused_naming_row_and_column(v1, edit, message):
    records = _diabetes_records(3)
    edit(records)
    answer = _predict(v1, "diabetes", {"instances": records})
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text


def test_an_unknown_model_is_the_same_404_as_over_v2(v1):
    v1_unknown = _predict(v1, "no-such-model", {"instances": [[0.0] * 10]})
    v2_unknown = _v2_infer(v1, "no-such-model", {"inputs": []})
    assert v1_unknown.status_code == v2_unknown.status_code == 404
    assert v1_unknown.json() == v2_unknown.json()
    status = requests.get(f"{v1.http_url}/v1/models/no-such-model", timeout=TIMEOUT_S)
    v2_ready = requests.get(f"{v1.http_url}/v2/models/no-such-model/ready", timeout=TIMEOUT_S)
    assert status.status_code == 404 and status.json() == v2_ready.json() and "no-such-model" in status.json()["error"]


@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("GET", "/v1/models/diabetes:predict", "POST"),
        ("PUT", "/v1/models/diabetes:predict", "POST"),
        ("POST", "/v1/models/diabetes", "GET"),
        ("POST", "/v1/models", "GET"),
        ("POST", "/v1/models/diabetes:PREDICT", "GET"),  # the verb is case-sensitive: a model's status
    ],
)
def test_a_v1_route_with_a_wrong_method_is_a_405(v1, method, path, allowed):
    answer = requests.request(method, v1.http_url + path, json={"instances": [[0.0] * 10]}, timeout=TIMEOUT_S)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == allowed and answer.json() == {"error": f"{path}: use {allowed}"}


def test_a_malformed_deadline_is_the_same_400_as_over_v2(v1):
    headers = {"X-Request-Timeout-Ms": "soon"}
    over_v1 = _predict(v1, "diabetes", {"instances": [[0.01] * 10]}, headers)
    rows = {"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": [0.01] * 10}]}
    over_v2 = _v2_infer(v1, "diabetes", rows, headers)
    assert over_v1.status_code == over_v2.status_code == 400
    assert over_v1.json() == over_v2.json()


# ------------------------------------------------------------------------------ auth, list, metrics


def test_a_guarded_model_needs_its_token_over_v1(v1):
    rows = {"instances": [[0.01] * 10]}
    missing = _predict(v1, "guarded", rows)
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["error"], missing.text
    wrong = _predict(v1, "guarded", rows, {"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401, wrong.text
    served = _predict(v1, "guarded", rows, {"Authorization": f"Bearer {TOKEN}"})
    assert served.status_code == 200 and len(served.json()["predictions"]) == 1, served.text
    # Its status is as open as V2's /ready.
    status = requests.get(f"{v1.http_url}/v1/models/guarded", timeout=TIMEOUT_S)
    assert (status.status_code, status.json()) == (200, {"name": "guarded", "ready": True})


def test_the_model_list_names_every_ready_model_once(v1):
    answer = requests.get(f"{v1.http_url}/v1/models", timeout=TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    names = answer.json()["models"]
    assert sorted(names) == sorted(["diabetes", "guarded", *(case.name for case in STRING_MODELS)])


def _buckets(server: Server) -> dict[str, float]:
    return {
        dict(labels)["bucket"]: value
        for (name, labels), value in server.scrape().items()
        if name == "pipeline_prediction_bucket_total" and dict(labels)["model"] == "diabetes"
    }


def test_v1_predictions_are_counted_as_v2_ones_are(v1):
    rows = sample_rows("diabetes", 40, offset=200)
    before = _buckets(v1)
    v2 = {"inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]}
    assert _v2_infer(v1, "diabetes", v2).status_code == 200
    middle = _buckets(v1)
    assert _predict(v1, "diabetes", {"instances": rows.tolist()}).status_code == 200
    after = _buckets(v1)
    by_v2 = {b: middle[b] - before.get(b, 0.0) for b in middle}
    by_v1 = {b: after[b] - middle.get(b, 0.0) for b in after}
    assert by_v1 == by_v2 and sum(by_v1.values()) == len(rows)
