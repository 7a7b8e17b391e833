"""Good-path inference over every client: both models, both diabetes versions and the stable
alias, column style, and predict_proba with output selection."""

from __future__ import annotations

import numpy as np
import pytest

from harness.models import (
    BREAST_CANCER,
    DIABETES,
    assert_parity,
    default_pipeline,
    default_version,
    pipeline,
    sample_rows,
)
from tests.integration.clients import CLIENTS, UNREPORTED

# (model, version asked for, version that must answer)
TARGETS = [
    (DIABETES, None, default_version(DIABETES)),
    (DIABETES, "1", "1"),
    (DIABETES, "2", "2"),
    (BREAST_CANCER, None, "1"),
    (BREAST_CANCER, "1", "1"),
]
TARGET_IDS = [f"{m}@{v or 'default'}" for m, v, _ in TARGETS]
N = 5


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(("model", "version", "answering"), TARGETS, ids=TARGET_IDS)
def test_infer_2d(clients, client, model, version, answering):
    p = pipeline(model, answering)
    x = sample_rows(model, N, offset=11)
    res = clients.infer(client, model, x, version=version)
    assert res.model_name == model
    if res.model_version != UNREPORTED:  # kserve-rest: the parity below tells v1 from v2
        assert res.model_version == answering
    assert list(res.outputs) == ["predict"], "default output is predict only"
    expected = p.predict(x)
    assert res.datatypes["predict"] == ("INT64" if p.is_classifier else "FP64")
    assert res.outputs["predict"].shape == (N,)
    assert_parity(res.outputs["predict"], expected)


def test_versions_really_differ(clients):
    """v1 (LinearRegression) and v2 (Ridge) disagree, so the version checks above can fail."""
    x = sample_rows(DIABETES, N)
    v1 = clients.infer("rest-json", DIABETES, x, version="1").outputs["predict"]
    v2 = clients.infer("rest-json", DIABETES, x, version="2").outputs["predict"]
    default = clients.infer("rest-json", DIABETES, x).outputs["predict"]
    assert not np.allclose(v1, v2, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(default, v1)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("model", [DIABETES, BREAST_CANCER])
def test_column_style_matches_2d(clients, client, model):
    x = sample_rows(model, N, offset=23)
    two_d = clients.infer(client, model, x)
    cols = clients.infer(client, model, x, columns=True)
    np.testing.assert_array_equal(cols.outputs["predict"], two_d.outputs["predict"])
    assert_parity(cols.outputs["predict"], default_pipeline(model).predict(x))


@pytest.mark.parametrize("client", ["rest-json", "triton-grpc"])
def test_column_style_is_matched_by_name_not_order(clients, client):
    p = default_pipeline(DIABETES)
    x = sample_rows(DIABETES, N, offset=31)
    res = clients.infer(client, DIABETES, x, columns=True, column_order=list(reversed(p.feature_names)))
    assert_parity(res.outputs["predict"], p.predict(x))


def test_column_style_versioned(clients):
    x = sample_rows(DIABETES, N, offset=3)
    res = clients.infer("rest-json", DIABETES, x, version="2", columns=True)
    assert res.model_version == "2"
    assert_parity(res.outputs["predict"], pipeline(DIABETES, "2").predict(x))


def _check_proba(res, x, n_rows):
    p = default_pipeline(BREAST_CANCER)
    proba = res.outputs["predict_proba"]
    assert res.datatypes["predict_proba"] == "FP64"
    assert proba.shape == (n_rows, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert ((proba >= 0) & (proba <= 1)).all()
    assert_parity(proba, p.predict_proba(x), "predict_proba")


@pytest.mark.parametrize("client", CLIENTS)
def test_predict_proba_selected_alone(clients, client):
    x = sample_rows(BREAST_CANCER, 40, offset=5)
    res = clients.infer(client, BREAST_CANCER, x, outputs=["predict_proba"])
    assert list(res.outputs) == ["predict_proba"]
    _check_proba(res, x, 40)


@pytest.mark.parametrize("client", CLIENTS)
def test_predict_and_proba_together(clients, client):
    p = default_pipeline(BREAST_CANCER)
    x = sample_rows(BREAST_CANCER, 40, offset=101)
    res = clients.infer(client, BREAST_CANCER, x, outputs=["predict", "predict_proba"])
    assert sorted(res.outputs) == ["predict", "predict_proba"]
    _check_proba(res, x, 40)
    labels = res.outputs["predict"]
    assert res.datatypes["predict"] == "INT64"
    assert_parity(labels, p.predict(x))
    # labels agree with the most probable class
    classes = np.asarray(p.manifest.classes)
    np.testing.assert_array_equal(labels, classes[res.outputs["predict_proba"].argmax(axis=1)])
    assert set(np.unique(labels)) <= set(classes.tolist())


def test_predict_output_selected_explicitly(clients):
    x = sample_rows(BREAST_CANCER, 4)
    res = clients.infer("rest-json", BREAST_CANCER, x, outputs=["predict"])
    assert list(res.outputs) == ["predict"]
