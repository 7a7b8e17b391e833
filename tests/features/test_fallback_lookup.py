"""A request by entity id whose model fails, answered by its fallback, against a real PostgreSQL:
a fallback taking the same features uses the ones already looked up; one taking other features
looks them up in its own store, in its own order; one with other features and no store is a 503
that says why, never a wrong answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from harness.models import pipeline
from harness.repository import add_model, make_repository
from harness.server import served
from pipeline_tools.package import write_model_dir
from tests.features.support import grpc_by_id, rest_by_id, rows_of, store_options
from tests.reliability.support import FAILING_RUNTIME, launch

IDS = ["patient-0007", "patient-0210", "patient-0007"]
SMALL_FEATURES = ["bmi", "s5", "age"]  # a subset, in another order than the table's
SMALL_COLUMNS = [2, 8, 0]  # their columns in diabetes' feature order


@pytest.fixture(scope="module")
def small():
    data = load_diabetes()
    return make_pipeline(StandardScaler(), LinearRegression()).fit(data.data[:, SMALL_COLUMNS], data.target)


@pytest.fixture(scope="module")
def server(pg, tmp_path_factory, small):
    base = tmp_path_factory.mktemp("fallback-lookup")
    flag = base / "always-failing"
    flag.touch()
    root = make_repository(base / "repo", workers=0)
    dsn = pg.write_dsn_file(root / "features.dsn")
    for name, extra in (("small", store_options(dsn)), ("small-storeless", {})):
        settings_file = (
            write_model_dir(small, name, "1", root / "models", features=SMALL_FEATURES) / "model-settings.json"
        )
        settings = json.loads(settings_file.read_text())
        settings["parameters"]["extra"] = extra
        settings_file.write_text(json.dumps(settings))
    add_model(root, "twin", source="diabetes/2")  # diabetes' own features, no store
    for name, fallback in (("primary", "small"), ("twin-primary", "twin"), ("stranded", "small-storeless")):
        add_model(root, name, implementation=FAILING_RUNTIME, extra={**store_options(dsn), "fallback_model": fallback})
    ready = ["small", "small-storeless", "twin", "primary", "twin-primary", "stranded"]
    yield from served(launch(root, env={"FAILING_RUNTIME_FLAG": str(flag)}, ready=ready))


def test_a_fallback_with_other_features_looks_them_up_in_its_own_store(server, grpc, small):
    expected = small.predict(rows_of(IDS)[:, SMALL_COLUMNS])
    response = rest_by_id(server, "primary", IDS)
    assert response.status_code == 200, response.text
    assert response.json()["parameters"]["served_by"] == "small:1"
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected, rtol=1e-9)
    answer = grpc_by_id(grpc, "primary", IDS)
    np.testing.assert_allclose(answer.as_numpy("predict"), expected, rtol=1e-9)
    assert answer.get_response().parameters["served_by"].string_param == "small:1"


def test_a_fallback_with_the_same_features_uses_the_looked_up_ones(server):
    response = rest_by_id(server, "twin-primary", IDS)
    assert response.status_code == 200, response.text
    assert response.json()["parameters"]["served_by"] == "twin:1"
    np.testing.assert_allclose(
        response.json()["outputs"][0]["data"], pipeline("diabetes", "2").predict(rows_of(IDS)), rtol=1e-9
    )


def test_a_fallback_that_cannot_look_features_up_is_a_503_saying_why(server):
    response = rest_by_id(server, "stranded", IDS)
    assert response.status_code == 503, response.text
    assert "small-storeless" in response.text and "no feature store" in response.text
