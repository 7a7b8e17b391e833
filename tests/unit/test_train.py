"""`python -m pipeline_tools.train` regenerates models that predict what the committed ones predict."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from runtime.core.artifacts import load_pipeline
from runtime.core.predictor import reference_rows
from tests.unit.conftest import ROOT


def test_retraining_reproduces_the_committed_models(tmp_path, models_dir):
    subprocess.run([sys.executable, "-m", "pipeline_tools.train", "--out", str(tmp_path)], cwd=ROOT, check=True)
    for committed_dir in sorted(p for p in models_dir.glob("*/*") if p.is_dir()):
        fresh_dir = tmp_path / committed_dir.relative_to(models_dir)
        committed, fresh = load_pipeline(committed_dir), load_pipeline(fresh_dir)
        assert fresh.manifest.feature_names == committed.manifest.feature_names
        rows = reference_rows(committed, seed=11)
        scale = lambda p, x: p.scaler.transform(x) if p.scaler is not None else x  # noqa: E731
        np.testing.assert_allclose(
            fresh.model.predict(scale(fresh, rows)), committed.model.predict(scale(committed, rows)), rtol=1e-9
        )
        settings = json.loads((fresh_dir / "model-settings.json").read_text())
        assert settings == json.loads((committed_dir / "model-settings.json").read_text())
