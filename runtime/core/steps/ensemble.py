"""The ensembles (sklearn.ensemble). A random forest or extra-trees ensemble runs its own
scikit-learn trees in a plain loop, in scikit-learn's order: the forest's joblib dispatch and
per-tree input checks cost more than the trees themselves on a few rows. Boosted ensembles are
served by scikit-learn's own estimator (a faster stage loop would read scikit-learn's private
attributes)."""

from __future__ import annotations

from typing import Any

import numpy as np
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

from runtime.core.outputs import PREDICT, PREDICT_PROBA, OutputFn
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


_SMALL_FOREST = ({"n_estimators": 10, "random_state": 0},)
# The trees' float32 comparisons and the forest's sums in its own order: the same bits.
_FOREST_REGRESSOR = FastPath(TREE_LOOP, _forest_regressor, bit_identical=True)
_FOREST_CLASSIFIER = FastPath(TREE_LOOP, _forest_classifier, bit_identical=True)

KINDS = (
    Estimator(RandomForestRegressor, examples=_SMALL_FOREST, fast_path=_FOREST_REGRESSOR),
    Estimator(ExtraTreesRegressor, examples=_SMALL_FOREST, fast_path=_FOREST_REGRESSOR),
    Estimator(RandomForestClassifier, examples=_SMALL_FOREST, fast_path=_FOREST_CLASSIFIER),
    Estimator(ExtraTreesClassifier, examples=_SMALL_FOREST, fast_path=_FOREST_CLASSIFIER),
    Estimator(GradientBoostingRegressor, examples=({"n_estimators": 20, "random_state": 0},)),
    Estimator(GradientBoostingClassifier, examples=({"n_estimators": 20, "random_state": 0},)),
    Estimator(HistGradientBoostingRegressor, examples=({"max_iter": 20, "random_state": 0},), takes_nan=True),
    Estimator(HistGradientBoostingClassifier, examples=({"max_iter": 20, "random_state": 0},), takes_nan=True),
)
