"""Pipelines of any scikit-learn types over numeric columns (the manifest's pipeline form), with gaps:
each packaged with `write_model_dir`, served by one real `mlserver start .` and asked over REST and
gRPC. Answers equal the pipeline's own on rows with missing values where the schema allows them; a
missing value where it does not is refused on both protocols naming the column and the row.

This process imports the packaging code (no MLServer) and V2 clients only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.grpc as tgrpc
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_selection import SelectKBest
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, PolynomialFeatures, StandardScaler
from sklearn.svm import SVC
from tritonclient.utils import InferenceServerException

from harness.repository import make_repository
from harness.server import Server
from pipeline_tools.package import PackagingError, write_model_dir
from runtime.core.artifacts import load_pipeline
from tests.packaging.support import assert_same_output

ROWS = 40
COLUMNS = list("abcdefgh")


def _classification() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    return x[:, : len(COLUMNS)], y


def _regression() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_diabetes(return_X_y=True)
    return x[:, : len(COLUMNS)], y


def _positive_regression() -> tuple[np.ndarray, np.ndarray]:
    x, y = _regression()
    return np.abs(x), y


def _gapped(x: np.ndarray, columns: tuple[int, ...]) -> np.ndarray:
    """x with a tenth of each given column missing."""
    gapped = np.array(x, dtype=np.float64)
    for col in columns:
        gapped[col::10, col] = np.nan
    return gapped


@dataclass(frozen=True)
class Case:
    name: str
    pipeline: Any
    x: np.ndarray  # the rows asked, with gaps where the schema allows them
    missing: tuple[bool, ...]  # the schema the packager is expected to write
    frame: bool = False  # fitted on a DataFrame of COLUMNS


def _case(name: str, pipeline: Any, data: Any, gaps: tuple[int, ...] = (), frame: bool = False) -> Case:
    x, y = data()
    train = _gapped(x, gaps)
    pipeline.fit(pd.DataFrame(train, columns=COLUMNS) if frame else train, y)
    missing = tuple(i in gaps for i in range(x.shape[1]))
    return Case(name, pipeline, _gapped(x[:ROWS], gaps), missing, frame)


ALL = tuple(range(len(COLUMNS)))
CASES = [
    _case(
        "imputer-scaler-logistic",
        make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=5000)),
        _classification,
        gaps=ALL,
    ),
    _case("poly-scaler-ridge", make_pipeline(PolynomialFeatures(2), StandardScaler(), Ridge()), _regression),
    _case(
        "scaler-pca-svc",
        make_pipeline(StandardScaler(), PCA(5), SVC(probability=True, random_state=0)),
        _classification,
    ),
    _case("knn-imputer-knn", make_pipeline(KNNImputer(), KNeighborsClassifier()), _classification, gaps=ALL),
    _case(
        "union-logistic",
        make_pipeline(
            FeatureUnion([("pca", PCA(3)), ("kbest", SelectKBest(k=4))]),
            StandardScaler(),
            LogisticRegression(max_iter=5000),
        ),
        _classification,
    ),
    _case(
        "columns-nested-passthrough",
        Pipeline(
            [
                (
                    "prep",
                    ColumnTransformer(
                        [("num", make_pipeline(SimpleImputer(), StandardScaler()), ["a", "b", "c"])],
                        remainder="passthrough",
                    ),
                ),
                ("clf", LogisticRegression(max_iter=5000)),
            ]
        ),
        _classification,
        gaps=(0, 1, 2),
        frame=True,
    ),
    _case("hist-gradient-boosting-nan", HistGradientBoostingClassifier(max_iter=20), _classification, gaps=ALL),
    _case("log1p-ridge", make_pipeline(FunctionTransformer(np.log1p), Ridge()), _positive_regression),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = make_repository(tmp_path_factory.mktemp("pipelines") / "repo", workers=0)
    for case in CASES:
        reference = np.abs(case.x) if case.name.startswith("log1p") else None
        write_model_dir(case.pipeline, case.name, "1", root / "models", reference=reference)
    server = Server.start(root / "server.log", root=root, models=[(c.name, "1") for c in CASES])
    yield server
    server.stop()


def _expected(case: Case) -> dict[str, np.ndarray]:
    offered = ("predict_proba", "decision_function") if is_classifier(case.pipeline) else ()
    outputs = ["predict"] + [o for o in offered if hasattr(case.pipeline, o)]
    x = pd.DataFrame(case.x, columns=COLUMNS) if case.frame else case.x
    return {o: np.asarray(getattr(case.pipeline, o)(x)) for o in outputs}


def _json_rows(x: np.ndarray) -> list[Any]:
    """The rows as JSON data, a missing value as null."""
    return [None if np.isnan(v) else float(v) for v in x.ravel()]


def _rest(server: Server, case: Case, x: np.ndarray, outputs: list[str]) -> requests.Response:
    body: dict[str, Any] = {
        "inputs": [{"name": "features", "shape": list(x.shape), "datatype": "FP64", "data": _json_rows(x)}],
        "outputs": [{"name": o} for o in outputs],
    }
    return requests.post(f"{server.http_url}/v2/models/{case.name}/versions/1/infer", json=body, timeout=30)


def _grpc(server: Server, case: Case, x: np.ndarray, outputs: list[str]) -> Any:
    client = tgrpc.InferenceServerClient(server.grpc_url)
    try:
        tensor = tgrpc.InferInput("features", list(x.shape), "FP64")
        tensor.set_data_from_numpy(x)
        return client.infer(
            case.name, [tensor], model_version="1", outputs=[tgrpc.InferRequestedOutput(o) for o in outputs]
        )
    finally:
        client.close()


def test_the_cases_have_gaps_where_their_schema_allows_them():
    for case in CASES:
        assert np.isnan(case.x).any() == any(case.missing), case.name


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_schema_records_which_columns_may_be_missing(server, case):
    manifest = load_pipeline(server.root / "models" / case.name / "1").manifest
    assert tuple(manifest.may_be_missing) == case.missing
    assert [c.kind for c in manifest.columns] == ["numeric"] * len(COLUMNS)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rest_answers_what_the_pipeline_answers(server, case):
    expected = _expected(case)
    response = _rest(server, case, case.x, list(expected))
    assert response.status_code == 200, response.text
    for output in response.json()["outputs"]:
        assert_same_output(
            case.name, output["name"], np.asarray(output["data"]).reshape(output["shape"]), expected[output["name"]]
        )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_grpc_answers_what_the_pipeline_answers(server, case):
    expected = _expected(case)
    result = _grpc(server, case, case.x, list(expected))
    for output, want in expected.items():
        assert_same_output(case.name, output, result.as_numpy(output), want)


def _refusable(case: Case) -> int | None:
    """A column of the case that may not be missing, if any."""
    return next((i for i, m in enumerate(case.missing) if not m), None)


REFUSING = [c for c in CASES if _refusable(c) is not None]


@pytest.mark.parametrize("case", REFUSING, ids=[c.name for c in REFUSING])
def test_a_gap_where_none_may_be_is_refused_on_both_protocols(server, case):
    col = _refusable(case)
    assert col is not None
    x = np.nan_to_num(case.x[:4], nan=0.5)
    x[2, col] = np.nan
    name = COLUMNS[col] if case.frame else f"x{col}"
    where = f"row 2, column {col} ('{name}')"
    response = _rest(server, case, x, ["predict"])
    assert response.status_code == 400 and where in response.text and "null is not a number" in response.text
    with pytest.raises(InferenceServerException) as caught:
        _grpc(server, case, x, ["predict"])
    assert "INVALID_ARGUMENT" in str(caught.value.status()) and where in caught.value.message()
    assert "NaN is not allowed" in caught.value.message()


def test_an_arbitrary_function_is_refused_in_one_line(tmp_path):
    x, y = _regression()
    pipeline = make_pipeline(FunctionTransformer(lambda v: v), Ridge()).fit(x, y)
    with pytest.raises(PackagingError) as caught:
        write_model_dir(pipeline, "lambda", "1", tmp_path)
    message = str(caught.value)
    assert "'functiontransformer' (FunctionTransformer)" in message and "not a numpy ufunc" in message
    assert "\n" not in message and not (tmp_path / "lambda" / "1").exists()
