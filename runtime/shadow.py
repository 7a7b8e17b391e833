"""A shadow model: evaluated on a sample of the primary's validated features, off the request path,
compared with the primary's predictions; its outputs never reach a caller.

The primary answers first; the request's features then go to a bounded queue (full: dropped and
counted) that one dedicated thread drains, so the shadow costs the primary's callers no waiting.
Exported (runtime.metrics): agreement (classifiers) or absolute and relative differences
(regressors), the shadow's latency and errors, drops, and over a sliding window of predictions a
population stability index and a two-sample Kolmogorov-Smirnov statistic between the two.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import deque
from typing import Callable, Optional

import numpy as np
from runtime import metrics

logger = logging.getLogger("runtime.shadow")

PSI_BINS = 10
PSI_EPSILON = 1e-6  # an empty bin would make the index infinite
STATS_EVERY = 50  # recompute PSI/KS after this many new predictions
MAX_BATCH = 256  # queued requests the shadow evaluates at once
BATCH_PAUSE_S = 0.005

Predict = Callable[[np.ndarray], np.ndarray]  # features -> predictions [N]


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of `actual` against `expected`, over `expected`'s deciles."""
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / len(expected) + PSI_EPSILON
    a = np.histogram(actual, edges)[0] / len(actual) + PSI_EPSILON
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
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._primary: deque[float] = deque(maxlen=window)
        self._shadowed: deque[float] = deque(maxlen=window)
        self._since_stats = 0
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
        try:
            self._queue.put_nowait((features, primary))
        except queue.Full:
            metrics.count_shadow(self.model, self.shadow, "dropped")

    def _drain(self) -> None:
        # In batches, with a pause between them: one wake-up and one prediction for many requests,
        # so the shadow thread takes the GIL from the server's event loop as rarely as it can.
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            predict = self._predict
            if predict is not None:
                self._evaluate(predict, batch)
            time.sleep(BATCH_PAUSE_S)

    def _evaluate(self, predict: Predict, batch: list[tuple[np.ndarray, np.ndarray]]) -> None:
        features = np.vstack([f for f, _ in batch])
        primary = np.concatenate([p for _, p in batch])
        started = time.perf_counter()
        try:
            shadowed = np.asarray(predict(features))
        except Exception:  # the shadow's failure is only ever counted and logged
            metrics.count_shadow(self.model, self.shadow, "error", len(batch))
            logger.exception("shadow %s of %s failed", self.shadow, self.model)
            return
        metrics.observe_shadow_seconds(self.model, self.shadow, time.perf_counter() - started, len(batch))
        self._compare(primary, shadowed)

    def _compare(self, primary: np.ndarray, shadowed: np.ndarray) -> None:
        if self.classifier:
            metrics.count_shadow(self.model, self.shadow, "compared", len(primary))
            metrics.count_shadow(self.model, self.shadow, "agreed", int(np.sum(primary == shadowed)))
            return
        difference = np.abs(shadowed.astype(np.float64) - primary.astype(np.float64))
        relative = difference / np.maximum(np.abs(primary.astype(np.float64)), 1e-12)
        metrics.observe_shadow_differences(self.model, self.shadow, difference, relative)
        self._primary.extend(primary.tolist())
        self._shadowed.extend(shadowed.tolist())
        self._since_stats += len(primary)
        if self._since_stats >= STATS_EVERY:
            self._since_stats = 0
            p, s = np.asarray(self._primary), np.asarray(self._shadowed)
            metrics.set_shadow_stats(self.model, self.shadow, psi(p, s), ks(p, s), len(p))
