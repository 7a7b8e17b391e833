"""A shadow model: evaluated on a sample of the primary's validated features, off the request path,
compared with the primary's predictions; its outputs never reach a caller.

The primary answers first; the request's features then go to a bounded buffer (full: dropped and
counted) that one dedicated thread empties on a fixed tick. The request path only appends to a
deque: it never wakes the thread, so the thread takes the GIL from the server's event loop once per
tick however busy the server is, and evaluates everything that arrived meanwhile in one prediction.
Exported (runtime.metrics): agreement (classifiers) or absolute and relative differences
(regressors), the shadow's latency per batch and errors, drops, and over a sliding window of
predictions a population stability index and a two-sample Kolmogorov-Smirnov statistic.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from typing import Callable, Optional, Sequence

import numpy as np
from runtime import metrics

logger = logging.getLogger("runtime.shadow")

PSI_BINS = 10
PSI_EPSILON = 1e-6  # an empty bin would make the index infinite
TICK_S = 0.1  # how often the thread looks for sampled requests
STATS_EVERY_S = 1.0  # PSI/KS recomputed at most this often under load, and once traffic pauses
# Rows per chunk observed into the difference histograms: each row is two Python-level observes
# (~2.5 us), which at 100-row requests cost the primary a third of its throughput; the other rows
# still count towards PSI and KS (vectorised).
DIFF_ROWS_PER_CHUNK = 256
# Requests evaluated at once: a busy tick's batch in pieces, so the thread never holds the GIL
# (and the primary's requests) for more than a few hundred microseconds at a time.
CHUNK = 64

Predict = Callable[[np.ndarray], np.ndarray]  # features -> predictions [N]


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of `actual` against `expected`, over `expected`'s deciles."""
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    return psi_from_counts(np.histogram(expected, edges)[0], np.histogram(actual, edges)[0])


def psi_from_counts(expected: Sequence[float], actual: Sequence[float]) -> float:
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


class Shadow:
    def __init__(self, model: str, shadow: str, classifier: bool, sample_rate: float,
                 queue_size: int, window: int):  # fmt: skip
        self.model, self.shadow, self.classifier = model, shadow, classifier
        self.sample_rate = sample_rate
        self._capacity = queue_size
        # deque.append and popleft are atomic: the event loop and the thread share it without a lock.
        self._pending: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._primary: deque[float] = deque(maxlen=window)
        self._shadowed: deque[float] = deque(maxlen=window)
        self._stale, self._stats_at = False, 0.0
        self._metrics = metrics.ShadowMetrics(model, shadow)
        self._predict: Optional[Predict] = None
        self._thread = threading.Thread(target=self._drain, name=f"shadow-{model}", daemon=True)
        self._thread.start()

    @property
    def bound(self) -> bool:
        return self._predict is not None

    def bind(self, predict: Optional[Predict]) -> None:
        """The shadow's prediction function, once it is loaded (None: not loaded yet)."""
        self._predict = predict

    def offer(self, features: np.ndarray, primary: np.ndarray) -> None:
        """Called after the primary answered; never blocks."""
        if self._predict is None or random.random() >= self.sample_rate:
            return
        if len(self._pending) >= self._capacity:
            self._metrics.count("dropped")
            return
        self._pending.append((features, primary))

    def _drain(self) -> None:
        while True:
            time.sleep(TICK_S)
            batch = [self._pending.popleft() for _ in range(len(self._pending))]
            predict = self._predict
            for start in range(0, len(batch) if predict is not None else 0, CHUNK):
                self._evaluate(predict, batch[start : start + CHUNK])  # type: ignore[arg-type]
                time.sleep(0)  # hands the GIL back to the event loop between chunks
            if self._stale and (not batch or time.monotonic() - self._stats_at >= STATS_EVERY_S):
                self._publish_stats()

    def _evaluate(self, predict: Predict, batch: list[tuple[np.ndarray, np.ndarray]]) -> None:
        features = np.vstack([f for f, _ in batch])
        primary = np.concatenate([p for _, p in batch])
        started = time.perf_counter()
        try:
            shadowed = np.asarray(predict(features))
        except Exception:  # the shadow's failure is only ever counted and logged
            self._metrics.count("error", len(batch))
            logger.exception("shadow %s of %s failed on %d requests", self.shadow, self.model, len(batch))
            return
        self._metrics.observe_batch(time.perf_counter() - started, len(batch))
        self._compare(primary, shadowed)

    def _compare(self, primary: np.ndarray, shadowed: np.ndarray) -> None:
        if self.classifier:
            self._metrics.count("compared", len(primary))
            self._metrics.count("agreed", int(np.sum(primary == shadowed)))
            return
        sampled = slice(0, DIFF_ROWS_PER_CHUNK)
        difference = np.abs(shadowed[sampled].astype(np.float64) - primary[sampled].astype(np.float64))
        relative = difference / np.maximum(np.abs(primary[sampled].astype(np.float64)), 1e-12)
        self._metrics.observe_differences(difference, relative)
        self._primary.extend(primary.tolist())
        self._shadowed.extend(shadowed.tolist())
        self._stale = True

    def _publish_stats(self) -> None:
        p, s = np.asarray(self._primary), np.asarray(self._shadowed)
        self._metrics.set_stats(psi(p, s), ks(p, s), len(p))
        self._stale, self._stats_at = False, time.monotonic()
