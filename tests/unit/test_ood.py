"""Out-of-distribution bands, counts and per-row flags (runtime.core.ood; the flags in a V2 response:
runtime.integration.v2)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from mlserver.types import InferenceRequest

from runtime.core.artifacts import load_pipeline
from runtime.core.call import Answer
from runtime.core.errors import ArtifactError, InvalidRequest
from runtime.core.ood import FLAGS_PARAMETER, OodDetector, wants_flags
from runtime.core.options import DEFAULT_OOD_Z_THRESHOLD, RuntimeOptions
from runtime.integration import v2


def _detector(low: list[float], high: list[float]) -> OodDetector:
    return OodDetector(("a", "b", "c"), np.array(low, dtype=float), np.array(high, dtype=float))


def test_band_is_the_training_range_narrowed_by_the_z_score(models_dir):
    pipeline = load_pipeline(models_dir / "breast-cancer" / "1")
    ranges = pipeline.manifest.feature_ranges
    assert ranges is not None and pipeline.scaler is not None
    z = 3.0
    detector = OodDetector.from_pipeline(pipeline, z)
    mean, std = pipeline.scaler.mean_, pipeline.scaler.scale_
    low, high = ranges.band()
    np.testing.assert_array_equal(detector.low, np.maximum(low, mean - z * std))
    np.testing.assert_array_equal(detector.high, np.minimum(high, mean + z * std))
    # A heavy-tailed data set: at 3 sigma the z-score test is stricter than the range somewhere.
    assert (detector.high < high).any()


def test_without_z_threshold_or_scaler_the_band_is_the_training_range(models_dir):
    pipeline = load_pipeline(models_dir / "diabetes" / "1")
    ranges = pipeline.manifest.feature_ranges
    assert ranges is not None
    for detector in (
        OodDetector.from_pipeline(pipeline, None),
        OodDetector.from_pipeline(dataclasses.replace(pipeline, scaler=None), 2.0),
    ):
        np.testing.assert_array_equal(detector.low, ranges.min)
        np.testing.assert_array_equal(detector.high, ranges.max)


def test_training_data_is_inside_its_own_range(models_dir):
    from sklearn.datasets import load_diabetes

    detector = OodDetector.from_pipeline(load_pipeline(models_dir / "diabetes" / "1"), None)
    report = detector.check(load_diabetes().data, with_flags=False)
    assert report.rows == 0 and not report.per_feature.any()


def test_counts_per_feature_and_rows():
    detector = _detector([0, 0, 0], [1, 1, 1])
    features = np.array(
        [
            [0.5, 0.5, 0.5],  # inside
            [-1.0, 0.5, 2.0],  # a below, c above
            [0.0, 1.0, 1.5],  # bounds are inside; c above
        ]
    )
    report = detector.check(features, with_flags=False)
    assert report.per_feature.tolist() == [1, 0, 2]
    assert report.rows == 2
    assert report.flags is None


def test_flags_name_the_features_of_each_row_as_one_json_string():
    detector = _detector([0, 0, 0], [1, 1, 1])
    features = np.array([[0.5, 0.5, 0.5], [-1.0, 0.5, 2.0], [0.0, 1.0, 1.5]])
    flags = detector.check(features, with_flags=True).flags
    assert isinstance(flags, str)
    assert json.loads(flags) == [[], ["a", "c"], ["c"]]


def test_flags_when_every_row_is_inside():
    report = _detector([0, 0, 0], [1, 1, 1]).check(np.full((3, 3), 0.5), with_flags=True)
    assert report.flags is not None
    assert json.loads(report.flags) == [[], [], []]
    assert report.per_feature.tolist() == [0, 0, 0]


def _request(parameters: dict | None) -> InferenceRequest:
    body: dict[str, Any] = {"inputs": [{"name": "X", "shape": [1, 1], "datatype": "FP64", "data": [0.0]}]}
    if parameters is not None:
        body["parameters"] = parameters
    return InferenceRequest.model_validate(body)


@pytest.mark.parametrize(
    "parameters,expected",
    [
        (None, False),
        ({}, False),
        ({FLAGS_PARAMETER: False}, False),
        ({FLAGS_PARAMETER: True}, True),
    ],
)
def test_flags_are_built_only_when_asked(parameters, expected):
    assert wants_flags(v2.call(_request(parameters)).ood_flags) is expected


@pytest.mark.parametrize("bad", ["true", 1, [True]])
def test_a_non_boolean_flags_parameter_is_a_client_error(bad):
    with pytest.raises(InvalidRequest, match="ood_flags"):
        wants_flags(v2.call(_request({FLAGS_PARAMETER: bad})).ood_flags)


def test_flags_travel_in_the_response_parameters():
    detector = _detector([0, 0, 0], [1, 1, 1])
    flagged = detector.check(np.array([[2.0, 0.5, 0.5]]), with_flags=True)
    assert flagged.flags is not None
    response = v2.response(Answer("m", "1", [], {FLAGS_PARAMETER: flagged.flags}))
    assert json.loads(response.parameters.model_extra[FLAGS_PARAMETER]) == [["a"]]
    unflagged = detector.check(np.array([[2.0, 0.5, 0.5]]), with_flags=False)
    assert unflagged.flags is None and v2.response(Answer("m", "1", [], {})).parameters is None


def test_z_threshold_option():
    assert RuntimeOptions.from_extra({}).ood_z_threshold == DEFAULT_OOD_Z_THRESHOLD
    assert RuntimeOptions.from_extra({"ood_z_threshold": None}).ood_z_threshold is None
    assert RuntimeOptions.from_extra({"ood_z_threshold": 2.5}).ood_z_threshold == 2.5
    for bad in (0, -1, "high"):
        with pytest.raises(ArtifactError, match="ood_z_threshold"):
            RuntimeOptions.from_extra({"ood_z_threshold": bad})
