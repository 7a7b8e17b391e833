"""The compiled prediction path against plain scikit-learn."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.tree import DecisionTreeRegressor

from runtime import predictor as predictor_module
from runtime.artifacts import LoadedPipeline, load_pipeline
from runtime.errors import NonFiniteOutputError
from runtime.predictor import compile_predictor, reference_rows
from runtime.train import SPECS, train_one


def _sklearn_outputs(pipeline: LoadedPipeline, rows: np.ndarray) -> dict[str, np.ndarray]:
    scaled = pipeline.scaler.transform(rows) if pipeline.scaler is not None else rows
    out = {"predict": pipeline.model.predict(scaled)}
    if pipeline.manifest.kind == "classifier":
        out["predict_proba"] = pipeline.model.predict_proba(scaled)
    return out


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
    real_fold = predictor_module._fold

    def skewed_fold(scaler, coef, intercept):
        weights, bias = real_fold(scaler, coef, intercept)
        return weights * (1 + 1e-6), bias

    monkeypatch.setattr(predictor_module, "_fold", skewed_fold)
    pipeline = load_pipeline(models_dir / "diabetes" / "1")
    with caplog.at_level(logging.WARNING, logger="runtime.predictor"):
        compiled = compile_predictor(pipeline)
    assert compiled.kind == "sklearn"
    assert "serving with scikit-learn instead" in caplog.text
    rows = reference_rows(pipeline, seed=1)
    np.testing.assert_allclose(compiled.predict(rows, ("predict",))["predict"], _sklearn_outputs(pipeline, rows)["predict"], rtol=1e-12)


def test_other_estimators_run_through_sklearn(models_dir):
    pipeline = load_pipeline(models_dir / "diabetes" / "1")
    data = load_diabetes()
    tree = DecisionTreeRegressor(max_depth=3, random_state=0).fit(pipeline.scaler.transform(data.data), data.target)
    other = LoadedPipeline(manifest=pipeline.manifest, scaler=pipeline.scaler, model=tree)
    compiled = compile_predictor(other)
    assert compiled.kind == "sklearn"
    np.testing.assert_array_equal(compiled.predict(data.data, ("predict",))["predict"], _sklearn_outputs(other, data.data)["predict"])


def test_without_scaler_the_folded_path_is_the_plain_model(tmp_path):
    spec = SPECS[0]
    spec = type(spec)(spec.name, spec.version, spec.load_data, spec.make_model, spec.kind, with_scaler=False)
    pipeline = load_pipeline(train_one(spec, tmp_path))
    compiled = compile_predictor(pipeline)
    rows = reference_rows(pipeline, seed=3)
    np.testing.assert_allclose(compiled.predict(rows, ("predict",))["predict"], pipeline.model.predict(rows), rtol=1e-9)


@pytest.mark.parametrize("name,outputs", [("diabetes", ("predict",)), ("breast-cancer", ("predict",)),
                                          ("breast-cancer", ("predict_proba",))])
def test_finite_inputs_that_overflow_are_refused_naming_the_row(models_dir, name, outputs):
    pipeline = load_pipeline(models_dir / name / "1")
    rows = np.zeros((3, pipeline.manifest.n_features))
    rows[2] = np.where(np.arange(rows.shape[1]) % 2, 1e308, -1e308)
    with pytest.raises(NonFiniteOutputError, match="row 2: the prediction is not finite"):
        compile_predictor(pipeline).predict(rows, outputs)
