"""Out-of-distribution (OOD) checks against the training statistics a model version already holds.

A value is out of distribution when it lies outside its feature's range (the manifest's
`feature_ranges`, from the training data, a reference sample or the scaler) or, where the scaler's
step registry entry keeps training moments (a StandardScaler's), further than `z` training standard
deviations from the training mean. Both tests fold at load into one band [low, high] per feature,
so a request costs one vectorised comparison of its matrix against two vectors.

Per-row flags are built only when the request asks (`parameters: {"ood_flags": true}`) and travel
as ONE JSON string in the response parameters, because MLServer drops list parameters over gRPC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from runtime.core.artifacts import LoadedPipeline
from runtime.core.contract import flag_parameter
from runtime.core.steps.kinds import Moments
from runtime.core.steps.registry import TRANSFORMERS

FLAGS_PARAMETER = "ood_flags"


@dataclass(frozen=True)
class OodReport:
    per_feature: np.ndarray  # int64 [F]: out-of-distribution values per feature
    rows: int  # rows with at least one such value
    flags: str | None  # JSON list (per row) of lists of flagged feature names, if asked


@dataclass(frozen=True)
class OodDetector:
    feature_names: tuple[str, ...]
    low: np.ndarray  # float64 [F]
    high: np.ndarray  # float64 [F]
    # The numeric columns' indices, for a model with string columns (whose bands are unbounded).
    numeric: np.ndarray | None = None

    @cached_property
    def _clean(self) -> OodReport:
        """The report of every in-distribution request: shared, so read-only."""
        zeros = np.zeros(len(self.low), dtype=np.int64)
        zeros.flags.writeable = False
        return OodReport(zeros, 0, None)

    @classmethod
    def from_pipeline(cls, pipeline: LoadedPipeline, z_threshold: float | None) -> OodDetector:
        ranges = pipeline.manifest.feature_ranges
        n = pipeline.manifest.n_features
        # A model packaged without ranges has no band but the scaler's, if any.
        low = np.full(n, -np.inf) if ranges is None else _band(ranges.min, -np.inf)
        high = np.full(n, np.inf) if ranges is None else _band(ranges.max, np.inf)
        moments = _training_moments(pipeline.scaler)
        if moments is not None and z_threshold is not None:
            low = np.maximum(low, moments.mean - z_threshold * moments.std)
            high = np.minimum(high, moments.mean + z_threshold * moments.std)
        numeric = None
        if pipeline.manifest.has_strings:
            numeric = np.array([j for j, c in enumerate(pipeline.manifest.columns) if c.kind == "numeric"], dtype=int)
        return cls(tuple(pipeline.manifest.feature_names), low, high, numeric)

    def check(self, features: np.ndarray, with_flags: bool) -> OodReport:
        if self.numeric is not None:
            features = self._numbers(features)
        outside = np.less(features, self.low)
        outside |= np.greater(features, self.high)
        # count_nonzero without an axis is a plain C loop, cheaper than .any().
        if not np.count_nonzero(outside):
            # The common case: nothing to count, and every row's flags are an empty list.
            if not with_flags:
                return self._clean
            return replace(self._clean, flags=_encode_flags([[]] * len(features)))
        rows, cols = np.nonzero(outside)  # row-major: rows ascending, features in manifest order
        per_feature = np.bincount(cols, minlength=len(self.low))
        flagged_rows = int(np.count_nonzero(np.diff(rows))) + 1
        flags = self._flags(len(features), rows, cols) if with_flags else None
        return OodReport(per_feature, flagged_rows, flags)

    def _numbers(self, features: np.ndarray) -> np.ndarray:
        """An object matrix's numeric columns as float64, the string columns as 0 (unbounded bands)."""
        numbers = np.zeros(features.shape, dtype=np.float64)
        numbers[:, self.numeric] = features[:, self.numeric].astype(np.float64)
        return numbers

    def _flags(self, n_rows: int, rows: np.ndarray, cols: np.ndarray) -> str:
        per_row: list[list[str]] = [[] for _ in range(n_rows)]
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):  # only the flagged values
            per_row[row].append(self.feature_names[col])
        return _encode_flags(per_row)


def _band(bounds: list[float | None], unbounded: float) -> np.ndarray:
    return np.array([unbounded if b is None else b for b in bounds], dtype=np.float64)


def _training_moments(scaler: Any | None) -> Moments | None:
    """The training moments the scaler's registry entry says it kept, if any."""
    kind = TRANSFORMERS.family(scaler) if scaler is not None else None
    return kind.moments(scaler) if kind is not None else None


def _encode_flags(per_row: list[list[str]]) -> str:
    return json.dumps(per_row, separators=(",", ":"))


def wants_flags(value: object) -> bool:
    """Whether a request's `ood_flags` parameter asks for per-row flags."""
    return flag_parameter(FLAGS_PARAMETER, value)
