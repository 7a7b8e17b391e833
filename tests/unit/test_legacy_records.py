"""/predict's translation (runtime.edge.legacy_api over runtime.edge.v2_bridge): rows and records to
V2 inputs, each bad body refused with a message naming the row and the column, and the model's
metadata read for its columns and class order."""

from __future__ import annotations

import json

import pytest

from runtime.edge.legacy_api import FORMS, legacy_answer
from runtime.edge.v2_bridge import Answered, model_description, parse_body, record_inputs, row_inputs

NAMES = ("age", "bmi", "city")


def _body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_records_become_one_column_per_feature_in_the_models_order():
    records = [{"city": "paris", "bmi": 0.05, "age": 31}, {"bmi": None, "age": 40, "city": None}]
    form, table = parse_body(_body({"instances": records}), FORMS)
    assert form == "instances"
    assert record_inputs(table, NAMES, "instances") == [
        {"name": "age", "shape": [2], "datatype": "FP64", "data": [31, 40]},
        {"name": "bmi", "shape": [2], "datatype": "FP64", "data": [0.05, None]},  # null passed through
        {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["paris", None]},
    ]


def test_a_column_mixing_numbers_and_strings_goes_as_numbers_for_the_contract_to_refuse():
    (age,) = record_inputs([{"age": 1}, {"age": "x"}], ("age",), "instances")
    assert (age["datatype"], age["data"]) == ("FP64", [1, "x"])


def test_rows_stay_one_matrix():
    form, table = parse_body(_body({"features": [[1, 2, 3], [4, 5, 6]]}), FORMS)
    assert form == "features"
    assert row_inputs(table, "features") == [
        {"name": "features", "shape": [2, 3], "datatype": "FP64", "data": [[1, 2, 3], [4, 5, 6]]}
    ]


@pytest.mark.parametrize(
    "records,message",
    [
        (
            [{"age": 1, "bmi": 2, "city": "a"}, [1, 2, "a"]],
            "input 'instances': row 1: expected an object of column: value, got a list",
        ),
        ([None], "input 'instances': row 0: expected an object of column: value, got null"),
        (
            [{"age": 1, "bmi": 2, "city": "a"}, 5],
            "input 'instances': row 1: expected an object of column: value, got a number",
        ),
        (
            [{"age": 1, "bmi": 2, "city": "a"}, {"age": 1, "bmi": 2, "city": "a", "ag": 3}],
            "input 'instances': row 1: unknown column 'ag'; this model's columns: age, bmi, city",
        ),
        ([{"age": 1, "city": "a"}], "input 'instances': row 0: missing column 'bmi' (a missing value is sent as null)"),
    ],
)
def test_bad_records_are_refused_naming_row_and_column(records, message):
    with pytest.raises(ValueError) as refused:
        record_inputs(records, NAMES, "instances")
    assert str(refused.value) == message


@pytest.mark.parametrize(
    "body,message",
    [
        (_body({"features": [[1]], "instances": [{"age": 1}]}), "keys sent: 'features', 'instances'"),
        (_body({"rows": [[1]]}), 'body must be exactly {"features": [[...], ...]}'),
        (_body({}), "keys sent: none"),
        (_body([[1]]), "keys sent: none"),
        (_body({"instances": []}), '"instances" must be a non-empty list of rows'),
        (_body({"instances": {"age": 1}}), '"instances" must be a non-empty list of rows'),
        (b"{not json", 'body is not JSON; send {"features": [[...], ...]}'),
    ],
)
def test_bad_bodies_are_refused(body, message):
    with pytest.raises(ValueError) as refused:
        parse_body(body, FORMS)
    assert message in str(refused.value)


def test_a_record_among_rows_is_refused_naming_the_row():
    with pytest.raises(ValueError, match=r"input 'features': row 1: expected a list of numbers, got an object"):
        row_inputs([[1, 2], {"age": 1}], "features")


def test_the_metadata_gives_columns_outputs_and_class_order():
    classifier = {
        "inputs": [{"name": "features", "parameters": {"feature_names": "age,bmi,city"}}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
        "parameters": {"content_type": "np", "classes": '["no", "yes"]'},
    }
    described = model_description(classifier)
    assert (described.feature_names, described.offers_proba, described.classes) == (NAMES, True, ["no", "yes"])
    regressor = {"inputs": classifier["inputs"], "outputs": [{"name": "predict"}]}
    assert model_description(regressor).classes is None and not model_description(regressor).offers_proba


def test_the_answer_names_the_class_of_each_probability_column():
    v2 = {
        "model_name": "m",
        "model_version": "1",
        "outputs": [
            {"name": "predict", "shape": [2], "data": [1, 0]},
            {"name": "predict_proba", "shape": [2, 2], "data": [0.25, 0.75, 0.5, 0.5]},
        ],
    }
    answer = legacy_answer(Answered([], v2), [0, 1])
    assert answer["probabilities"] == [[0.25, 0.75], [0.5, 0.5]] and answer["classes"] == [0, 1]
    regression = {"model_name": "m", "outputs": [{"name": "predict", "shape": [1], "data": [2.5]}]}
    assert "classes" not in legacy_answer(Answered([], regression), None)
