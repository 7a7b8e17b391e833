"""`python -m pipeline_tools.package`: what it writes, how it names features and ranges, and every bad
input refused with one line and exit code 2, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_diabetes, load_iris
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, Ridge, SGDClassifier
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

from pipeline_tools.package import main
from runtime.core.artifacts import load_pipeline
from runtime.core.steps.preprocessing import ROBUST_IQRS
from tests.unit.conftest import ROOT

X, Y = load_diabetes(return_X_y=True)
NAMES = [str(f) for f in load_diabetes().feature_names]


def _save(obj, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".skops":
        skops.io.dump(obj, path)
    else:
        joblib.dump(obj, path)
    return path


def _package(tmp_path: Path, obj, *args: str, suffix: str = ".joblib") -> tuple[int, Path]:
    source = _save(obj, tmp_path / f"pipeline{suffix}")
    out = tmp_path / "models"
    code = main([str(source), "--name", "mine", "--version", "1", "--out", str(out), *args])
    return code, out


def _manifest(out: Path) -> dict:
    return json.loads((out / "mine" / "1" / "manifest.json").read_text())


@pytest.mark.parametrize("suffix", [".joblib", ".pkl", ".skops"])
def test_a_pipeline_file_becomes_a_complete_model_directory(tmp_path, capsys, suffix):
    pipe = make_pipeline(StandardScaler(), Ridge()).fit(X, Y)
    code, out = _package(tmp_path, pipe, suffix=suffix)
    assert code == 0, capsys.readouterr().err
    target = out / "mine" / "1"
    assert sorted(p.name for p in target.iterdir()) == [
        "manifest.json",
        "model-settings.json",
        "model.skops",
        "scaler.skops",
    ]
    loaded = load_pipeline(target)
    assert loaded.scaler is not None
    np.testing.assert_allclose(loaded.model.predict(loaded.scaler.transform(X)), pipe.predict(X), rtol=1e-12)
    settings = json.loads((target / "model-settings.json").read_text())
    assert settings["implementation"] == "runtime.PipelineRuntime" and settings["parameters"]["version"] == "1"
    printed = capsys.readouterr().out
    assert "curl -s localhost:8080/v2/models/mine/versions/1/infer" in printed
    assert [p.name for p in (out / "mine").iterdir()] == ["1"]  # no staging directory left


def test_types_of_the_artifacts_are_recorded(tmp_path):
    x, y = load_iris(return_X_y=True)
    code, out = _package(
        tmp_path, make_pipeline(MinMaxScaler(), RandomForestClassifier(n_estimators=3, random_state=0)).fit(x, y)
    )
    assert code == 0
    manifest = _manifest(out)
    assert manifest["model"]["types"] == ["sklearn.tree._tree.Tree"]
    assert manifest["outputs"] == ["predict", "predict_proba"] and manifest["classes"] == [0, 1, 2]


def test_feature_names_from_the_dataframe_then_the_flag_then_positions(tmp_path):
    frame = pd.DataFrame(X, columns=NAMES)
    assert _package(tmp_path / "a", LinearRegression().fit(frame, Y))[0] == 0
    assert _manifest(tmp_path / "a" / "models")["feature_names"] == NAMES
    code, out = _package(
        tmp_path / "b", LinearRegression().fit(X, Y), "--features", ",".join(f"f{i}" for i in range(10))
    )
    assert code == 0 and _manifest(out)["feature_names"] == [f"f{i}" for i in range(10)]
    code, out = _package(tmp_path / "c", LinearRegression().fit(X, Y))
    assert code == 0 and _manifest(out)["feature_names"] == [f"x{i}" for i in range(10)]


def test_ranges_from_a_reference_csv(tmp_path):
    csv = tmp_path / "reference.csv"
    pd.DataFrame(X[:50], columns=[f"x{i}" for i in range(10)]).to_csv(csv, index=False)
    code, out = _package(tmp_path, LinearRegression().fit(X, Y), "--reference", str(csv))
    manifest = _manifest(out)
    assert code == 0 and manifest["feature_ranges_source"] == "reference"
    assert manifest["feature_ranges"]["max"] == pytest.approx(X[:50].max(axis=0).tolist())


@pytest.mark.parametrize(
    "scaler,expected",
    [
        (MinMaxScaler(), lambda s: (s.data_min_, s.data_max_)),
        (MaxAbsScaler(), lambda s: (-s.max_abs_, s.max_abs_)),
        (RobustScaler(), lambda s: (s.center_ - ROBUST_IQRS * s.scale_, s.center_ + ROBUST_IQRS * s.scale_)),
        (StandardScaler(), None),  # the runtime's z-score band from the scaler's moments
    ],
    ids=lambda v: type(v).__name__ if not callable(v) or isinstance(v, type) else "",
)
def test_ranges_from_what_the_scaler_learned(tmp_path, scaler, expected):
    pipe = make_pipeline(scaler, LinearRegression()).fit(X, Y)
    code, out = _package(tmp_path, pipe)
    manifest = _manifest(out)
    assert code == 0 and manifest["feature_ranges_source"] == "scaler"
    if expected is None:
        assert "feature_ranges" not in manifest
    else:
        low, high = expected(pipe[0])
        assert manifest["feature_ranges"] == {"min": pytest.approx(low.tolist()), "max": pytest.approx(high.tolist())}


def test_no_scaler_and_no_reference_means_no_ranges(tmp_path):
    code, out = _package(tmp_path, LinearRegression().fit(X, Y))
    manifest = _manifest(out)
    assert code == 0 and manifest["feature_ranges_source"] == "none" and "feature_ranges" not in manifest


def test_string_labels_are_kept(tmp_path):
    x, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    code, out = _package(
        tmp_path, make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)).fit(x, labels)
    )
    assert code == 0 and _manifest(out)["classes"] == ["setosa", "versicolor", "virginica"]


class Doubler(TransformerMixin, BaseEstimator):
    """A user's own step: its code is not scikit-learn's."""

    def fit(self, x, y=None):
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def transform(self, x):
        return np.asarray(x) * 2


def _identity(x):
    return x


BAD = [
    ("unfitted", lambda: make_pipeline(StandardScaler(), Ridge()), "'standardscaler' (StandardScaler) is not fitted"),
    (
        "arbitrary function",
        lambda: make_pipeline(FunctionTransformer(_identity), Ridge()).fit(X, Y),
        "'functiontransformer' (FunctionTransformer): func _identity is not a numpy ufunc; arbitrary code cannot",
    ),
    (
        "a type outside scikit-learn",
        lambda: make_pipeline(Doubler(), Ridge()).fit(X, Y),
        "'doubler' (Doubler) is not a scikit-learn type",
    ),
    (
        "an unfitted nested step",
        lambda: make_pipeline(FeatureUnion([("pca", PCA(2).fit(X)), ("mm", MinMaxScaler())]), Ridge()),
        "'featureunion/mm' (MinMaxScaler) is not fitted",
    ),
    ("two estimators", lambda: (LinearRegression().fit(X, Y), Ridge().fit(X, Y)), "more than one estimator"),
    ("not scikit-learn", lambda: {"weights": [1, 2, 3]}, "a dict is not a scikit-learn Pipeline"),
    (
        "non-probabilistic SGD",
        lambda: SGDClassifier(loss="hinge").fit(X, Y > 150),
        "SGDClassifier(loss='hinge') has no probabilities",
    ),
]


@pytest.mark.parametrize("label,make,message", BAD, ids=[b[0] for b in BAD])
def test_bad_pipelines_are_refused_with_one_line(tmp_path, capsys, label, make, message):
    code, out = _package(tmp_path, make())
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists() or not any(out.rglob("*"))


def test_a_feature_count_that_disagrees_is_refused(tmp_path, capsys):
    code, _ = _package(tmp_path, LinearRegression().fit(X, Y), "--features", "a,b,c")
    assert code == 2 and "--features names 3 features but the pipeline expects 10" in capsys.readouterr().err
    csv = tmp_path / "reference.csv"
    pd.DataFrame(X[:5, :3], columns=["x0", "x1", "x2"]).to_csv(csv, index=False)
    code, _ = _package(tmp_path, LinearRegression().fit(X, Y), "--reference", str(csv))
    assert code == 2 and "no column for feature(s) ['x3'" in capsys.readouterr().err


def test_a_file_that_is_not_a_pipeline_is_refused(tmp_path, capsys):
    junk = tmp_path / "pipeline.pkl"
    junk.write_text("not a pickle at all")
    assert main([str(junk), "--name", "m", "--version", "1", "--out", str(tmp_path / "out")]) == 2
    assert "cannot be read as a .pkl file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_an_existing_version_needs_force(tmp_path, capsys):
    pipe = LinearRegression().fit(X, Y)
    assert _package(tmp_path, pipe)[0] == 0
    first = (tmp_path / "models" / "mine" / "1" / "manifest.json").read_text()
    code, out = _package(tmp_path, Ridge().fit(X, Y))
    assert code == 2 and "already exists; pass --force" in capsys.readouterr().err
    assert (out / "mine" / "1" / "manifest.json").read_text() == first
    code, out = _package(tmp_path, Ridge().fit(X, Y), "--force")
    assert code == 0 and _manifest(out)["estimator"].endswith("Ridge")


def test_the_command_exits_2_from_the_shell(tmp_path):
    source = _save(make_pipeline(StandardScaler(), Ridge()), tmp_path / "unfitted.joblib")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline_tools.package",
            str(source),
            "--name",
            "m",
            "--version",
            "1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and run.stderr.startswith("error: ") and "is not fitted" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_pipeline_fitted_on_a_dataframe_serves_matrices_without_warnings(tmp_path):
    import warnings

    from runtime.core.predictor import compile_predictor

    frame = pd.DataFrame(X, columns=NAMES)
    code, out = _package(
        tmp_path,
        make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=3, random_state=0)).fit(frame, Y > 150),
    )
    assert code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's "X does not have valid feature names" would fail
        pipeline = load_pipeline(out / "mine" / "1")
        compile_predictor(pipeline).predict(X[:5], ("predict", "predict_proba"))
    assert pipeline.manifest.feature_names == NAMES
