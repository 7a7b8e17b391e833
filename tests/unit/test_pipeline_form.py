"""The pipeline form: any fitted pipeline of scikit-learn types over numeric columns packaged whole,
its input schema (which columns may be missing), the types it may hold and its served answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_selection import SelectKBest
from sklearn.impute import KNNImputer, MissingIndicator, SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, SplineTransformer, StandardScaler

from pipeline_tools.package import PackagingError, write_model_dir
from pipeline_tools.pipeline_walk import may_be_missing
from runtime.core.artifacts import MANIFEST_FILE, Manifest, load_pipeline, trusted_type
from runtime.core.errors import ArtifactError
from runtime.core.predictor import compile_predictor

X, Y = load_breast_cancer(return_X_y=True)
X = X[:, :6]
GAPPED = X.copy()
GAPPED[::5, 1] = np.nan


@pytest.mark.parametrize(
    "pipeline,expected",
    [
        (make_pipeline(SimpleImputer(), LogisticRegression()), [True] * 6),
        (make_pipeline(StandardScaler(), KNNImputer(), LogisticRegression()), [True] * 6),
        (make_pipeline(StandardScaler(), LogisticRegression()), [False] * 6),
        (make_pipeline(SimpleImputer(missing_values=-1.0), LogisticRegression()), [False] * 6),
        (make_pipeline(PCA(2), HistGradientBoostingRegressor()), [False] * 6),
        (make_pipeline(MinMaxScaler(), HistGradientBoostingRegressor()), [True] * 6),
        (
            make_pipeline(FeatureUnion([("imp", SimpleImputer()), ("ind", MissingIndicator())]), LinearRegression()),
            [True] * 6,
        ),
        (make_pipeline(FeatureUnion([("imp", SimpleImputer()), ("pca", PCA(2))]), LinearRegression()), [False] * 6),
        (
            make_pipeline(
                ColumnTransformer([("imp", SimpleImputer(), [0, 1]), ("drop", "drop", [5])], remainder="passthrough"),
                LinearRegression(),
            ),
            [True, True, False, False, False, True],
        ),
    ],
    ids=[
        "imputer",
        "scaler-then-knn-imputer",
        "scaler",
        "imputer-of-another-marker",
        "pca-then-hgb",
        "scaler-hgb",
        "union-of-imputers",
        "union-with-pca",
        "columns",
    ],
)
def test_which_columns_may_be_missing_is_read_from_the_pipeline(pipeline, expected):
    fitted = pipeline.fit(np.where(np.isnan(GAPPED), -1.0, GAPPED) if "missing_values" in str(pipeline) else X, Y)
    assert may_be_missing(fitted, X.shape[1]) == expected


def test_an_old_manifest_has_numeric_columns_none_of_which_may_be_missing(models_dir):
    manifest_file = next(models_dir.rglob(MANIFEST_FILE))
    doc = json.loads(manifest_file.read_text())
    assert "inputs" not in doc and "form" not in doc
    manifest = Manifest.model_validate(doc)
    assert manifest.form == "compiled"
    assert [(c.name, c.kind, c.missing) for c in manifest.columns] == [
        (f, "numeric", False) for f in doc["feature_names"]
    ]


def test_a_schema_must_name_the_features_in_order_and_nothing_else(models_dir):
    doc = json.loads(next(models_dir.rglob(MANIFEST_FILE)).read_text())
    names = doc["feature_names"]
    with pytest.raises(ValueError, match="inputs must name the feature_names"):
        Manifest.model_validate({**doc, "inputs": [{"name": n} for n in reversed(names)]})
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        Manifest.model_validate({**doc, "inputs": [{"name": n, "nullable": True} for n in names]})


@pytest.mark.parametrize(
    "name,trusted",
    [
        ("sklearn.impute._base.SimpleImputer", True),
        ("numpy.dtype", True),
        ("numpy.log1p", True),
        ("numpy.load", False),
        ("numpy.lib.npyio.load", False),
        ("builtins.eval", False),
        ("__main__.<lambda>", False),
    ],
)
def test_only_scikit_learn_types_numpy_dtypes_and_ufuncs_are_trusted(name, trusted):
    assert trusted_type(name) is trusted


def _served(tmp_path, pipeline, x):
    directory = write_model_dir(pipeline, "m", "1", tmp_path)
    loaded = load_pipeline(directory)
    return loaded, compile_predictor(loaded)


def test_a_pipeline_with_gaps_is_served_by_scikit_learn_equal_to_the_original(tmp_path):
    pipeline = make_pipeline(SimpleImputer(), SplineTransformer(n_knots=4), StandardScaler(), LogisticRegression())
    pipeline.fit(GAPPED, Y)
    loaded, predictor = _served(tmp_path, pipeline, GAPPED)
    assert loaded.manifest.form == "pipeline" and predictor.kind == "sklearn"
    assert loaded.manifest.estimator == "sklearn.linear_model._logistic.LogisticRegression"
    got = predictor.predict(GAPPED[:30], ("predict", "predict_proba"))
    assert got["predict"].tolist() == pipeline.predict(GAPPED[:30]).tolist()
    np.testing.assert_allclose(got["predict_proba"], pipeline.predict_proba(GAPPED[:30]), rtol=1e-12)


def test_a_pipeline_fitted_on_a_dataframe_selects_its_columns_by_name(tmp_path):
    frame = pd.DataFrame(X, columns=list("abcdef"))
    pipeline = make_pipeline(
        ColumnTransformer([("scale", StandardScaler(), ["f", "a"]), ("k", SelectKBest(k=2), ["b", "c", "d"])]),
        LogisticRegression(),
    ).fit(frame, Y)
    loaded, predictor = _served(tmp_path, pipeline, X)
    assert loaded.manifest.feature_names == list("abcdef")
    assert predictor.predict(X[:20], ("predict",))["predict"].tolist() == pipeline.predict(frame[:20]).tolist()


def test_the_compiled_form_keeps_its_fast_path(tmp_path):
    _, predictor = _served(tmp_path, make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y), X)
    assert predictor.kind == "folded-linear"


def test_a_pipeline_that_fails_on_reference_rows_is_refused(tmp_path):
    # log1p of the standard normal reference rows (no --reference) is NaN below -1.
    pipeline = make_pipeline(FunctionTransformer(np.log1p), LinearRegression()).fit(X, Y)
    with pytest.raises(PackagingError, match="fails on reference rows .*pass --reference") as caught:
        write_model_dir(pipeline, "m", "1", tmp_path)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "m" / "1").exists()
    assert write_model_dir(pipeline, "m", "1", tmp_path, reference=X).is_dir()


def test_the_original_answers_are_recorded_with_gaps_and_checked_at_every_load(tmp_path):
    pipeline = make_pipeline(SimpleImputer(), PCA(3), LogisticRegression()).fit(GAPPED, Y)
    directory = write_model_dir(pipeline, "m", "1", tmp_path)
    manifest_file = directory / MANIFEST_FILE
    doc = json.loads(manifest_file.read_text())
    rows = np.array(doc["check"]["rows"], dtype=np.float64)
    assert np.isnan(rows).any() and set(doc["check"]["answers"]) == {"predict", "predict_proba", "decision_function"}
    np.testing.assert_allclose(doc["check"]["answers"]["predict_proba"], pipeline.predict_proba(rows), rtol=1e-12)
    doc["check"]["answers"]["predict_proba"][0] = [0.5, 0.5]
    manifest_file.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="predict_proba differs from the original's recorded answers"):
        compile_predictor(load_pipeline(directory))


def test_reference_data_with_gaps_bounds_the_values_it_has(tmp_path):
    pipeline = make_pipeline(SimpleImputer(), LogisticRegression()).fit(GAPPED, Y)
    manifest = load_pipeline(write_model_dir(pipeline, "m", "1", tmp_path, reference=GAPPED)).manifest
    assert manifest.feature_ranges is not None and manifest.feature_ranges_source == "reference"
    assert manifest.feature_ranges.min == np.nanmin(GAPPED, axis=0).tolist()
    assert manifest.feature_ranges.max == np.nanmax(GAPPED, axis=0).tolist()


def test_the_metadata_of_a_numeric_model_names_the_columns_that_may_be_missing(tmp_path):
    """One [N, F] tensor still describes a numeric model; a client learns from it which columns take a gap."""
    from runtime.core.response import input_descriptions

    frame = pd.DataFrame(GAPPED, columns=list("abcdef"))
    imputed = ColumnTransformer([("imp", SimpleImputer(), ["a", "b"])], remainder="passthrough")
    loaded, _ = _served(tmp_path, make_pipeline(imputed, LogisticRegression()).fit(frame, Y), X)
    (described,) = input_descriptions(loaded.manifest)
    assert (described.name, described.shape) == ("features", [-1, 6])
    assert described.parameters == {"feature_names": "a,b,c,d,e,f", "may_be_missing": "a,b"}
    plain, _ = _served(tmp_path / "plain", make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y), X)
    assert "may_be_missing" not in input_descriptions(plain.manifest)[0].parameters
