"""The linear models (sklearn.linear_model). A linear model is x @ W + c, so an affine scaler before
it folds into its coefficients and a request costs one matrix product instead of two scikit-learn
calls with their input checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)

from runtime.core.outputs import DECISION_FUNCTION, PREDICT, PREDICT_PROBA, OutputFn, require_finite
from runtime.core.steps.kinds import Affine, Build, Estimator, FastPath, Preceding

FOLDED_LINEAR = "folded-linear"
PROBABILISTIC_SGD_LOSSES = ("log_loss", "modified_huber")

# A multiclass model's decision function [N, K] -> its predict_proba.
Link = Callable[[OutputFn], OutputFn]


def fold(affine: Affine | None, coef: Any, intercept: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, c) with x @ W + c == (x * scale + offset) @ coef.T + intercept, W [F, K]; None without an
    affine map to fold."""
    weights = np.atleast_2d(np.asarray(coef, dtype=np.float64)).T
    bias = np.atleast_1d(np.asarray(intercept, dtype=np.float64)).reshape(-1)
    if affine is None:
        return None
    a, b = (np.asarray(v, dtype=np.float64) for v in (affine.scale, affine.offset))
    return np.ascontiguousarray(weights * a[:, None]), bias + b @ weights


def _regressor(model: Any, preceding: Preceding, offered: tuple[str, ...]) -> dict[str, OutputFn]:
    folded = fold(preceding.affine(), model.coef_, model.intercept_)
    if folded is None:
        return {}
    weights, bias = folded
    if weights.shape[1] != 1 or np.ndim(model.coef_) != 1:
        return {}
    w, c = weights[:, 0].copy(), float(bias[0])
    return {PREDICT: lambda x: x @ w + c}


def _softmax(decision: OutputFn) -> OutputFn:
    """Multinomial logistic regression."""

    def proba(x: np.ndarray) -> np.ndarray:
        scores = decision(x)
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        normalised: np.ndarray = scores / scores.sum(axis=1, keepdims=True)
        return normalised

    return proba


def _normalised_sigmoids(decision: OutputFn) -> OutputFn:
    """One-vs-rest log loss."""

    def proba(x: np.ndarray) -> np.ndarray:
        scores = 1.0 / (1.0 + np.exp(-decision(x)))
        normalised: np.ndarray = scores / scores.sum(axis=1, keepdims=True)
        return normalised

    return proba


def _classifier(link: Callable[[Any], Link | None]) -> Build:
    """The folded outputs of a linear classifier whose multiclass probabilities `link(model)` computes
    from its decision function (None: scikit-learn serves its probabilities)."""

    def build(model: Any, preceding: Preceding, offered: tuple[str, ...]) -> dict[str, OutputFn]:
        folded = fold(preceding.affine(), model.coef_, model.intercept_)
        if folded is None:
            return {}
        return _linear_classifier(model, *folded, link(model), offered)

    return build


def _linear_classifier(
    model: Any, weights: np.ndarray, bias: np.ndarray, link: Link | None, offered: tuple[str, ...]
) -> dict[str, OutputFn]:
    classes = np.asarray(model.classes_)
    binary = weights.shape[1] == 1
    decision, predict = _binary(classes, weights, bias) if binary else _multiclass(classes, weights, bias)
    candidates = {PREDICT: predict, DECISION_FUNCTION: decision}
    if link is not None:
        candidates[PREDICT_PROBA] = _binary_proba(decision) if binary else link(decision)
    return {name: fn for name, fn in candidates.items() if name in offered}


def _binary(classes: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> tuple[OutputFn, OutputFn]:
    """decision_function and predict of a two-class model: one score, positive for classes[1]."""
    w, c = weights[:, 0].copy(), float(bias[0])

    def decision(x: np.ndarray) -> np.ndarray:
        return require_finite(x @ w + c)

    def predict(x: np.ndarray) -> np.ndarray:
        return classes[(decision(x) > 0).astype(np.intp)]

    return decision, predict


def _multiclass(classes: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> tuple[OutputFn, OutputFn]:
    """decision_function and predict of a model with one score per class."""

    def decision(x: np.ndarray) -> np.ndarray:
        return require_finite(x @ weights + bias)

    def predict(x: np.ndarray) -> np.ndarray:
        labels: np.ndarray = classes[np.argmax(decision(x), axis=1)]
        return labels

    return decision, predict


def _binary_proba(decision: OutputFn) -> OutputFn:
    """The sigmoid of a two-class model's one score, for either class."""

    def proba(x: np.ndarray) -> np.ndarray:
        positive = 1.0 / (1.0 + np.exp(-decision(x)))
        return np.column_stack([1.0 - positive, positive])

    return proba


def _sgd_link(model: Any) -> Link | None:
    # modified_huber probabilities are not a sigmoid: scikit-learn serves them.
    return _normalised_sigmoids if model.loss == "log_loss" else None


def _sgd_refusal(model: Any) -> str | None:
    if model.loss in PROBABILISTIC_SGD_LOSSES:
        return None
    return (
        f"SGDClassifier(loss={model.loss!r}) has no probabilities; use loss "
        f"{' or '.join(map(repr, PROBABILISTIC_SGD_LOSSES))}"
    )


_FOLDED_REGRESSOR = FastPath(FOLDED_LINEAR, _regressor)

KINDS = (
    Estimator(LinearRegression, fast_path=_FOLDED_REGRESSOR),
    Estimator(Ridge, fast_path=_FOLDED_REGRESSOR),
    Estimator(Lasso, fast_path=_FOLDED_REGRESSOR),
    Estimator(ElasticNet, fast_path=_FOLDED_REGRESSOR),
    Estimator(SGDRegressor, examples=({"random_state": 0},), fast_path=_FOLDED_REGRESSOR),
    Estimator(
        LogisticRegression,
        examples=({"max_iter": 5000},),
        fast_path=FastPath(FOLDED_LINEAR, _classifier(lambda model: _softmax)),
    ),
    Estimator(
        SGDClassifier,
        examples=({"loss": "log_loss", "random_state": 0}, {"loss": "modified_huber", "random_state": 0}),
        refuse=_sgd_refusal,
        fast_path=FastPath(FOLDED_LINEAR, _classifier(_sgd_link)),
    ),
)
