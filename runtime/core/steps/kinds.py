"""The fields of a step registry entry: what the runtime declares about one scikit-learn step type.

Every entry says how a fitted instance is checked (`refuse`, `fitted`), which input columns it reads
(`reads`) and the settings it is verified against scikit-learn with (`examples`: tests fit each one,
package it, load it and compare the predictions). A `Transformer` adds the columns it writes, the
affine map it folds into and the out-of-distribution statistics it keeps; an `Estimator` adds its
compiled fast path, if it has one. Every field is read when a pipeline is packaged or loaded, never
per request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from runtime.core.artifacts import FeatureRanges
from runtime.core.outputs import OutputFn

# Where the manifest's feature_ranges of a pipeline without reference data come from.
RangesSource = Literal["scaler", "none"]


@dataclass(frozen=True, eq=False)
class Affine:
    """A per-column affine map: transform(x) == x * scale + offset."""

    scale: np.ndarray
    offset: np.ndarray

    @classmethod
    def identity(cls, n_features: int) -> Affine:
        return cls(np.ones(n_features), np.zeros(n_features))


@dataclass(frozen=True, eq=False)
class Arithmetic:
    """A per-column map operation by operation, as scikit-learn's own transform computes it:
    ((x - subtract) / divide) * multiply + add, a part None where the step skips it. Unlike `Affine`
    (one product and one sum, which rounds differently), its results are bit-identical to the step's."""

    subtract: np.ndarray | None = None
    divide: np.ndarray | None = None
    multiply: np.ndarray | None = None
    add: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # New arrays, never the caller's: a compiled step must not write into its input.
        if self.subtract is not None:
            x = x - self.subtract
        if self.divide is not None:
            x = x / self.divide
        if self.multiply is not None:
            x = x * self.multiply
        if self.add is not None:
            x = x + self.add
        return x


@dataclass(frozen=True, eq=False)
class Moments:
    """The training mean and standard deviation of each input column."""

    mean: np.ndarray
    std: np.ndarray


def fitted_by_sklearn(step: Any) -> bool:
    """scikit-learn's own test: the estimator holds the attributes fit() sets."""
    try:
        check_is_fitted(step)
    except NotFittedError:
        return False
    return True


def accepted(step: Any) -> str | None:
    """No configuration of this step type is refused."""
    return None


def every_column(step: Any) -> int:
    """All the columns the step was fitted on, in order."""
    return int(step.n_features_in_)


def not_affine(step: Any) -> Affine | None:
    return None


def not_exact(step: Any) -> Arithmetic | None:
    return None


def no_ranges(step: Any) -> tuple[FeatureRanges | None, RangesSource]:
    return None, "none"


def no_moments(step: Any) -> Moments | None:
    return None


@dataclass(frozen=True)
class StepKind:
    """What every entry declares. The registry finds an entry by `cls`, the exact scikit-learn class."""

    cls: type
    # Constructor settings the entry is verified with against scikit-learn (tests/unit/test_steps.py).
    examples: tuple[Mapping[str, Any], ...] = ({},)
    # A fitted configuration the runtime cannot serve: the one line the packager refuses it with.
    refuse: Callable[[Any], str | None] = accepted
    fitted: Callable[[Any], bool] = fitted_by_sklearn
    # How many input columns the step reads; every step reads all of its input's columns in order.
    reads: Callable[[Any], int] = every_column

    @property
    def name(self) -> str:
        return self.cls.__name__


@dataclass(frozen=True)
class Transformer(StepKind):
    """A step before the estimator."""

    writes: Callable[[Any], int] = every_column
    # The step as x * scale + offset per column, or None where it is not affine (then nothing folds).
    affine: Callable[[Any], Affine | None] = not_affine
    # The step's transform as scikit-learn computes it, for a bit-identical compiled pipeline; None
    # where it is not such a map (then the pipeline is served by scikit-learn).
    exact: Callable[[Any], Arithmetic | None] = not_exact
    # The band the packager records in the manifest, with its source, when no reference data is given.
    ranges: Callable[[Any], tuple[FeatureRanges | None, RangesSource]] = no_ranges
    # Training moments the runtime narrows that band with (a z-score test), if the step kept them.
    moments: Callable[[Any], Moments | None] = no_moments


@dataclass(frozen=True)
class Preceding:
    """The steps before the estimator, as its fast path sees them: at most one scaler today."""

    n_features: int
    step: Any | None
    kind: Transformer | None  # None for a step type the registry does not know: nothing folds

    def affine(self) -> Affine | None:
        """These steps as one affine map, or None when one of them is not affine."""
        if self.step is None:
            return Affine.identity(self.n_features)
        return self.kind.affine(self.step) if self.kind is not None else None

    @property
    def transform(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The steps' own scikit-learn transform, None without any."""
        return self.step.transform if self.step is not None else None


# (fitted estimator, the steps before it, the outputs its manifest offers) -> the compiled outputs
# it can serve, a subset of those offered (scikit-learn serves the rest).
Build = Callable[[Any, Preceding, tuple[str, ...]], dict[str, OutputFn]]


@dataclass(frozen=True)
class FastPath:
    """A compiled prediction path; the predictor checks each output it builds against scikit-learn at
    load and keeps only those that agree."""

    name: str  # the predictor kind reported when every output is compiled ("folded-linear", ...)
    build: Build
    # Computes each row as scikit-learn does, operation by operation and independent of the other
    # rows (no matrix product, whose rounding BLAS may vary with the batch), so agreeing bit for bit
    # on the reference rows means agreeing on every request: a compiled pipeline may end in it.
    bit_identical: bool = False


@dataclass(frozen=True)
class Estimator(StepKind):
    """The last step: the model. Without a fast path, scikit-learn's own estimator serves it."""

    fast_path: FastPath | None = None
    # Takes NaN itself as a missing value (HistGradientBoosting): a column it reads may be missing.
    takes_nan: bool = False
