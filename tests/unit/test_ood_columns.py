"""Out-of-distribution per column (runtime.core.ood): unseen categories of the categorical columns whose
unseen values are served, missing values of the columns that may be missing, in the report, the flags
and the metrics (runtime.observation.metrics); numeric-only models do nothing more than before."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from runtime.core.artifacts import InputColumn, load_pipeline
from runtime.core.contract import Contract, Tensor
from runtime.core.ood import MISSING_FLAG, ColumnChecks, OodDetector
from runtime.observation.metrics import ModelMetrics
from tests.ood_models import write_mixed

_names = itertools.count()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Unseen cities served (and counted); age and income may be missing."""
    return write_mixed(tmp_path_factory.mktemp("ood"), "mixed")


def _parse(model_dir: Path, age: list, income: list, city: list) -> np.ndarray:
    contract = Contract.for_manifest(load_pipeline(model_dir).manifest, 100)
    inputs = [
        Tensor("age", [len(age)], "FP64", age),
        Tensor("income", [len(income)], "FP64", income),
        Tensor("city", [len(city)], "BYTES", city),
    ]
    return contract.parse(None, inputs).features


def test_a_numeric_only_model_checks_its_bands_only(models_dir):
    detector = OodDetector.from_pipeline(load_pipeline(models_dir / "diabetes" / "1"), None)
    assert detector.columns is None and detector.numeric is None
    features = np.tile(detector.high, (2, 1))
    features[1, 0] += 1.0
    report = detector.check(features, with_flags=True)
    assert report.unseen is None and report.missing is None
    assert report.flags is not None and json.loads(report.flags) == [[], ["age"]]


def test_the_checks_cover_counted_categorical_columns_and_columns_that_may_be_missing(mixed, tmp_path):
    counted = OodDetector.from_pipeline(load_pipeline(mixed), None).columns
    assert counted is not None
    assert counted.categories == ((2, frozenset({"london", "paris", "rome"})),)
    assert counted.gaps.tolist() == [0, 1]
    # A column whose unseen values are refused never reaches the check: the contract answered 400.
    refused = OodDetector.from_pipeline(load_pipeline(write_mixed(tmp_path, "strict", "error")), None).columns
    assert refused is not None and refused.categories == () and refused.gaps.tolist() == [0, 1]
    assert ColumnChecks.for_columns([InputColumn(name="a"), InputColumn(name="b", kind="string")]) is None


def test_unseen_categories_and_gaps_are_counted_per_column_and_flagged(mixed):
    detector = OodDetector.from_pipeline(load_pipeline(mixed), None)
    features = _parse(
        mixed,
        age=[30, None, 40, 500],  # a gap; 500 is above age's training range
        income=[None, 50, None, 50],
        city=["tokyo", "rome", "oslo", "paris"],
    )
    report = detector.check(features, with_flags=True)
    assert report.per_feature.tolist() == [1, 0, 0]  # outside the band: numbers only
    assert report.unseen is not None and report.unseen.tolist() == [0, 0, 2]
    assert report.missing is not None and report.missing.tolist() == [1, 2, 0]
    assert report.rows == 3  # rows with a value out of its band or an unseen category; a gap is neither
    assert report.flags is not None
    assert json.loads(report.flags) == [
        [f"{MISSING_FLAG}income", "city"],
        [f"{MISSING_FLAG}age"],
        [f"{MISSING_FLAG}income", "city"],
        ["age"],
    ]
    unflagged = detector.check(features, with_flags=False)
    assert unflagged.flags is None and unflagged.unseen is not None and unflagged.unseen.tolist() == [0, 0, 2]


def test_a_request_inside_the_training_distribution_reports_nothing(mixed):
    detector = OodDetector.from_pipeline(load_pipeline(mixed), None)
    report = detector.check(_parse(mixed, [30, 40], [50, 60], ["rome", "paris"]), with_flags=True)
    assert report.rows == 0 and report.unseen is None and report.missing is None
    assert report.flags is not None and json.loads(report.flags) == [[], []]


def test_gaps_and_numeric_categories_in_a_float_matrix():
    """A model with no string column: its float64 matrix holds the gaps as NaN, a numeric categorical
    column's categories as numbers."""
    columns = ColumnChecks(categories=((0, frozenset({1, 2})),), gaps=np.array([0, 1]))
    detector = OodDetector(("kind", "x"), np.array([-np.inf, 0.0]), np.array([np.inf, 1.0]), None, columns)
    features = np.array([[1.0, 0.5], [3.0, np.nan], [np.nan, 2.0], [2.0, 0.5]])
    report = detector.check(features, with_flags=True)
    assert report.unseen is not None and report.unseen.tolist() == [1, 0]  # 3 is unseen; NaN is a gap
    assert report.missing is not None and report.missing.tolist() == [1, 1]
    assert report.per_feature.tolist() == [0, 1] and report.rows == 2
    assert report.flags is not None
    assert json.loads(report.flags) == [[], ["kind", f"{MISSING_FLAG}x"], [f"{MISSING_FLAG}kind", "x"], []]


def _sample(name: str, model: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"model": model, "version": "1", **labels})


def test_metrics_count_unseen_and_missing_values_per_feature(mixed):
    model = f"ood-columns-{next(_names)}"
    detector = OodDetector.from_pipeline(load_pipeline(mixed), None)
    metrics = ModelMetrics(model, "1", detector.feature_names, detector.columns)
    # Series exist from load, for the columns they apply to only.
    assert _sample("pipeline_ood_unseen_values_total", model, feature="city") == 0
    assert _sample("pipeline_ood_unseen_values_total", model, feature="age") is None
    assert _sample("pipeline_ood_missing_values_total", model, feature="income") == 0
    assert _sample("pipeline_ood_missing_values_total", model, feature="city") is None
    gaps_only = _parse(mixed, [None, 30], [None, None], ["rome", "rome"])
    metrics.record_ood(detector.check(gaps_only, with_flags=False))
    metrics.record_ood(detector.check(_parse(mixed, [30], [50], ["oslo"]), with_flags=False))
    assert _sample("pipeline_ood_missing_values_total", model, feature="age") == 1
    assert _sample("pipeline_ood_missing_values_total", model, feature="income") == 2
    assert _sample("pipeline_ood_unseen_values_total", model, feature="city") == 1
    assert _sample("pipeline_ood_rows_total", model) == 1  # the unseen city's row; gaps are not OOD
    assert _sample("pipeline_ood_values_total", model, feature="city") == 0
