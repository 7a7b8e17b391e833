"""The decision trees (sklearn.tree), served by scikit-learn's own estimator."""

from __future__ import annotations

from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from runtime.core.steps.kinds import Estimator

KINDS = (
    Estimator(DecisionTreeRegressor, examples=({"random_state": 0},)),
    Estimator(DecisionTreeClassifier, examples=({"random_state": 0},)),
)
