"""Artifact verification: hashes before unpickling, missing files, disagreeing manifests."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

import logging

import skops.io
import sklearn
from sklearn.datasets import load_diabetes
from sklearn.tree import DecisionTreeRegressor

from runtime.artifacts import LoadPolicy, load_pipeline, sha256_hex
from runtime.errors import ArtifactError
from runtime.train import SPECS, train_one

SHIPPED = [("diabetes", "1", 10), ("diabetes", "2", 10), ("breast-cancer", "1", 30)]


@pytest.mark.parametrize("name,version,features", SHIPPED)
def test_shipped_models_load_and_agree_on_features(models_dir, name, version, features):
    pipeline = load_pipeline(models_dir / name / version)
    assert pipeline.manifest.n_features == features
    assert pipeline.scaler.n_features_in_ == features
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


def _replace_artifact(model_dir: Path, role: str, data: bytes, fmt: str) -> None:
    """Swap an artifact for `data` and re-pin its hash, as a legitimate publisher would."""
    name = f"{role}.{fmt}"
    (model_dir / name).write_bytes(data)
    _edit_manifest(model_dir, **{role: {"file": name, "sha256": sha256_hex(data), "format": fmt}})


class _Boom:
    """Unpickling this writes a marker file: proof that a file was deserialised."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


@pytest.mark.parametrize("fmt", ["skops", "joblib"])
def test_tampered_artifact_is_refused_before_deserialising(tmp_path, fmt):
    model_dir = train_one(SPECS[0], tmp_path / "trained", fmt)
    marker = tmp_path / "marker"
    (model_dir / f"model.{fmt}").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(ArtifactError, match=rf"model\.{fmt}: sha256 mismatch"):
        load_pipeline(model_dir)
    assert not marker.exists()


def test_joblib_artifacts_still_load(tmp_path):
    pipeline = load_pipeline(train_one(SPECS[0], tmp_path, "joblib"))
    assert pipeline.manifest.model.format == "joblib"


def test_missing_artifact_is_named(model_copy):
    (model_copy / "scaler.skops").unlink()
    with pytest.raises(ArtifactError, match=r"scaler\.skops: artifact is missing"):
        load_pipeline(model_copy)


def test_untrusted_skops_types_are_refused_unless_trusted_explicitly(model_copy):
    data = load_diabetes()
    tree = DecisionTreeRegressor(max_depth=2, random_state=0).fit(data.data, data.target)
    _replace_artifact(model_copy, "model", skops.io.dumps(tree), "skops")
    with pytest.raises(ArtifactError, match=r"refusing untrusted types \['sklearn.tree._tree.Tree'\]"):
        load_pipeline(model_copy)
    trusted = LoadPolicy(extra_trusted_types=("sklearn.tree._tree.Tree",))
    assert isinstance(load_pipeline(model_copy, trusted).model, DecisionTreeRegressor)


def test_other_sklearn_minor_is_refused_naming_both_versions(model_copy, caplog):
    trained_with = dict(_manifest(model_copy)["trained_with"], **{"scikit-learn": "0.24.2"})
    _edit_manifest(model_copy, trained_with=trained_with)
    with pytest.raises(ArtifactError, match=rf"trained with scikit-learn 0\.24\.2 but {sklearn.__version__} is installed"):
        load_pipeline(model_copy)
    with caplog.at_level(logging.WARNING, logger="runtime.artifacts"):
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
    _edit_manifest(model_copy, model={"file": "../" + outside.relative_to(models_dir.parent).as_posix(),
                                      "sha256": sha256_hex(outside.read_bytes()), "format": "skops"})
    with pytest.raises(ArtifactError, match="directly in the model directory"):
        load_pipeline(model_copy)


def test_unknown_manifest_field_is_refused(model_copy):
    _edit_manifest(model_copy, colour="blue")
    with pytest.raises(ArtifactError, match="invalid manifest"):
        load_pipeline(model_copy)


def test_a_model_without_scaler_loads(tmp_path):
    spec = SPECS[0]
    spec = type(spec)(spec.name, spec.version, spec.load_data, spec.make_model, spec.kind, with_scaler=False)
    pipeline = load_pipeline(train_one(spec, tmp_path))
    assert pipeline.scaler is None
    assert pipeline.manifest.scaler is None
