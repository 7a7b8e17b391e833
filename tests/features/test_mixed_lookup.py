"""A model with string columns and gaps (harness.mixed_model) looking its features up by entity id in
a real PostgreSQL table with TEXT and NULL cells, over REST and gRPC: the answers equal the pipeline's
own on the same rows; TEXT is a string, NULL a gap where the schema allows one; columns sent beside the
ids replace the looked-up ones; a stored value of the wrong kind, an unseen category the encoder would
raise on and a NULL where none may be are each a 400 / INVALID_ARGUMENT naming the entity or column."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tritonclient.utils import InferenceServerException

from harness import mixed_model
from harness.postgres import load_table
from harness.server import served
from tests.features.support import grpc_by_id, launch, rest_by_id
from tests.packaging.support import assert_same_output

TABLE = "mixed_features"
ROWS = 40
IDS = [f"c-{i:03d}" for i in range(ROWS)]
# Beside the model's columns, a numeric feature kept as TEXT and a string one kept as a number: models
# that read them (through `columns`) find a stored value of the wrong kind.
EXTRA = [("score_text", "text"), ("city_code", "integer")]
SQL_TYPES = {"age": "double precision", "income": "double precision", "score": "double precision"}
# Rows the tests refuse: a city the encoder never saw, and NULLs where the schema allows none.
ODD: dict[str, dict[str, Any]] = {
    "c-unseen": {"city": "tokyo"},
    "c-nocity": {"city": None},
    "c-noscore": {"score": None},
}
DEFAULTS = {"age": 40.0, "income": 50.0, "score": 0.5, "city": "paris", "plan": "pro"}
PROBA = ("predict_proba",)


def _frame() -> pd.DataFrame:
    return mixed_model.rows(ROWS, seed=3)


def _cell(value: Any) -> Any:
    """NaN (a pandas gap) as NULL."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _table_rows(frame: pd.DataFrame) -> list[tuple[str, list[Any]]]:
    rows = []
    for entity, record in zip(IDS, frame.to_dict("records")):
        values = [_cell(record[c]) for c in mixed_model.COLUMNS]
        rows.append((entity, [*values, str(record["score"]), 1]))
    base = frame.iloc[0].to_dict()
    for entity, changes in ODD.items():
        record = {**base, **changes}
        rows.append((entity, [*(_cell(record[c]) for c in mixed_model.COLUMNS), "0.5", 1]))
    return rows


@pytest.fixture(scope="module")
def server(pg, tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    columns = [(c, SQL_TYPES.get(c, "text")) for c in mixed_model.COLUMNS] + EXTRA
    load_table(pg, TABLE, columns, _table_rows(_frame()))
    model_dir = mixed_model.write(root / "packaged")
    models: dict[str, dict[str, Any] | None] = {
        "by-id": {"table": TABLE},
        "text-score": {"table": TABLE, "columns": {"score": "score_text"}},
        "number-city": {"table": TABLE, "columns": {"city": "city_code"}},
        "with-defaults": {"table": TABLE, "defaults": DEFAULTS},
    }
    server = launch(root / "repo", pg, models, source=str(model_dir))
    yield from served(server)


@pytest.fixture(scope="module")
def pipeline():
    return mixed_model.pipeline()


def _proba(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    output = next(o for o in response.json()["outputs"] if o["name"] == "predict_proba")
    return np.array(output["data"], dtype=np.float64).reshape(output["shape"])


def _refused_on_both(server, grpc, model: str, ids: list[str], message: str) -> None:
    response = rest_by_id(server, model, ids)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    with pytest.raises(InferenceServerException) as raised:
        grpc_by_id(grpc, model, ids)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in raised.value.message()


def test_text_and_null_cells_answer_as_the_pipeline_does_on_the_same_rows(server, grpc, pipeline):
    frame = _frame()
    assert frame.isna().any().any()  # gaps in age, income and plan
    expected = pipeline.predict_proba(frame)
    assert_same_output("rest", "predict_proba", _proba(rest_by_id(server, "by-id", IDS, outputs=PROBA)), expected)
    got = grpc_by_id(grpc, "by-id", IDS, outputs=PROBA).as_numpy("predict_proba")
    assert_same_output("grpc", "predict_proba", got, expected)


def test_columns_sent_beside_the_ids_replace_the_looked_up_ones(server, grpc, pipeline):
    ids = IDS[:6]
    frame = _frame().iloc[:6].reset_index(drop=True)
    cities = ["rome", "oslo", "paris", "rome", "london", "oslo"]
    ages = [20.0, 70.0, 35.5, 41.0, 60.0, 18.0]
    frame["city"], frame["age"] = cities, ages
    expected = pipeline.predict_proba(frame)
    beside = [
        {"name": "city", "shape": [6], "datatype": "BYTES", "data": cities},
        {"name": "age", "shape": [6], "datatype": "FP64", "data": ages},
    ]
    rest = _proba(rest_by_id(server, "by-id", ids, beside, outputs=PROBA))
    assert_same_output("rest", "predict_proba", rest, expected)
    columns = {"city": np.array(cities, dtype=object), "age": np.array(ages)}
    got = grpc_by_id(grpc, "by-id", ids, columns, outputs=PROBA).as_numpy("predict_proba")
    assert_same_output("grpc", "predict_proba", got, expected)
    # A gap sent beside the ids where the column may be missing (JSON null in a string column).
    plans = [None, "pro", None, "free", "team", None]
    frame["plan"] = [np.nan if p is None else p for p in plans]
    plan = {"name": "plan", "shape": [6], "datatype": "BYTES", "data": plans}
    gapped = _proba(rest_by_id(server, "by-id", ids, [*beside, plan], outputs=PROBA))
    assert_same_output("rest", "predict_proba", gapped, pipeline.predict_proba(frame))


def test_a_stored_value_of_the_wrong_kind_is_refused_naming_the_entity_and_feature(server, grpc):
    score = str(_frame()["score"][0])
    _refused_on_both(
        server,
        grpc,
        "text-score",
        IDS[:2],
        f"row 0: entity 'c-000' has the text {score!r} for feature 'score', a numeric",
    )
    _refused_on_both(
        server, grpc, "number-city", IDS[1:2], "row 0: entity 'c-001' has the number 1.0 for feature 'city', a string"
    )
    # A column sent beside the ids replaces the stored one: its kind no longer matters.
    beside = [{"name": "score", "shape": [1], "datatype": "FP64", "data": [0.3]}]
    assert rest_by_id(server, "text-score", IDS[:1], beside).status_code == 200


def test_an_unseen_category_or_a_null_where_none_may_be_is_refused(server, grpc):
    _refused_on_both(
        server, grpc, "by-id", [IDS[0], "c-unseen"], "input 'city': row 1: 'tokyo' is not a category this model"
    )
    _refused_on_both(server, grpc, "by-id", ["c-nocity"], "entity 'c-nocity' has no value for feature 'city'")
    _refused_on_both(server, grpc, "by-id", ["c-noscore"], "entity 'c-noscore' has no value for feature 'score'")
    # A wrong column beside the ids gets the contract's own message.
    wrong = [{"name": "city", "shape": [1], "datatype": "FP64", "data": [3.0]}]
    response = rest_by_id(server, "by-id", IDS[:1], wrong)
    assert response.status_code == 400
    assert "input 'city': datatype FP64, but column 'city' holds strings; send it as BYTES" in response.json()["error"]


def test_defaults_may_hold_text_for_a_string_column(server, grpc, pipeline):
    expected = pipeline.predict_proba(pd.DataFrame([DEFAULTS]))
    response = rest_by_id(server, "with-defaults", ["nobody"], outputs=PROBA, parameters={"feature_sources": True})
    assert_same_output("rest", "predict_proba", _proba(response), expected)
    assert '"defaults"' in response.json()["parameters"]["feature_sources"]
    filled = pipeline.predict_proba(pd.DataFrame([{**_frame().iloc[0].to_dict(), "city": "paris"}]))
    assert_same_output(
        "rest", "predict_proba", _proba(rest_by_id(server, "with-defaults", ["c-nocity"], outputs=PROBA)), filled
    )
