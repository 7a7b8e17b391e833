"""The prediction path, compiled once at load.

Where the pipeline is a StandardScaler followed by a linear model, the scaler is folded into the
coefficients, so a request costs one matrix product instead of two scikit-learn calls with their
input checks. Anything else runs through scikit-learn with the checks our contract has already
made switched off. The fast path is verified against plain scikit-learn at load and dropped,
with a log line, if it disagrees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import sklearn
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from runtime.artifacts import LoadedPipeline, Manifest
from runtime.errors import NonFiniteOutputError

logger = logging.getLogger("runtime.predictor")

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
REFERENCE_ROWS = 256
RTOL = 1e-9
ATOL = 1e-12

OutputFn = Callable[[np.ndarray], np.ndarray]


def offered_outputs(manifest: Manifest) -> tuple[str, ...]:
    """The outputs a model version answers: `predict`, plus `predict_proba` for classifiers."""
    return (PREDICT, PREDICT_PROBA) if manifest.kind == "classifier" else (PREDICT,)


@dataclass(frozen=True)
class Predictor:
    """Named output functions over a validated float64 matrix."""

    kind: str  # "folded-linear" or "sklearn": which path serves, for logs and metadata
    outputs: dict[str, OutputFn]

    def predict(self, features: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        # Overflow is detected below and refused; numpy's warning would only add a log line.
        with np.errstate(over="ignore", invalid="ignore"):
            results = {name: self.outputs[name](features) for name in names}
        for values in results.values():
            if values.dtype.kind == "f":
                require_finite(values)
        return results


def require_finite(values: np.ndarray) -> np.ndarray:
    """Finite inputs can still overflow (e.g. 1e308 times a weight): refuse, never answer NaN."""
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise NonFiniteOutputError(
            f"row {row}: the prediction is not finite; its inputs lie far outside the range "
            "the model can compute with"
        )
    return values


def compile_predictor(pipeline: LoadedPipeline, seed: int = 0) -> Predictor:
    plain = _sklearn_predictor(pipeline)
    fast = _folded_linear_predictor(pipeline)
    if fast is None:
        return plain
    reference = reference_rows(pipeline, seed)
    for name, fn in plain.outputs.items():
        expected, got = fn(reference), fast.outputs[name](reference)
        if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            logger.warning(
                "folded fast path for output %r differs from scikit-learn by up to %g; "
                "serving with scikit-learn instead",
                name,
                float(np.max(np.abs(got - expected))),
            )
            return plain
    return fast


def reference_rows(pipeline: LoadedPipeline, seed: int) -> np.ndarray:
    """Training-range corners plus seeded uniform rows inside the manifest's per-feature range."""
    ranges = pipeline.manifest.feature_ranges
    low, high = np.asarray(ranges.min), np.asarray(ranges.max)
    rng = np.random.default_rng(seed)
    inside = rng.uniform(low, high, size=(REFERENCE_ROWS, low.size))
    return np.vstack([low, high, (low + high) / 2, inside])


def _sklearn_predictor(pipeline: LoadedPipeline) -> Predictor:
    scaler, model = pipeline.scaler, pipeline.model

    def call(method: str) -> OutputFn:
        bound = getattr(model, method)

        def run(features: np.ndarray) -> np.ndarray:
            # The contract already guarantees a finite float64 [N, F] matrix.
            with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
                x = scaler.transform(features) if scaler is not None else features
                return bound(x)

        return run

    outputs = {name: call(name) for name in offered_outputs(pipeline.manifest)}
    return Predictor(kind="sklearn", outputs=outputs)


def _fold(scaler: Optional[Any], coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) with x @ W + b == scaler.transform(x) @ coef.T + intercept."""
    weights = np.array(coef, dtype=np.float64).T  # [F, K]
    bias = np.array(intercept, dtype=np.float64).reshape(-1)
    if scaler is None:
        return np.ascontiguousarray(weights), bias
    mean = scaler.mean_ if scaler.with_mean else np.zeros(weights.shape[0])
    scale = scaler.scale_ if scaler.with_std else np.ones(weights.shape[0])
    folded = weights / np.asarray(scale, dtype=np.float64)[:, None]
    return np.ascontiguousarray(folded), bias - np.asarray(mean, dtype=np.float64) @ folded


def _folded_linear_predictor(pipeline: LoadedPipeline) -> Optional[Predictor]:
    scaler, model = pipeline.scaler, pipeline.model
    if scaler is not None and type(scaler) is not StandardScaler:
        return None
    if type(model) in (LinearRegression, Ridge):
        weights, bias = _fold(scaler, np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_))
        if weights.shape[1] != 1:
            return None
        w, b = weights[:, 0].copy(), float(bias[0])
        return Predictor(kind="folded-linear", outputs={PREDICT: lambda x: x @ w + b})
    if type(model) is LogisticRegression:
        weights, bias = _fold(scaler, model.coef_, model.intercept_)
        return _logistic(weights, bias, np.asarray(model.classes_))
    return None


def _logistic(weights: np.ndarray, bias: np.ndarray, classes: np.ndarray) -> Predictor:
    if weights.shape[1] == 1:
        w, b = weights[:, 0].copy(), float(bias[0])

        def proba(x: np.ndarray) -> np.ndarray:
            positive = 1.0 / (1.0 + np.exp(-require_finite(x @ w + b)))
            return np.column_stack([1.0 - positive, positive])

        def predict(x: np.ndarray) -> np.ndarray:
            return classes[(require_finite(x @ w + b) > 0).astype(np.intp)]

    else:

        def proba(x: np.ndarray) -> np.ndarray:
            scores = require_finite(x @ weights + bias)
            scores -= scores.max(axis=1, keepdims=True)
            np.exp(scores, out=scores)
            return scores / scores.sum(axis=1, keepdims=True)

        def predict(x: np.ndarray) -> np.ndarray:
            return classes[np.argmax(require_finite(x @ weights + bias), axis=1)]

    return Predictor(kind="folded-linear", outputs={PREDICT: predict, PREDICT_PROBA: proba})
