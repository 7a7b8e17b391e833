"""The outputs a model version answers: their names, the function type that computes one, and the
refusal of a prediction that is not finite. Shared by the predictor, the step registry's compiled
paths and the response encoder."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from runtime.core.artifacts import Manifest
from runtime.core.errors import NonFiniteOutputError

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
DECISION_FUNCTION = "decision_function"

# One output over a validated float64 [N, F] matrix.
OutputFn = Callable[[np.ndarray], np.ndarray]


def offered_outputs(manifest: Manifest) -> tuple[str, ...]:
    """The outputs a model version answers, as its manifest records them."""
    return tuple(manifest.outputs)


def require_finite(values: np.ndarray) -> np.ndarray:
    """Finite inputs can still overflow (e.g. 1e308 times a weight): refuse, never answer NaN."""
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise NonFiniteOutputError(
            f"row {row}: the prediction is not finite; its inputs lie far outside the range the model can compute with"
        )
    return values
