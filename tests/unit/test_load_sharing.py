"""Load-time work done once per verified content, and what the server imports at start: copies of
one model version share the verified objects and the checked predictor, every load still hashes its
bytes; skops is imported without pytest, psycopg by the first feature store; either missing fails,
naming it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.models import REPO_ROOT
from runtime.core import artifacts
from runtime.core.artifacts import load_pipeline
from runtime.core.errors import ArtifactError
from runtime.core.options import FeatureStoreOptions
from runtime.core.predictor import shared_predictor
from runtime.features.store import FeatureStore


def _copy(models_dir: Path, tmp_path: Path, name: str, version: str = "1") -> Path:
    target = tmp_path / name
    shutil.copytree(models_dir / "diabetes" / version, target)
    return target


def test_copies_share_the_verified_objects_and_the_checked_predictor(models_dir, tmp_path):
    first = load_pipeline(_copy(models_dir, tmp_path, "a"))
    renamed = _copy(models_dir, tmp_path, "b")
    manifest = json.loads((renamed / "manifest.json").read_text())
    (renamed / "manifest.json").write_text(json.dumps({**manifest, "name": "other", "version": "7"}))
    second = load_pipeline(renamed)
    assert second.verified == first.verified
    assert second.model is first.model and second.scaler is first.scaler
    assert shared_predictor(second) is shared_predictor(first)


def test_other_content_is_verified_and_compiled_on_its_own(models_dir, tmp_path):
    first = load_pipeline(_copy(models_dir, tmp_path, "a"))
    other = load_pipeline(_copy(models_dir, tmp_path, "b", version="2"))
    assert other.verified != first.verified
    assert other.model is not first.model
    assert shared_predictor(other) is not shared_predictor(first)


def test_every_load_hashes_its_bytes_even_when_shared(models_dir, tmp_path):
    first = load_pipeline(_copy(models_dir, tmp_path, "a"))
    swapped = _copy(models_dir, tmp_path, "b")
    (swapped / "model.skops").write_bytes((swapped / "model.skops").read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_pipeline(swapped)
    assert first.model is not None


def test_a_missing_skops_fails_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "skops.io", None)  # None: `import skops.io` raises ImportError
    artifacts.skops_io.cache_clear()  # imported afresh, as at a start
    with pytest.raises(ArtifactError, match="skops artifacts need skops.io"):
        artifacts.skops_io()


def test_a_missing_psycopg_fails_the_feature_store_naming_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "runtime.features.postgres", raising=False)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    options = FeatureStoreOptions.model_validate({"dsn_env": "NEVER_READ", "table": "features"})
    with pytest.raises(ArtifactError, match="feature_store needs psycopg"):
        FeatureStore("m", options, ("a", "b"))


def test_the_server_starts_with_skops_without_pytest_or_psycopg():
    """What `mlserver start` imports before any model loads (the runtime's integration): skops.io,
    so a model's load timer measures its own load, but not pytest (which a later import still finds)
    nor psycopg (imported by the first feature store)."""
    code = (
        "import sys, runtime.model; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'skops', 'pytest', 'psycopg'})); "
        "import pytest"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['skops']"
