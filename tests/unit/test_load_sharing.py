"""Load-time work done once per verified content, and the dependencies imported when first needed:
copies of one model version share the verified objects and the checked predictor, every load still
hashes its bytes, and a missing skops or psycopg fails the load that needs it, naming it."""

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


def test_a_missing_skops_fails_the_load_naming_it(models_dir, tmp_path, monkeypatch):
    artifacts._skops_io.cache_clear()
    monkeypatch.setitem(sys.modules, "skops.io", None)  # None: `import skops.io` raises ImportError
    try:
        # One more trusted type: a key of its own, so the bytes are deserialised, not shared.
        policy = artifacts.LoadPolicy(extra_trusted_types=("example.Trusted",))
        with pytest.raises(ArtifactError, match="skops artifacts need skops.io"):
            load_pipeline(_copy(models_dir, tmp_path, "a"), policy)
    finally:
        artifacts._skops_io.cache_clear()


def test_skops_is_imported_without_pytest():
    """In a process without pytest (a server), loading skops.io leaves pytest unimported, and does
    not stop a later import of it."""
    code = (
        "import sys; from runtime.core import artifacts; artifacts._skops_io(); "
        "assert 'skops.io' in sys.modules and 'pytest' not in sys.modules, sorted(sys.modules); "
        "import pytest"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_missing_psycopg_fails_the_feature_store_naming_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "runtime.features.postgres", raising=False)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    options = FeatureStoreOptions.model_validate({"dsn_env": "NEVER_READ", "table": "features"})
    with pytest.raises(ArtifactError, match="feature_store needs psycopg"):
        FeatureStore("m", options, ("a", "b"))


def test_the_server_imports_neither_psycopg_nor_skops_at_start():
    """What `mlserver start` imports before any model loads: the runtime's integration."""
    code = "import sys, runtime.model; print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'skops')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
