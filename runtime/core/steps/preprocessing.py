"""The scalers (sklearn.preprocessing). Each is affine per column, so it folds into a linear model's
weights, and what it learned about the training data bounds the out-of-distribution check."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

from runtime.core.artifacts import FeatureRanges
from runtime.core.steps.kinds import Affine, Arithmetic, Moments, RangesSource, Transformer, no_ranges

# Beyond the scaler's learned spread: RobustScaler's band is center +- this many IQRs.
ROBUST_IQRS = 3.0

Ranges = tuple[FeatureRanges | None, RangesSource]


def _band(low: np.ndarray, high: np.ndarray) -> Ranges:
    return FeatureRanges(min=low.tolist(), max=high.tolist()), "scaler"


def _centred_and_scaled(scaler: Any, centre: np.ndarray | None, scale: np.ndarray | None) -> Affine:
    """(x - centre) / scale; a part the scaler was configured without is left out."""
    n = scaler.n_features_in_
    divisor = scale if scale is not None else np.ones(n)
    shift = centre if centre is not None else np.zeros(n)
    return Affine(1.0 / divisor, -shift / divisor)


def _standard_parts(scaler: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The centre and the scale StandardScaler applies, each None where it is configured without."""
    return scaler.mean_ if scaler.with_mean else None, scaler.scale_ if scaler.with_std else None


def _standard_affine(scaler: Any) -> Affine:
    return _centred_and_scaled(scaler, *_standard_parts(scaler))


def _standard_ranges(scaler: Any) -> Ranges:
    # No band recorded: the runtime's z-score band comes from the moments below.
    return (None, "scaler") if scaler.with_mean and scaler.with_std else (None, "none")


def _standard_moments(scaler: Any) -> Moments | None:
    if scaler.mean_ is None or scaler.scale_ is None:
        return None
    return Moments(np.asarray(scaler.mean_, dtype=np.float64), np.asarray(scaler.scale_, dtype=np.float64))


def _min_max_affine(scaler: Any) -> Affine | None:
    if scaler.clip:
        return None  # clipping is not affine
    return Affine(np.asarray(scaler.scale_), np.asarray(scaler.min_))


def _max_abs_affine(scaler: Any) -> Affine:
    return Affine(1.0 / scaler.scale_, np.zeros(scaler.n_features_in_))


def _robust_parts(scaler: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    return scaler.center_ if scaler.with_centering else None, scaler.scale_ if scaler.with_scaling else None


def _robust_affine(scaler: Any) -> Affine:
    return _centred_and_scaled(scaler, *_robust_parts(scaler))


def _centred_then_scaled(parts: tuple[np.ndarray | None, np.ndarray | None]) -> Arithmetic:
    """transform's own `X -= centre; X /= scale` (StandardScaler, RobustScaler)."""
    centre, scale = parts
    return Arithmetic(subtract=centre, divide=scale)


def _min_max_exact(scaler: Any) -> Arithmetic | None:
    # transform's own `X *= scale_; X += min_`; clipping is left to scikit-learn.
    return None if scaler.clip else Arithmetic(multiply=scaler.scale_, add=scaler.min_)


def _robust_ranges(scaler: Any) -> Ranges:
    if not (scaler.with_centering and scaler.with_scaling):
        return no_ranges(scaler)
    spread = ROBUST_IQRS * scaler.scale_
    return _band(scaler.center_ - spread, scaler.center_ + spread)


# In the order the README names them.
KINDS = (
    Transformer(
        StandardScaler,
        examples=({}, {"with_mean": False}, {"with_std": False}),
        affine=_standard_affine,
        exact=lambda scaler: _centred_then_scaled(_standard_parts(scaler)),
        ranges=_standard_ranges,
        moments=_standard_moments,
    ),
    Transformer(
        MinMaxScaler,
        examples=({}, {"clip": True}),
        affine=_min_max_affine,
        exact=_min_max_exact,
        ranges=lambda scaler: _band(scaler.data_min_, scaler.data_max_),
    ),
    Transformer(
        MaxAbsScaler,
        affine=_max_abs_affine,
        exact=lambda scaler: Arithmetic(divide=scaler.scale_),  # transform's own `X /= scale_`
        ranges=lambda scaler: _band(-scaler.max_abs_, scaler.max_abs_),
    ),
    Transformer(
        RobustScaler,
        examples=({}, {"with_centering": False}),
        affine=_robust_affine,
        exact=lambda scaler: _centred_then_scaled(_robust_parts(scaler)),
        ranges=_robust_ranges,
    ),
)
