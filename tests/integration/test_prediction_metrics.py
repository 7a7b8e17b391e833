"""The predictions themselves as a metric (pipeline_prediction_bucket_total): what `rollout
analyze` compares between a stable version and its canary. Counts per bucket (regressors) and
per class (classifiers) equal scikit-learn's predictions on the same rows."""

from __future__ import annotations

import numpy as np

from harness.models import BREAST_CANCER, DIABETES, pipeline, sample_rows
from harness.v2 import json_tensor
from tests.integration import support

NAME = "pipeline_prediction_bucket_total"


def _buckets(server, model: str) -> dict[str, float]:
    return {
        dict(labels)["bucket"]: value
        for (name, labels), value in server.scrape().items()
        if name == NAME and dict(labels)["model"] == model and dict(labels)["version"] == "1"
    }


def test_a_regressors_predictions_are_counted_by_bucket(server):
    before = _buckets(server, DIABETES)
    x = sample_rows(DIABETES, 60, offset=100)
    assert support.rest_post(server, DIABETES, {"inputs": [json_tensor("X", x)]}).status_code == 200
    after = _buckets(server, DIABETES)
    edges = np.asarray(sorted(float(b) for b in after if b != "+Inf"))
    labels = [f"{e:.6g}" for e in edges] + ["+Inf"]
    expected = np.bincount(
        np.searchsorted(edges, pipeline(DIABETES, "1").predict(x), side="left"), minlength=len(labels)
    )
    assert [after[b] - before.get(b, 0.0) for b in labels] == expected.tolist()
    assert len(edges) == 9  # the deciles of the model's own predictions


def test_a_classifiers_predictions_are_counted_by_class(server):
    before = _buckets(server, BREAST_CANCER)
    x = sample_rows(BREAST_CANCER, 40)
    assert support.rest_post(server, BREAST_CANCER, {"inputs": [json_tensor("X", x)]}).status_code == 200
    after = _buckets(server, BREAST_CANCER)
    predicted = pipeline(BREAST_CANCER, "1").predict(x)
    assert {c: after[c] - before.get(c, 0.0) for c in ("0", "1")} == {
        c: float(np.sum(predicted == int(c))) for c in ("0", "1")
    }
