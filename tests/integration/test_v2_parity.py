"""Parity: the server's predictions equal the in-process pipeline (scaler.transform +
model.predict / predict_proba on the artifacts loaded from models/<name>/<version>/) within a
relative difference of 1e-9, on a few hundred rows per model, over every client."""

from __future__ import annotations

import numpy as np
import pytest

from harness.models import BREAST_CANCER, DIABETES, assert_parity, pipeline, sample_rows
from tests.integration.clients import CLIENTS

DATASET_ROWS = {DIABETES: 442, BREAST_CANCER: 300}
RANDOM_ROWS = 200


def parity_rows(model: str, version: str) -> np.ndarray:
    """Real rows of the bundled dataset, then deterministic random rows inside the manifest's
    per-feature [min, max]."""
    p = pipeline(model, version)
    real = sample_rows(model, DATASET_ROWS[model])
    ranges = p.manifest.feature_ranges
    assert ranges is not None
    low, high = np.asarray(ranges.min, float), np.asarray(ranges.max, float)
    assert low.shape == high.shape == (p.n_features,)
    rng = np.random.default_rng(12345)
    synthetic = rng.uniform(low, high, size=(RANDOM_ROWS, p.n_features))
    return np.vstack([real, synthetic])


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("version", ["1", "2"])
def test_diabetes_parity(clients, client, version):
    x = parity_rows(DIABETES, version)
    res = clients.infer(client, DIABETES, x, version=version)
    assert_parity(res.outputs["predict"], pipeline(DIABETES, version).predict(x))


@pytest.mark.parametrize("client", CLIENTS)
def test_breast_cancer_parity(clients, client):
    p = pipeline(BREAST_CANCER, "1")
    x = parity_rows(BREAST_CANCER, "1")
    res = clients.infer(client, BREAST_CANCER, x, outputs=["predict", "predict_proba"])
    assert_parity(res.outputs["predict"], p.predict(x))
    assert_parity(res.outputs["predict_proba"], p.predict_proba(x), "predict_proba")
    # both classes occur, so label parity is not trivially satisfied by a constant
    assert len(np.unique(res.outputs["predict"])) == 2


def test_parity_tolerance_is_meaningful():
    """The comparison used above rejects a difference just over 1e-9 relative."""
    ref = np.array([150.0, 200.0])
    assert_parity(ref * (1 + 0.5e-9), ref)
    with pytest.raises(AssertionError):
        assert_parity(ref * (1 + 2e-9), ref)
