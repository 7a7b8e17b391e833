"""Artifact verification: hashes before unpickling, missing files, disagreeing manifests."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from runtime.artifacts import load_pipeline, sha256_hex
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


def _edit_manifest(model_dir: Path, **changes) -> None:
    path = model_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


class _Boom:
    """Unpickling this writes a marker file: proof that a file was deserialised."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_tampered_artifact_is_refused_before_unpickling(model_copy, tmp_path):
    marker = tmp_path / "marker"
    (model_copy / "model.joblib").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(ArtifactError, match=r"model\.joblib: sha256 mismatch"):
        load_pipeline(model_copy)
    assert not marker.exists()


def test_missing_artifact_is_named(model_copy):
    (model_copy / "scaler.joblib").unlink()
    with pytest.raises(ArtifactError, match=r"scaler\.joblib: artifact is missing"):
        load_pipeline(model_copy)


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
    outside = models_dir / "diabetes" / "2" / "model.joblib"
    _edit_manifest(model_copy, model={"file": "../" + outside.relative_to(models_dir.parent).as_posix(),
                                      "sha256": sha256_hex(outside.read_bytes())})
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
