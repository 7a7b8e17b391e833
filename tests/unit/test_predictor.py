"""The compiled prediction path against plain scikit-learn."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from sklearn.base import is_classifier
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.tree import DecisionTreeRegressor

from pipeline_tools.package import write_model_dir
from runtime.core.artifacts import LoadedPipeline, load_pipeline
from runtime.core.errors import NonFiniteOutputError
from runtime.core.predictor import compile_predictor, reference_rows
from runtime.core.steps import ensemble, linear_model
from runtime.core.steps.kinds import Affine, Estimator
from runtime.core.steps.registry import ESTIMATORS, TRANSFORMERS

SCALERS = TRANSFORMERS.classes
MODELS = ESTIMATORS.classes


def _with_fast_path(name: str) -> tuple[type, ...]:
    return tuple(k.cls for k in ESTIMATORS if k.fast_path is not None and k.fast_path.name == name)


LINEAR = _with_fast_path(linear_model.FOLDED_LINEAR)
LINEAR_REGRESSORS = tuple(c for c in LINEAR if not is_classifier(c()))
FORESTS = _with_fast_path(ensemble.TREE_LOOP)
KINDS: dict[type, Estimator] = {k.cls: k for k in ESTIMATORS}


def _sklearn_outputs(pipeline: LoadedPipeline, rows: np.ndarray) -> dict[str, np.ndarray]:
    scaled = pipeline.scaler.transform(rows) if pipeline.scaler is not None else rows
    return {o: getattr(pipeline.model, o)(scaled) for o in pipeline.manifest.outputs}


@pytest.mark.parametrize("name,version", [("diabetes", "1"), ("diabetes", "2"), ("breast-cancer", "1")])
def test_shipped_models_use_the_folded_path_and_match_sklearn(models_dir, name, version):
    pipeline = load_pipeline(models_dir / name / version)
    compiled = compile_predictor(pipeline)
    assert compiled.kind == "folded-linear"
    rows = reference_rows(pipeline, seed=7)
    got = compiled.predict(rows, tuple(compiled.outputs))
    for output, expected in _sklearn_outputs(pipeline, rows).items():
        assert got[output].shape == expected.shape
        np.testing.assert_allclose(got[output], expected, rtol=1e-9, atol=1e-12)


def test_disagreeing_fast_path_falls_back_to_sklearn(models_dir, monkeypatch, caplog):
    real_fold = linear_model.fold

    def skewed_fold(affine: Affine | None, coef: Any, intercept: Any) -> tuple[np.ndarray, np.ndarray]:
        folded = real_fold(affine, coef, intercept)
        assert folded is not None
        weights, bias = folded
        return weights * (1 + 1e-6), bias

    monkeypatch.setattr(linear_model, "fold", skewed_fold)
    pipeline = load_pipeline(models_dir / "diabetes" / "1")
    with caplog.at_level(logging.WARNING, logger="runtime.core.predictor"):
        compiled = compile_predictor(pipeline)
    assert compiled.kind == "sklearn"
    assert "serving it with scikit-learn instead" in caplog.text
    rows = reference_rows(pipeline, seed=1)
    np.testing.assert_allclose(
        compiled.predict(rows, ("predict",))["predict"], _sklearn_outputs(pipeline, rows)["predict"], rtol=1e-12
    )


def test_other_estimators_run_through_sklearn(models_dir):
    pipeline = load_pipeline(models_dir / "diabetes" / "1")
    data = load_diabetes()
    assert pipeline.scaler is not None
    tree = DecisionTreeRegressor(max_depth=3, random_state=0).fit(pipeline.scaler.transform(data.data), data.target)
    other = LoadedPipeline(manifest=pipeline.manifest, scaler=pipeline.scaler, model=tree)
    compiled = compile_predictor(other)
    assert compiled.kind == "sklearn"
    np.testing.assert_array_equal(
        compiled.predict(data.data, ("predict",))["predict"], _sklearn_outputs(other, data.data)["predict"]
    )


def test_without_scaler_the_folded_path_is_the_plain_model(tmp_path):
    x, y = load_diabetes(return_X_y=True)
    pipeline = load_pipeline(write_model_dir(LinearRegression().fit(x, y), "bare", "1", tmp_path))
    compiled = compile_predictor(pipeline)
    assert compiled.kind == "folded-linear"
    rows = reference_rows(pipeline, seed=3)
    np.testing.assert_allclose(compiled.predict(rows, ("predict",))["predict"], pipeline.model.predict(rows), rtol=1e-9)


@pytest.mark.parametrize(
    "name,outputs", [("diabetes", ("predict",)), ("breast-cancer", ("predict",)), ("breast-cancer", ("predict_proba",))]
)
def test_finite_inputs_that_overflow_are_refused_naming_the_row(models_dir, name, outputs):
    pipeline = load_pipeline(models_dir / name / "1")
    rows = np.zeros((3, pipeline.manifest.n_features))
    rows[2] = np.where(np.arange(rows.shape[1]) % 2, 1e308, -1e308)
    with pytest.raises(NonFiniteOutputError, match="row 2: the prediction is not finite"):
        compile_predictor(pipeline).predict(rows, outputs)


def _fitted(scaler_class, model_class, classes: str):
    if model_class in LINEAR_REGRESSORS or not hasattr(model_class, "predict_proba"):
        x, y = load_diabetes(return_X_y=True)
    elif classes == "binary strings":
        x, target = load_breast_cancer(return_X_y=True)
        y = np.where(target == 1, "benign", "malignant")
    else:
        x, y = load_wine(return_X_y=True)
    steps = ([scaler_class()] if scaler_class else []) + [model_class(**KINDS[model_class].examples[0])]
    return make_pipeline(*steps).fit(x, y), x


LINEAR_CASES = [
    pytest.param(scaler, model, classes, id=f"{scaler.__name__ if scaler else 'no-scaler'}-{model.__name__}-{classes}")
    for scaler in (None, *SCALERS)
    for model in LINEAR
    for classes in (("values",) if model in LINEAR_REGRESSORS else ("multiclass ints", "binary strings"))
]


@pytest.mark.parametrize("scaler_class,model_class,classes", LINEAR_CASES)
def test_every_scaler_folds_into_every_linear_model(tmp_path, scaler_class, model_class, classes):
    pipe, x = _fitted(scaler_class, model_class, classes)
    pipeline = load_pipeline(write_model_dir(pipe, "m", "1", tmp_path))
    compiled = compile_predictor(pipeline)
    assert compiled.kind == "folded-linear"
    got = compiled.predict(x, tuple(pipeline.manifest.outputs))
    for output in pipeline.manifest.outputs:
        expected = getattr(pipe, output)(x)
        if expected.dtype.kind in "fc":
            np.testing.assert_allclose(got[output], expected, rtol=1e-9, atol=1e-12)
        else:
            np.testing.assert_array_equal(got[output], expected)


@pytest.mark.parametrize("model_class", [m for m in MODELS if m not in LINEAR], ids=lambda c: c.__name__)
def test_other_families_run_scikit_learn_trees_or_estimators_exactly(tmp_path, model_class):
    pipe, x = _fitted(SCALERS[1], model_class, "multiclass ints")
    pipeline = load_pipeline(write_model_dir(pipe, "m", "1", tmp_path))
    compiled = compile_predictor(pipeline)
    fast_path = KINDS[model_class].fast_path
    assert compiled.kind == (fast_path.name if fast_path is not None else "sklearn")
    got = compiled.predict(x[:40], tuple(pipeline.manifest.outputs))
    for output in pipeline.manifest.outputs:
        np.testing.assert_array_equal(got[output], getattr(pipe, output)(x[:40]))


def test_a_forest_path_that_disagrees_falls_back_to_scikit_learn(tmp_path, monkeypatch, caplog):
    pipe, x = _fitted(None, next(c for c in FORESTS if is_classifier(c())), "binary strings")
    pipeline = load_pipeline(write_model_dir(pipe, "m", "1", tmp_path))
    monkeypatch.setattr(ensemble, "TREE_DTYPE", np.float16)  # coarser than scikit-learn's
    with caplog.at_level(logging.WARNING, logger="runtime.core.predictor"):
        compiled = compile_predictor(pipeline)
    assert compiled.kind == "sklearn" and "tree-loop fast path for output" in caplog.text
    np.testing.assert_array_equal(compiled.predict(x, ("predict",))["predict"], pipe.predict(x))
