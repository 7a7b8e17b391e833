"""Out-of-distribution (OOD) checks against the training statistics a model version already holds.

A value is out of distribution when it lies outside its feature's range (the manifest's
`feature_ranges`, from the training data, a reference sample or the scaler) or, where the scaler's
step registry entry keeps training moments (a StandardScaler's), further than `z` training standard
deviations from the training mean. Both tests fold at load into one band [low, high] per feature,
so a request costs one vectorised comparison of its matrix against two vectors.

A model with categorical columns whose unseen values it serves (the schema's `unseen: "counted"`: the
encoder ignores them; refused ones never get here, the contract answered 400) also counts, per column,
the values outside the training categories; a model with columns that may be missing counts the gaps
per column. Both checks exist only for the columns they apply to: a model with neither does exactly
the band comparison above and nothing more.

Per-row flags are built only when the request asks (`parameters: {"ood_flags": true}`) and travel
as ONE JSON string in the response parameters, because MLServer drops list parameters over gRPC:
per row, the names of the columns whose value is out of its band or an unseen category, and
`missing:<column>` for each gap, in column order (`[["age"], ["missing:income", "city"], []]`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from runtime.core.artifacts import InputColumn, LoadedPipeline
from runtime.core.contract import flag_parameter
from runtime.core.steps.kinds import Moments
from runtime.core.steps.registry import TRANSFORMERS

FLAGS_PARAMETER = "ood_flags"
MISSING_FLAG = "missing:"  # a gap's flag is this prefix and the column's name


@dataclass(frozen=True)
class OodReport:
    per_feature: np.ndarray  # int [F]: values outside their feature's band
    rows: int  # rows with at least one value outside its band or an unseen category
    flags: str | None  # JSON list (per row) of lists of flagged feature names, if asked
    unseen: np.ndarray | None = None  # int [F]: unseen categories per feature; None when there are none
    missing: np.ndarray | None = None  # int [F]: missing values per feature; None when there are none


@dataclass(frozen=True)
class ColumnChecks:
    """The per-column checks beyond the bands, for the columns they apply to."""

    # Each categorical column whose unseen values are served: its index and training categories.
    categories: tuple[tuple[int, frozenset[Any]], ...]
    gaps: np.ndarray  # int: the indices of the columns that may be missing

    @classmethod
    def for_columns(cls, columns: list[InputColumn]) -> ColumnChecks | None:
        categories = tuple(
            (j, frozenset(c.categories))
            for j, c in enumerate(columns)
            if c.categories is not None and c.unseen == "counted"
        )
        gaps = np.array([j for j, c in enumerate(columns) if c.missing], dtype=np.intp)
        return cls(categories, gaps) if categories or len(gaps) else None

    def unseen(self, features: np.ndarray) -> np.ndarray | None:
        """bool [N, F]: the values outside their column's training categories (a gap is not one)."""
        if not self.categories:
            return None
        mask = np.zeros(features.shape, dtype=bool)
        for col, allowed in self.categories:
            values = features[:, col].tolist()  # Python floats or str: the categories' own types
            # v == v: False for NaN, a gap.
            mask[:, col] = np.fromiter((v not in allowed and v == v for v in values), dtype=bool, count=len(values))
        return mask

    def missing(self, features: np.ndarray) -> np.ndarray | None:
        """bool [N, F]: the gaps (NaN, in a float or an object matrix alike: NaN != NaN)."""
        if not len(self.gaps):
            return None
        mask = np.zeros(features.shape, dtype=bool)
        values = features[:, self.gaps]
        mask[:, self.gaps] = values != values
        return mask


@dataclass(frozen=True)
class OodDetector:
    feature_names: tuple[str, ...]
    low: np.ndarray  # float64 [F]
    high: np.ndarray  # float64 [F]
    # The numeric columns' indices, for a model with string columns (whose bands are unbounded).
    numeric: np.ndarray | None = None
    # Unseen categories and gaps, for a model with such columns; None keeps the check to the bands.
    columns: ColumnChecks | None = None

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
        low, high = (np.full(n, -np.inf), np.full(n, np.inf)) if ranges is None else ranges.band()
        moments = _training_moments(pipeline.scaler)
        if moments is not None and z_threshold is not None:
            low = np.maximum(low, moments.mean - z_threshold * moments.std)
            high = np.minimum(high, moments.mean + z_threshold * moments.std)
        numeric = None
        if pipeline.manifest.has_strings:
            numeric = np.array([j for j, c in enumerate(pipeline.manifest.columns) if c.kind == "numeric"], dtype=int)
        names = tuple(pipeline.manifest.feature_names)
        return cls(names, low, high, numeric, ColumnChecks.for_columns(pipeline.manifest.columns))

    @cached_property
    def _missing_flags(self) -> tuple[str, ...]:
        return tuple(MISSING_FLAG + name for name in self.feature_names)

    def check(self, features: np.ndarray, with_flags: bool) -> OodReport:
        numbers = features if self.numeric is None else self._numbers(features)
        outside = np.less(numbers, self.low)
        outside |= np.greater(numbers, self.high)
        if self.columns is not None:
            return self._check_columns(self.columns, features, outside, with_flags)
        # count_nonzero without an axis is a plain C loop, cheaper than .any().
        if not np.count_nonzero(outside):
            return self._nothing(len(features), with_flags)
        rows, cols = np.nonzero(outside)  # row-major: rows ascending, features in manifest order
        per_feature = np.bincount(cols, minlength=len(self.low))
        flagged_rows = int(np.count_nonzero(np.diff(rows))) + 1
        flags = self._flags(len(features), rows, cols, None) if with_flags else None
        return OodReport(per_feature, flagged_rows, flags)

    def _nothing(self, n_rows: int, with_flags: bool) -> OodReport:
        """The common case: nothing to count, and every row's flags are an empty list."""
        if not with_flags:
            return self._clean
        return replace(self._clean, flags=_encode_flags([[]] * n_rows))

    def _check_columns(
        self, columns: ColumnChecks, features: np.ndarray, outside: np.ndarray, with_flags: bool
    ) -> OodReport:
        """`check` for a model with categorical columns whose unseen values it serves or with gaps."""
        unseen, missing = columns.unseen(features), columns.missing(features)
        flagged = outside if unseen is None else outside | unseen
        marked = flagged if missing is None else flagged | missing
        if not np.count_nonzero(marked):
            return self._nothing(len(features), with_flags)
        flags = None
        if with_flags:
            rows, cols = np.nonzero(marked)  # row-major: rows ascending, features in manifest order
            flags = self._flags(len(features), rows, cols, None if missing is None else missing[rows, cols])
        return OodReport(
            np.count_nonzero(outside, axis=0),
            int(np.count_nonzero(flagged.any(axis=1))),
            flags,
            _counts(unseen),
            _counts(missing),
        )

    def _numbers(self, features: np.ndarray) -> np.ndarray:
        """An object matrix's numeric columns as float64, the string columns as 0 (unbounded bands)."""
        numbers = np.zeros(features.shape, dtype=np.float64)
        numbers[:, self.numeric] = features[:, self.numeric].astype(np.float64)
        return numbers

    def _flags(self, n_rows: int, rows: np.ndarray, cols: np.ndarray, gaps: np.ndarray | None) -> str:
        """Per row, its flagged columns' names; `gaps`: per flagged value, whether it is a gap."""
        per_row: list[list[str]] = [[] for _ in range(n_rows)]
        gap = gaps.tolist() if gaps is not None else [False] * len(rows)
        names = (self.feature_names, self._missing_flags)  # indexed by "is a gap": False 0, True 1
        for row, col, missing in zip(rows.tolist(), cols.tolist(), gap, strict=True):  # only the flagged values
            per_row[row].append(names[missing][col])
        return _encode_flags(per_row)


def _counts(mask: np.ndarray | None) -> np.ndarray | None:
    """Per feature, how many of `mask` are set; None when none is."""
    if mask is None or not np.count_nonzero(mask):
        return None
    return np.asarray(np.count_nonzero(mask, axis=0))


def _training_moments(scaler: Any | None) -> Moments | None:
    """The training moments the scaler's registry entry says it kept, if any."""
    kind = TRANSFORMERS.family(scaler) if scaler is not None else None
    return kind.moments(scaler) if kind is not None else None


def _encode_flags(per_row: list[list[str]]) -> str:
    return json.dumps(per_row, separators=(",", ":"))


def wants_flags(value: object) -> bool:
    """Whether a request's `ood_flags` parameter asks for per-row flags."""
    return flag_parameter(FLAGS_PARAMETER, value)
