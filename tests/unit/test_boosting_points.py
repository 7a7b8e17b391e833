"""The boosted fast path exists only once the integration hands over scikit-learn's stage loop
(runtime.integration.boosting); without it, gradient boosting runs scikit-learn's own methods."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

from runtime.core.steps import ensemble
from runtime.core.steps.kinds import Preceding
from runtime.core.steps.registry import ESTIMATORS
from runtime.integration import boosting


def _fast_outputs(model, outputs):
    kind = ESTIMATORS.of(model)
    assert kind is not None and kind.fast_path is not None
    return kind.fast_path.build(model, Preceding(model.n_features_in_, None, None), outputs)


def test_without_the_stage_loop_there_is_no_boosted_path(monkeypatch):
    x, y = load_diabetes(return_X_y=True)
    model = GradientBoostingRegressor(n_estimators=5, random_state=0).fit(x, y)
    monkeypatch.setattr(ensemble, "_STAGE_LOOP", [])
    assert _fast_outputs(model, ("predict",)) == {}
    boosting.install()
    assert set(_fast_outputs(model, ("predict",))) == {"predict"}


# One row and the most the loop by row takes, then the dense loop's.
@pytest.mark.parametrize("rows", [1, boosting.FEW_ROWS, boosting.FEW_ROWS + 1, None])
@pytest.mark.parametrize("classes", [2, 3])
def test_the_stage_loop_answers_scikit_learns_bits(classes, rows):
    x, y = load_diabetes(return_X_y=True)
    labels = np.digitize(y, np.quantile(y, np.linspace(0, 1, classes + 1)[1:-1]))
    model = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(x, labels)
    boosting.install()
    outputs = _fast_outputs(model, ("predict", "predict_proba", "decision_function"))
    x = x[:rows]
    for name, fn in outputs.items():
        assert np.array_equal(fn(x), getattr(model, name)(x)), name
