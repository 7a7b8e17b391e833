"""The nearest-neighbour models (sklearn.neighbors), served by scikit-learn's own estimator."""

from __future__ import annotations

from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

from runtime.core.steps.kinds import Estimator

KINDS = (
    Estimator(KNeighborsRegressor),
    Estimator(KNeighborsClassifier),
)
