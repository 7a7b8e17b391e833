"""How far one sample of predictions drifted from another: the population stability index (PSI) and the
two-sample Kolmogorov-Smirnov statistic. Plain numpy: the shadow model computes them on live windows,
`pipeline_tools.rollout analyze` on the counts the metrics hold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PSI_BINS = 10
PSI_EPSILON = 1e-6  # an empty bin would make the index infinite


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of `actual` against `expected`, over `expected`'s deciles."""
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    return psi_from_counts(np.histogram(expected, edges)[0], np.histogram(actual, edges)[0])


def psi_from_counts(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """The same index from counts in the same bins (what metrics hold: rollout analyze)."""
    e_counts, a_counts = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if e_counts.sum() <= 0 or a_counts.sum() <= 0:
        return 0.0
    e = e_counts / e_counts.sum() + PSI_EPSILON
    a = a_counts / a_counts.sum() + PSI_EPSILON
    return float(np.sum((a - e) * np.log(a / e)))


def ks(expected: np.ndarray, actual: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic, max |ECDF_expected - ECDF_actual|: scipy's
    statistic without its exact p-value, which costs milliseconds on a window of a thousand."""
    a, b = np.sort(expected), np.sort(actual)
    points = np.concatenate([a, b])
    gap = np.searchsorted(a, points, side="right") / len(a) - np.searchsorted(b, points, side="right") / len(b)
    return float(np.max(np.abs(gap)))
