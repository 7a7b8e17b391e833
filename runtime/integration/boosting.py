"""scikit-learn's gradient boosting internals, read for the boosted fast path (runtime.core.steps.ensemble).

A GradientBoosting model's public predict checks its input twice per call (its own check and its
initial estimator's), which costs several times its trees on a few rows. The fast path calls what
predict calls after those checks: the stage loop, the initial raw predictions and the loss's link to
probabilities. All three are private to scikit-learn, so each is a checked point: a release that moved
or reshaped one fails the start naming it, and every model using the path is still compared bit for
bit with scikit-learn's own answers at load (a disagreement serves scikit-learn's methods instead).
Read in every process that serves models (parallel workers too): nothing is replaced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.core.steps.ensemble import StageLoop, use_stage_loop
from runtime.integration.patching import PatchPoint, check_all, read_point

_UPSTREAM = "none: scikit-learn has no public predict without its input checks"
_LOST = "gradient boosting models are served by their own predict, with its two input checks per call"

PREDICT_STAGES = read_point(
    "sklearn.ensemble._gradient_boosting:predict_stages",
    "the loop that adds every stage's trees, scaled by the learning rate, into the raw predictions",
    _UPSTREAM,
    _LOST,
    set_by=None,
    params=("estimators", "X", "scale", "out"),
)
RAW_INIT = read_point(
    "sklearn.ensemble._gb:BaseGradientBoosting._raw_predict_init",
    "a fitted model's initial raw predictions (its init estimator's, through the loss's link)",
    _UPSTREAM,
    _LOST,
    set_by=None,
    params=("self", "X"),
)
LOSS = read_point(
    "sklearn.ensemble._gb:BaseGradientBoosting._loss",
    "a fitted classifier's loss, whose predict_proba maps raw predictions to probabilities",
    _UPSTREAM,
    _LOST,
    set_by="fit",
)
POINTS: list[PatchPoint] = [PREDICT_STAGES, RAW_INIT, LOSS]


def install() -> None:
    """Check the points, then hand the stage loop to the step registry (IntegrationError if one moved)."""
    predict_stages = check_all(POINTS)[0]

    def raw_init(model: Any, x: np.ndarray) -> np.ndarray:
        return np.asarray(RAW_INIT.read(model)(x))

    use_stage_loop(StageLoop(predict_stages=predict_stages, raw_init=raw_init, loss=LOSS.read))
