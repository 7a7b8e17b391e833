"""The support vector machines (sklearn.svm), served by scikit-learn's own estimator."""

from __future__ import annotations

from sklearn.svm import SVC, SVR

from runtime.core.steps.kinds import Estimator

KINDS = (
    Estimator(SVR),
    # Without probability=True an SVC offers predict and decision_function only.
    Estimator(SVC, examples=({"probability": True, "random_state": 0}, {})),
)
