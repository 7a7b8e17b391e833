"""Artifact verification: hashes before unpickling, missing files, disagreeing manifests."""

from __future__ import annotations

import io
import json
import logging
import pickle
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import joblib
import pytest
import sklearn
import skops.io
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeRegressor

from pipeline_tools.package import write_model_dir
from runtime.core.artifacts import LoadPolicy, load_pipeline, sha256_hex
from runtime.core.errors import ArtifactError

SHIPPED = [("diabetes", "1", 10), ("diabetes", "2", 10), ("breast-cancer", "1", 30)]


@pytest.mark.parametrize("name,version,features", SHIPPED)
def test_shipped_models_load_and_agree_on_features(models_dir, name, version, features):
    pipeline = load_pipeline(models_dir / name / version)
    assert pipeline.manifest.n_features == features
    assert pipeline.scaler is not None and pipeline.scaler.n_features_in_ == features
    assert pipeline.model.n_features_in_ == features


@pytest.fixture
def model_copy(models_dir, tmp_path) -> Path:
    target = tmp_path / "diabetes-1"
    shutil.copytree(models_dir / "diabetes" / "1", target)
    return target


def _manifest(model_dir: Path) -> dict:
    return json.loads((model_dir / "manifest.json").read_text())


def _edit_manifest(model_dir: Path, **changes) -> None:
    manifest = _manifest(model_dir)
    manifest.update(changes)
    (model_dir / "manifest.json").write_text(json.dumps(manifest))


def _replace_artifact(model_dir: Path, role: str, data: bytes, fmt: str, types: list | None = None) -> None:
    """Swap an artifact for `data` and re-pin its hash, as a legitimate publisher would."""
    name = f"{role}.{fmt}"
    (model_dir / name).write_bytes(data)
    ref: dict[str, Any] = {"file": name, "sha256": sha256_hex(data), "format": fmt}
    if types is not None:
        ref["types"] = types
    _edit_manifest(model_dir, **{role: ref})


def _joblib_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.getvalue()


def _joblib_copy(model_copy: Path) -> Path:
    """The model version with its model artifact as sha256-pinned joblib."""
    model = load_pipeline(model_copy).model
    _replace_artifact(model_copy, "model", _joblib_bytes(model), "joblib")
    return model_copy


class _Boom:
    """Unpickling this writes a marker file: proof that a file was deserialised."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


@pytest.mark.parametrize("fmt", ["skops", "joblib"])
def test_tampered_artifact_is_refused_before_deserialising(tmp_path, model_copy, fmt):
    model_dir = _joblib_copy(model_copy) if fmt == "joblib" else model_copy
    marker = tmp_path / "marker"
    (model_dir / f"model.{fmt}").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(ArtifactError, match=rf"model\.{fmt}: sha256 mismatch"):
        load_pipeline(model_dir)
    assert not marker.exists()


def test_joblib_artifacts_still_load(model_copy):
    pipeline = load_pipeline(_joblib_copy(model_copy))
    assert pipeline.manifest.model.format == "joblib"


def test_an_artifact_without_format_is_refused_not_read_as_pickle(model_copy):
    ref = _manifest(model_copy)["model"]
    del ref["format"]
    _edit_manifest(model_copy, model=ref)
    with pytest.raises(ArtifactError, match=r"invalid manifest.*format"):
        load_pipeline(model_copy)


def test_missing_artifact_is_named(model_copy):
    (model_copy / "scaler.skops").unlink()
    with pytest.raises(ArtifactError, match=r"scaler\.skops: artifact is missing"):
        load_pipeline(model_copy)


TREE_TYPE = "sklearn.tree._tree.Tree"


def _tree_in(model_copy: Path, types: list | None) -> None:
    data = load_diabetes()
    tree = DecisionTreeRegressor(max_depth=2, random_state=0).fit(data.data, data.target)
    _replace_artifact(model_copy, "model", skops.io.dumps(tree), "skops", types)
    _edit_manifest(model_copy, estimator="sklearn.tree._classes.DecisionTreeRegressor")


def test_types_not_recorded_in_the_manifest_are_refused_unless_trusted_explicitly(model_copy):
    _tree_in(model_copy, types=None)
    with pytest.raises(ArtifactError, match=r"refusing untrusted types \['sklearn.tree._tree.Tree'\]"):
        load_pipeline(model_copy)
    trusted = LoadPolicy(extra_trusted_types=(TREE_TYPE,))
    assert isinstance(load_pipeline(model_copy, trusted).model, DecisionTreeRegressor)


def test_recorded_scikit_learn_types_load(model_copy):
    _tree_in(model_copy, types=[TREE_TYPE])
    assert isinstance(load_pipeline(model_copy).model, DecisionTreeRegressor)


def test_a_recorded_type_outside_scikit_learn_is_still_refused(model_copy):
    data = skops.io.dumps({"weights": Fraction(1, 3)})
    foreign = skops.io.get_untrusted_types(data=data)
    assert foreign and not any(t.startswith("sklearn.") for t in foreign)
    _replace_artifact(model_copy, "model", data, "skops", foreign)
    with pytest.raises(ArtifactError, match="refusing untrusted types"):
        load_pipeline(model_copy)


def test_a_model_of_another_type_than_the_manifest_says_is_refused(model_copy):
    _tree_in(model_copy, types=[TREE_TYPE])
    _edit_manifest(model_copy, estimator="sklearn.linear_model._base.LinearRegression")
    with pytest.raises(ArtifactError, match="is a sklearn.tree._classes.DecisionTreeRegressor, the manifest says"):
        load_pipeline(model_copy)


def test_other_sklearn_minor_is_refused_naming_both_versions(model_copy, caplog):
    trained_with = dict(_manifest(model_copy)["trained_with"], **{"scikit-learn": "0.24.2"})
    _edit_manifest(model_copy, trained_with=trained_with)
    with pytest.raises(
        ArtifactError, match=rf"trained with scikit-learn 0\.24\.2 but {sklearn.__version__} is installed"
    ):
        load_pipeline(model_copy)
    with caplog.at_level(logging.WARNING, logger="runtime.core.artifacts"):
        load_pipeline(model_copy, LoadPolicy(allow_sklearn_version_mismatch=True))
    assert "loading anyway" in caplog.text


def test_missing_manifest_is_named(model_copy):
    (model_copy / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest\.json: manifest is missing"):
        load_pipeline(model_copy)


def test_feature_count_disagreement_is_refused(model_copy):
    manifest = json.loads((model_copy / "manifest.json").read_text())
    _edit_manifest(
        model_copy,
        feature_names=manifest["feature_names"][:9],
        feature_ranges={k: v[:9] for k, v in manifest["feature_ranges"].items()},
    )
    with pytest.raises(ArtifactError, match="expects 10 features but the manifest names 9"):
        load_pipeline(model_copy)


def test_artifact_outside_the_model_directory_is_refused(model_copy, models_dir):
    outside = models_dir / "diabetes" / "2" / "model.skops"
    _edit_manifest(
        model_copy,
        model={
            "file": "../" + outside.relative_to(models_dir.parent).as_posix(),
            "sha256": sha256_hex(outside.read_bytes()),
            "format": "skops",
        },
    )
    with pytest.raises(ArtifactError, match="directly in the model directory"):
        load_pipeline(model_copy)


def test_unknown_manifest_field_is_refused(model_copy):
    _edit_manifest(model_copy, colour="blue")
    with pytest.raises(ArtifactError, match="invalid manifest"):
        load_pipeline(model_copy)


def test_a_model_without_scaler_loads(tmp_path):
    x, y = load_diabetes(return_X_y=True)
    pipeline = load_pipeline(write_model_dir(LinearRegression().fit(x, y), "bare", "1", tmp_path))
    assert pipeline.scaler is None
    assert pipeline.manifest.scaler is None
