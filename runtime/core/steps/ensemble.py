"""The ensembles (sklearn.ensemble). A random forest or extra-trees ensemble runs its own
scikit-learn trees in a plain loop, in scikit-learn's order: the forest's joblib dispatch and
per-tree input checks cost more than the trees themselves on a few rows. A gradient boosting model
runs its stages through scikit-learn's own stage loop, its initial prediction (a constant) computed
once: its two input checks per call (the model's and its initial estimator's) cost more than its
trees on a few rows. That loop, the initial prediction and the loss are scikit-learn's private
parts: the integration package reads them through checked points and hands them over
(`use_stage_loop`); until it has, and in any process it has not, scikit-learn's own methods serve
the model. Histogram gradient boosting is served by scikit-learn's own estimator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from runtime.core.outputs import DECISION_FUNCTION, PREDICT, PREDICT_PROBA, OutputFn
from runtime.core.steps.kinds import Estimator, FastPath, Preceding

TREE_LOOP = "tree-loop"
# Trees compare float32 features: scikit-learn casts before it walks them.
TREE_DTYPE = np.float32


def _trees(model: Any, preceding: Preceding) -> tuple[list[Any], OutputFn] | None:
    """The forest's trees in its order and the float32 features they compare; None for a forest with
    several outputs (scikit-learn serves it)."""
    if model.n_outputs_ != 1:
        return None
    return [estimator.tree_ for estimator in model.estimators_], _tree_features(preceding)


def _tree_features(preceding: Preceding) -> OutputFn:
    """The features after the preceding steps as the float32 C-ordered matrix trees compare."""
    transform = preceding.transform

    def features(x: np.ndarray) -> np.ndarray:
        scaled = transform(x) if transform is not None else x
        return np.ascontiguousarray(scaled, dtype=TREE_DTYPE)

    return features


def _forest_regressor(model: Any, preceding: Preceding, offered: tuple[str, ...]) -> dict[str, OutputFn]:
    """The forest's mean of its trees' predictions, summed in the forest's order."""
    found = _trees(model, preceding)
    if found is None:
        return {}
    trees, features = found
    count = len(trees)

    def predict(x: np.ndarray) -> np.ndarray:
        x32 = features(x)
        total = np.zeros(len(x32), dtype=np.float64)
        for tree in trees:
            total += tree.predict(x32).reshape(-1)
        total /= count
        return total

    return {PREDICT: predict}


def _forest_classifier(model: Any, preceding: Preceding, offered: tuple[str, ...]) -> dict[str, OutputFn]:
    """The forest's mean of its trees' probabilities, summed in the forest's order."""
    found = _trees(model, preceding)
    if found is None:
        return {}
    classes = np.asarray(model.classes_)
    n_classes = len(classes)
    trees, features = found
    count = len(trees)

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
        labels: np.ndarray = classes.take(np.argmax(proba(x), axis=1), axis=0)
        return labels

    return {name: fn for name, fn in {PREDICT: predict, PREDICT_PROBA: proba}.items() if name in offered}


@dataclass(frozen=True)
class StageLoop:
    """What the boosted fast path needs of scikit-learn that its public API does not give."""

    # (estimators, X float32 C-ordered, learning rate, out [N, K] float64): adds every stage into out.
    predict_stages: Callable[[Any, np.ndarray, float, np.ndarray], None]
    # A fitted model's raw initial predictions for X, [N, K].
    raw_init: Callable[[Any, np.ndarray], np.ndarray]
    # A fitted classifier's loss, whose predict_proba maps raw predictions to probabilities.
    loss: Callable[[Any], Any]


# The one stage loop handed over by the integration package, once per process (empty until then).
_STAGE_LOOP: list[StageLoop] = []


def use_stage_loop(loop: StageLoop) -> None:
    _STAGE_LOOP[:] = [loop]


BOOSTED_STAGES = "boosted-stages"
# Initial estimators whose prediction is one constant row (the default: the prior or the mean).
_CONSTANT_INIT = (DummyClassifier, DummyRegressor)


def _boosted_raw(model: Any, preceding: Preceding) -> OutputFn | None:
    """x -> the model's raw predictions [N, K], as scikit-learn sums them: the initial estimator's
    constant row, then every stage's trees scaled by the learning rate. None without the stage loop,
    or for another initial estimator, whose prediction may vary by row (scikit-learn serves those)."""
    if not _STAGE_LOOP or not (model.init_ == "zero" or type(model.init_) in _CONSTANT_INIT):
        return None
    loop = _STAGE_LOOP[0]
    features = _tree_features(preceding)
    first = np.zeros((1, model.n_features_in_), dtype=TREE_DTYPE)
    initial = np.asarray(loop.raw_init(model, first), dtype=np.float64)
    estimators, rate = model.estimators_, float(model.learning_rate)

    def raw(x: np.ndarray) -> np.ndarray:
        x32 = features(x)
        out = np.repeat(initial, len(x32), axis=0)  # a fresh array: the stages add into it
        loop.predict_stages(estimators, x32, rate, out)
        return out

    return raw


def _boosted_regressor(model: Any, preceding: Preceding, offered: tuple[str, ...]) -> dict[str, OutputFn]:
    raw = _boosted_raw(model, preceding)
    if raw is None:
        return {}
    return {PREDICT: lambda x: raw(x).ravel()}


def _boosted_classifier(model: Any, preceding: Preceding, offered: tuple[str, ...]) -> dict[str, OutputFn]:
    """decision_function, predict and predict_proba from the raw predictions, as the model's own."""
    raw = _boosted_raw(model, preceding)
    if raw is None:
        return {}
    classes, loss = np.asarray(model.classes_), _STAGE_LOOP[0].loss(model)

    def decision(x: np.ndarray) -> np.ndarray:
        scores = raw(x)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(x: np.ndarray) -> np.ndarray:
        scores = decision(x)
        encoded = (scores >= 0).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)
        labels: np.ndarray = classes[encoded]
        return labels

    def proba(x: np.ndarray) -> np.ndarray:
        return np.asarray(loss.predict_proba(decision(x)))

    candidates = {PREDICT: predict, PREDICT_PROBA: proba, DECISION_FUNCTION: decision}
    return {name: fn for name, fn in candidates.items() if name in offered}


_SMALL_FOREST = ({"n_estimators": 10, "random_state": 0},)
# The trees' float32 comparisons and the forest's sums in its own order: the same bits.
_FOREST_REGRESSOR = FastPath(TREE_LOOP, _forest_regressor, bit_identical=True)
_FOREST_CLASSIFIER = FastPath(TREE_LOOP, _forest_classifier, bit_identical=True)

KINDS = (
    Estimator(RandomForestRegressor, examples=_SMALL_FOREST, fast_path=_FOREST_REGRESSOR),
    Estimator(ExtraTreesRegressor, examples=_SMALL_FOREST, fast_path=_FOREST_REGRESSOR),
    Estimator(RandomForestClassifier, examples=_SMALL_FOREST, fast_path=_FOREST_CLASSIFIER),
    Estimator(ExtraTreesClassifier, examples=_SMALL_FOREST, fast_path=_FOREST_CLASSIFIER),
    Estimator(
        GradientBoostingRegressor,
        examples=({"n_estimators": 20, "random_state": 0},),
        fast_path=FastPath(BOOSTED_STAGES, _boosted_regressor, bit_identical=True),
    ),
    Estimator(
        GradientBoostingClassifier,
        examples=({"n_estimators": 20, "random_state": 0},),
        fast_path=FastPath(BOOSTED_STAGES, _boosted_classifier, bit_identical=True),
    ),
    Estimator(HistGradientBoostingRegressor, examples=({"max_iter": 20, "random_state": 0},), takes_nan=True),
    Estimator(HistGradientBoostingClassifier, examples=({"max_iter": 20, "random_state": 0},), takes_nan=True),
)
