"""KServe's V1 paths (runtime.edge.v1_api): which endpoint and model a path (as routed) names, and the
guard's route for it, one parse for both; a table of instances is rows or records by its first."""

from __future__ import annotations

import pytest

from runtime.edge.guard import INFERENCE, OTHER, REPOSITORY, Route
from runtime.edge.v1_api import LIST, PREDICT, STATUS, V1Target, instances_are_rows, v1_route, v1_target


@pytest.mark.parametrize(
    "path,target",
    [
        ("/v1/models", V1Target(LIST, None)),
        ("/v1/models/diabetes", V1Target(STATUS, "diabetes")),
        ("/v1/models/diabetes:predict", V1Target(PREDICT, "diabetes")),
        ("/v1/models/a:b:predict", V1Target(PREDICT, "a:b")),  # the verb is the last ':' part
        # The verb is case-sensitive, as KServe's (Starlette's) routes: a model's status, which GET alone reads.
        ("/v1/models/diabetes:PREDICT", V1Target(STATUS, "diabetes:PREDICT")),
        ("/v1/models/:predict", V1Target(STATUS, ":predict")),
        ("/v1/models/diabetes:explain", V1Target(STATUS, "diabetes:explain")),
    ],
)
def test_v1_paths_name_an_endpoint_and_a_model(path, target):
    assert v1_target(path) == target


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/",
        "/v1//models",
        "/v1//models/diabetes:predict",
        "/v1/models//diabetes:predict",
        "/v1/models/diabetes/:predict",  # a decoded %2F: a name is one segment
        "/v1/models/diabetes:predict/",
        "/V1/models/diabetes:predict",
        "/v1/modelsx",
        "/v1",
        "/v2/models/diabetes",
    ],
)
def test_other_paths_are_not_v1(path):
    assert v1_target(path) is None and v1_route(path) is None


def test_the_guard_routes_each_endpoint_as_its_kind():
    assert v1_route("/v1/models") == Route(REPOSITORY)  # names what the repository index names
    assert v1_route("/v1/models/diabetes") == Route(OTHER, "diabetes")  # open, as V2's /ready
    assert v1_route("/v1/models/diabetes:predict") == Route(INFERENCE, "diabetes")  # the model's token


@pytest.mark.parametrize(
    "instances,by_rows", [([[1, 2]], True), ([{"a": 1}], False), ([[1], {"a": 1}], True), ([{"a": 1}, [1]], False)]
)
def test_instances_are_rows_or_records_as_the_first_is(instances, by_rows):
    assert instances_are_rows(instances, "instances") is by_rows


@pytest.mark.parametrize("first,kind", [(1.5, "a number"), ("x", "a string"), (None, "null"), (True, "a boolean")])
def test_an_instance_that_is_neither_is_refused_naming_row_0(first, kind):
    with pytest.raises(ValueError) as refused:
        instances_are_rows([first], "inputs")
    assert str(refused.value) == (
        f"input 'inputs': row 0: expected a list of the model's column values or an object of column: value, got {kind}"
    )
