"""Your own pipeline, packaged and served: every supported scaler and every model family, fitted
on scikit-learn's bundled datasets, packaged with `pipeline_tools.package.write_model_dir`, served by one
real `mlserver start .` and asked over REST and gRPC. The served predictions equal scikit-learn's
own: labels exactly, numbers within 1e-9 relative.

This process imports the packaging code (no MLServer) and V2 clients only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.grpc as tgrpc
from sklearn.base import is_classifier
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris, load_wine
from sklearn.pipeline import make_pipeline

from harness.repository import make_repository
from harness.server import Server
from pipeline_tools.package import write_model_dir
from runtime.core.steps.registry import ESTIMATORS, TRANSFORMERS
from tests.packaging.support import assert_same_output

ROWS = 25


def _diabetes():
    return load_diabetes(return_X_y=True)


def _breast_cancer_strings():
    x, y = load_breast_cancer(return_X_y=True)
    return x, np.where(y == 1, "benign", "malignant")


def _iris_strings():
    x, y = load_iris(return_X_y=True)
    return x, np.asarray(load_iris().target_names)[y]


def _wine():
    return load_wine(return_X_y=True)


def _digits():
    return load_digits(return_X_y=True)


# Small, fast settings; probabilistic SGD; SVC with probabilities.
KWARGS: dict[str, dict[str, Any]] = {
    "SGDRegressor": {"random_state": 0},
    "SGDClassifier": {"loss": "log_loss", "random_state": 0},
    "LogisticRegression": {"max_iter": 5000},
    "SVC": {"probability": True, "random_state": 0},
    "RandomForestRegressor": {"n_estimators": 10, "random_state": 0},
    "RandomForestClassifier": {"n_estimators": 10, "random_state": 0},
    "ExtraTreesRegressor": {"n_estimators": 10, "random_state": 0},
    "ExtraTreesClassifier": {"n_estimators": 10, "random_state": 0},
    "GradientBoostingRegressor": {"n_estimators": 20, "random_state": 0},
    "GradientBoostingClassifier": {"n_estimators": 20, "random_state": 0},
    "HistGradientBoostingRegressor": {"max_iter": 20, "random_state": 0},
    "HistGradientBoostingClassifier": {"max_iter": 20, "random_state": 0},
    "DecisionTreeRegressor": {"random_state": 0},
    "DecisionTreeClassifier": {"random_state": 0},
}
CLASSIFIER_DATA = (_breast_cancer_strings, _iris_strings, _wine, _digits)


@dataclass(frozen=True)
class Case:
    name: str
    pipeline: Any
    x: np.ndarray


def _cases() -> list[Case]:
    """Every model family once, the scalers (and no scaler) in turn, the datasets in turn."""
    cases = []
    scalers = (None, *TRANSFORMERS.classes)
    classifier_index = 0
    for index, model_class in enumerate(ESTIMATORS.classes):
        scaler = scalers[index % len(scalers)]
        model = model_class(**KWARGS.get(model_class.__name__, {}))
        if is_classifier(model):
            load: Callable = CLASSIFIER_DATA[classifier_index % len(CLASSIFIER_DATA)]
            classifier_index += 1
        else:
            load = _diabetes
        x, y = load()
        steps = ([scaler()] if scaler else []) + [model]
        name = (
            f"{scaler.__name__.lower() if scaler else 'none'}-{model_class.__name__.lower()}-{load.__name__.strip('_')}"
        )
        cases.append(
            Case(name.replace("_", "-"), make_pipeline(*steps).fit(x, y), np.asarray(x[:ROWS], dtype=np.float64))
        )
    return cases


CASES = _cases()


def test_the_cases_cover_every_scaler_and_every_model_family():
    scalers = {type(c.pipeline[0]) for c in CASES if len(c.pipeline) == 2}
    assert scalers == set(TRANSFORMERS.classes) and any(len(c.pipeline) == 1 for c in CASES)
    assert {type(c.pipeline[-1]) for c in CASES} == set(ESTIMATORS.classes)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = make_repository(tmp_path_factory.mktemp("packaged") / "repo", workers=0)
    for case in CASES:
        write_model_dir(case.pipeline, case.name, "1", root / "models")
    server = Server.start(root / "server.log", root=root, models=[(c.name, "1") for c in CASES])
    yield server
    server.stop()


def _expected(case: Case) -> dict[str, np.ndarray]:
    model = case.pipeline[-1]
    offered = ("predict_proba", "decision_function") if is_classifier(model) else ()
    outputs = ["predict"] + [o for o in offered if hasattr(model, o)]
    return {o: np.asarray(getattr(case.pipeline, o)(case.x)) for o in outputs}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rest_answers_what_scikit_learn_answers(server, case):
    expected = _expected(case)
    body = {
        "inputs": [
            {"name": "features", "shape": list(case.x.shape), "datatype": "FP64", "data": case.x.ravel().tolist()}
        ],
        "outputs": [{"name": o} for o in expected],
    }
    response = requests.post(f"{server.http_url}/v2/models/{case.name}/versions/1/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    for output in response.json()["outputs"]:
        got = np.asarray(output["data"]).reshape(output["shape"])
        want = expected[output["name"]]
        if want.dtype.kind in "US":
            assert output["datatype"] == "BYTES"
        assert_same_output(case.name, output["name"], got, want)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_grpc_answers_what_scikit_learn_answers(server, case):
    expected = _expected(case)
    client = tgrpc.InferenceServerClient(server.grpc_url)
    try:
        tensor = tgrpc.InferInput("features", list(case.x.shape), "FP64")
        tensor.set_data_from_numpy(case.x)
        result = client.infer(
            case.name, [tensor], model_version="1", outputs=[tgrpc.InferRequestedOutput(o) for o in expected]
        )
    finally:
        client.close()
    for output, want in expected.items():
        got = result.as_numpy(output)
        if want.dtype.kind in "US":
            got = np.asarray([v.decode() for v in got.ravel()]).reshape(got.shape)
        assert_same_output(case.name, output, got, want)
