"""scikit-learn's gradient boosting internals, read for the boosted fast path (runtime.core.steps.ensemble).

A GradientBoosting model's public predict checks its input twice per call (its own check and its
initial estimator's), which costs several times its trees on a few rows. The fast path calls what
predict calls after those checks: the stage loop, the initial raw predictions and the loss's link to
probabilities. All three are private to scikit-learn, so each is a checked point: a release that moved
or reshaped one fails the start naming it, and every model using the path is still compared bit for
bit with scikit-learn's own answers at load (a disagreement serves scikit-learn's methods instead).
Read in every process that serves models (parallel workers too): nothing is replaced.

The stage loop for a dense matrix hands the matrix to a per-tree function, which takes a typed view
of it for every tree: for a few rows those views cost more than the trees (a 100-stage model, 1 row:
~22 of its ~25 µs in-process, about three times that in the server). The loop scikit-learn runs for a
CSR matrix gathers the trees once and walks each row through all of them; handed the rows as a CSR
matrix holding every value (its own test, `value <= threshold`, on the same float32 values, and
every stage added in the same order), its answers are the same bits. So `FEW_ROWS` rows or fewer go
through it, more rows through the dense loop, whose row-inner order is faster for many rows.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

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
STAGES_BY_ROW = read_point(
    "sklearn.ensemble._gradient_boosting:_predict_regression_tree_stages_sparse",
    "the stage loop for CSR rows: every stage's trees gathered once, each row walked through all of them",
    _UPSTREAM,
    "gradient boosting pays a typed view of its input per tree on a few rows",
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
POINTS: list[PatchPoint] = [PREDICT_STAGES, STAGES_BY_ROW, RAW_INIT, LOSS]
# The most rows the loop by row runs: the faster one up to ~24 rows of the bench's `columns` model
# (100 stages of depth 3, 16 features; 1 row 8 µs against 26, 32 rows 53 against 39).
FEW_ROWS = 16


class _Rows(NamedTuple):
    """A float32 C-ordered matrix as the CSR fields the loop by row reads: every value stored."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, ...]


def _as_rows(x: np.ndarray) -> _Rows:
    rows, width = x.shape
    indices, indptr = _positions(width)
    return _Rows(x.reshape(-1), indices[: rows * width], indptr[: rows + 1], x.shape)


@functools.cache
def _positions(width: int) -> tuple[np.ndarray, np.ndarray]:
    """The CSR column indices and row starts of FEW_ROWS full rows of `width` values (a model's
    width: made once, their prefixes serve fewer rows), read-only."""
    indices = np.tile(np.arange(width, dtype=np.int32), FEW_ROWS)
    indptr = np.arange(0, FEW_ROWS * width + 1, width, dtype=np.int32)
    indices.flags.writeable = indptr.flags.writeable = False
    return indices, indptr


def install() -> None:
    """Check the points, then hand the stage loop to the step registry (IntegrationError if one moved)."""
    by_matrix, by_row = check_all(POINTS)[:2]

    def predict_stages(estimators: Any, x: np.ndarray, scale: float, out: np.ndarray) -> None:
        if len(x) <= FEW_ROWS:
            by_row(estimators, _as_rows(x), scale, out)
        else:
            by_matrix(estimators, x, scale, out)

    def raw_init(model: Any, x: np.ndarray) -> np.ndarray:
        return np.asarray(RAW_INIT.read(model)(x))

    use_stage_loop(StageLoop(predict_stages=predict_stages, raw_init=raw_init, loss=LOSS.read))
