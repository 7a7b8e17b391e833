"""The prediction path, compiled once at load.

Every supported scaler is affine per feature (x * a + b), and a linear model is x @ W + c, so
where the model is linear the scaler folds into its coefficients and a request costs one matrix
product instead of two scikit-learn calls with their input checks. A random forest or extra-trees
ensemble runs its own scikit-learn trees in a plain loop, in scikit-learn's order (the forest's
joblib dispatch and per-tree input checks cost ten times the trees themselves on a few rows).
Anything else runs scikit-learn's own estimator with the checks our contract has already made
switched off. Each compiled output is verified against plain scikit-learn at load and dropped,
with a log line, if it disagrees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

from runtime.core.artifacts import LoadedPipeline, Manifest
from runtime.core.errors import NonFiniteOutputError

logger = logging.getLogger("runtime.core.predictor")

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
DECISION_FUNCTION = "decision_function"
REFERENCE_ROWS = 256
RTOL = 1e-9
ATOL = 1e-12

# Every scaler affine() folds, in the order the README names them.
AFFINE_SCALERS = (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler)
LINEAR_REGRESSORS = (LinearRegression, Ridge, Lasso, ElasticNet, SGDRegressor)
LINEAR_CLASSIFIERS = (LogisticRegression, SGDClassifier)
FOREST_REGRESSORS = (RandomForestRegressor, ExtraTreesRegressor)
FOREST_CLASSIFIERS = (RandomForestClassifier, ExtraTreesClassifier)
# Trees compare float32 features: scikit-learn casts before it walks them.
TREE_DTYPE = np.float32

OutputFn = Callable[[np.ndarray], np.ndarray]


def offered_outputs(manifest: Manifest) -> tuple[str, ...]:
    """The outputs a model version answers, as its manifest records them."""
    return tuple(manifest.outputs)


@dataclass(frozen=True)
class Predictor:
    """Named output functions over a validated float64 matrix."""

    kind: str  # "folded-linear" or "tree-loop" when every output is compiled, else "sklearn"
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
            f"row {row}: the prediction is not finite; its inputs lie far outside the range the model can compute with"
        )
    return values


def compile_predictor(pipeline: LoadedPipeline, seed: int = 0) -> Predictor:
    """Per output, the folded function where it matches scikit-learn on reference rows, else
    scikit-learn's own."""
    plain = _sklearn_outputs(pipeline)
    compiled_kind, folded = _compiled_outputs(pipeline)
    if not folded:
        return Predictor(kind="sklearn", outputs=plain)
    reference = reference_rows(pipeline, seed)
    outputs = dict(plain)
    for name, fn in folded.items():
        if _agrees(plain[name], fn, reference):
            outputs[name] = fn
        else:
            logger.warning(
                "%s fast path for output %r disagrees with scikit-learn; serving it with scikit-learn instead",
                compiled_kind,
                name,
            )
    kind = compiled_kind if all(outputs[n] is folded.get(n) for n in outputs) else "sklearn"
    return Predictor(kind=kind, outputs=outputs)


def _agrees(reference_fn: OutputFn, candidate: OutputFn, rows: np.ndarray) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        expected = reference_fn(rows)
        try:
            got = candidate(rows)
        except Exception:  # a compiled path that cannot even run is a disagreement
            logger.exception("compiled path failed on the reference rows")
            return False
    return _same(expected, got)


def _same(expected: np.ndarray, got: np.ndarray) -> bool:
    if expected.shape != got.shape:
        return False
    if expected.dtype.kind in "fc":
        return bool(np.allclose(got, expected, rtol=RTOL, atol=ATOL))
    return bool(np.array_equal(got, expected))


def reference_rows(pipeline: LoadedPipeline, seed: int) -> np.ndarray:
    """Rows to check the compiled path on: inside the manifest's per-feature ranges (with their
    corners) when it has them, else drawn around what the scaler learned, else standard normal."""
    rng = np.random.default_rng(seed)
    ranges = pipeline.manifest.feature_ranges
    n = pipeline.manifest.n_features
    if ranges is not None:
        low, high = np.asarray(ranges.min), np.asarray(ranges.max)
        inside = rng.uniform(low, high, size=(REFERENCE_ROWS, low.size))
        return np.vstack([low, high, (low + high) / 2, inside])
    standard = rng.normal(size=(REFERENCE_ROWS, n))
    if pipeline.scaler is not None:
        return np.asarray(pipeline.scaler.inverse_transform(standard), dtype=np.float64)
    return standard


def _sklearn_outputs(pipeline: LoadedPipeline) -> dict[str, OutputFn]:
    scaler, model = pipeline.scaler, pipeline.model

    def call(method: str) -> OutputFn:
        bound = getattr(model, method)

        def run(features: np.ndarray) -> np.ndarray:
            # The contract already guarantees a finite float64 [N, F] matrix.
            with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
                x = scaler.transform(features) if scaler is not None else features
                return np.asarray(bound(x))

        return run

    return {name: call(name) for name in offered_outputs(pipeline.manifest)}


# ------------------------------------------------------------------------------ folding


def affine(scaler: Any | None, n_features: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) with scaler.transform(x) == x * a + b, or None for a scaler that is not affine."""
    ones, zeros = np.ones(n_features), np.zeros(n_features)
    if scaler is None:
        return ones, zeros
    kind = type(scaler)
    if kind is StandardScaler:
        scale = scaler.scale_ if scaler.with_std else ones
        mean = scaler.mean_ if scaler.with_mean else zeros
        return 1.0 / scale, -mean / scale
    if kind is MinMaxScaler:
        if scaler.clip:
            return None  # clipping is not affine
        return np.asarray(scaler.scale_), np.asarray(scaler.min_)
    if kind is MaxAbsScaler:
        return 1.0 / scaler.scale_, zeros
    if kind is RobustScaler:
        scale = scaler.scale_ if scaler.with_scaling else ones
        center = scaler.center_ if scaler.with_centering else zeros
        return 1.0 / scale, -center / scale
    return None


def _fold(scaler: Any | None, coef: Any, intercept: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, c) with x @ W + c == scaler.transform(x) @ coef.T + intercept, W [F, K]."""
    weights = np.atleast_2d(np.asarray(coef, dtype=np.float64)).T
    bias = np.atleast_1d(np.asarray(intercept, dtype=np.float64)).reshape(-1)
    ab = affine(scaler, weights.shape[0])
    if ab is None:
        return None
    a, b = (np.asarray(v, dtype=np.float64) for v in ab)
    return np.ascontiguousarray(weights * a[:, None]), bias + b @ weights


def _compiled_outputs(pipeline: LoadedPipeline) -> tuple[str, dict[str, OutputFn]]:
    """The compiled candidate per output ("folded-linear" or "tree-loop"), or none."""
    if isinstance(pipeline.model, FOREST_REGRESSORS + FOREST_CLASSIFIERS):
        return "tree-loop", _forest_outputs(pipeline)
    return "folded-linear", _folded_outputs(pipeline)


def _folded_outputs(pipeline: LoadedPipeline) -> dict[str, OutputFn]:
    model = pipeline.model
    if type(model) not in LINEAR_REGRESSORS + LINEAR_CLASSIFIERS:
        return {}
    folded = _fold(pipeline.scaler, model.coef_, model.intercept_)
    if folded is None:
        return {}
    weights, bias = folded
    if type(model) in LINEAR_REGRESSORS:
        if weights.shape[1] != 1 or np.ndim(model.coef_) != 1:
            return {}
        w, c = weights[:, 0].copy(), float(bias[0])
        return {PREDICT: lambda x: x @ w + c}
    return _linear_classifier(model, weights, bias, pipeline.manifest.outputs)


def _linear_classifier(model: Any, weights: np.ndarray, bias: np.ndarray, offered: list[str]) -> dict[str, OutputFn]:
    classes = np.asarray(model.classes_)
    binary = weights.shape[1] == 1
    if binary:
        w, c = weights[:, 0].copy(), float(bias[0])

        def decision(x: np.ndarray) -> np.ndarray:
            return require_finite(x @ w + c)

        def predict(x: np.ndarray) -> np.ndarray:
            return classes[(decision(x) > 0).astype(np.intp)]

        def proba(x: np.ndarray) -> np.ndarray:
            positive = 1.0 / (1.0 + np.exp(-decision(x)))
            return np.column_stack([1.0 - positive, positive])

    else:

        def decision(x: np.ndarray) -> np.ndarray:
            return require_finite(x @ weights + bias)

        def predict(x: np.ndarray) -> np.ndarray:
            return classes[np.argmax(decision(x), axis=1)]

        def proba(x: np.ndarray) -> np.ndarray:
            scores = decision(x)
            if type(model) is LogisticRegression:  # multinomial: softmax
                scores -= scores.max(axis=1, keepdims=True)
                np.exp(scores, out=scores)
            else:  # one-vs-rest log loss: normalised sigmoids
                scores = 1.0 / (1.0 + np.exp(-scores))
            return scores / scores.sum(axis=1, keepdims=True)

    candidates = {PREDICT: predict, DECISION_FUNCTION: decision}
    # SGDClassifier's modified_huber probabilities are not a sigmoid: scikit-learn serves them.
    if type(model) is LogisticRegression or getattr(model, "loss", None) == "log_loss":
        candidates[PREDICT_PROBA] = proba
    return {name: fn for name, fn in candidates.items() if name in offered}


# ------------------------------------------------------------------------------ forests


def _forest_outputs(pipeline: LoadedPipeline) -> dict[str, OutputFn]:
    """scikit-learn's forest predictions without its per-call dispatch: each tree's own predict,
    summed in the forest's order, divided as the forest divides."""
    scaler, model = pipeline.scaler, pipeline.model
    if type(model) not in FOREST_REGRESSORS + FOREST_CLASSIFIERS or model.n_outputs_ != 1:
        return {}
    trees = [estimator.tree_ for estimator in model.estimators_]
    count = len(trees)

    def features(x: np.ndarray) -> np.ndarray:
        scaled = scaler.transform(x) if scaler is not None else x
        return np.asarray(scaled, dtype=TREE_DTYPE)

    if type(model) in FOREST_REGRESSORS:

        def predict(x: np.ndarray) -> np.ndarray:
            x32 = features(x)
            total = np.zeros(len(x32), dtype=np.float64)
            for tree in trees:
                total += tree.predict(x32).reshape(-1)
            total /= count
            return total

        return {PREDICT: predict}

    classes = np.asarray(model.classes_)
    n_classes = len(classes)

    def proba(x: np.ndarray) -> np.ndarray:
        x32 = features(x)
        total = np.zeros((len(x32), n_classes), dtype=np.float64)
        for tree in trees:
            # As DecisionTreeClassifier.predict_proba (its leaves hold fractions already); an
            # older scikit-learn that normalises here fails the check at load and serves itself.
            total += tree.predict(x32)[:, :n_classes]
        total /= count
        return total

    def predict(x: np.ndarray) -> np.ndarray:
        return classes.take(np.argmax(proba(x), axis=1), axis=0)

    return {
        name: fn for name, fn in {PREDICT: predict, PREDICT_PROBA: proba}.items() if name in pipeline.manifest.outputs
    }
