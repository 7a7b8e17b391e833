"""A shadow model: evaluated on a sample of the primary's validated features, off the request path,
compared with the primary's predictions; its outputs never reach a caller.

The primary answers first; the request's features then go to a bounded buffer (full: dropped and
counted). Everything but the shadow's own prediction runs on the server's event loop, in one short
callback per tick: a thread that woke up for it would contend for the GIL with the loop, and on a
busy server every I/O call of the loop then became a GIL hand-off, which cost CPU per request and p99
(docs/performance.md, "Shadow model"). Only `predict` runs on the shadow's own thread,
once per tick on everything that arrived meanwhile, so a slow or hanging shadow delays only its
own next batch (meanwhile the buffer fills and drops).
The shadow model is looked up by name for every batch (the adapter's `find`), never held: an
unloaded shadow's batches are skipped and counted, and a reloaded one is the new version at once,
its window of predictions restarted with it. A shadow is handed a batch only if its own contract
would have accepted every request the primary's accepted (`schema_mismatch`: the same columns in the
same order and kinds, a gap wherever the primary takes one, no category it refuses that the primary
lets through); otherwise its batches are skipped and counted as `incompatible`, and the reason logged
once.
Exported (runtime.observation.metrics): agreement (classifiers) or absolute and relative differences
(regressors), the shadow's latency per batch and errors, drops, and over a sliding window of
predictions a population stability index and a two-sample Kolmogorov-Smirnov statistic.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from runtime.core.contract import Contract
from runtime.core.drift import ks, psi
from runtime.observation import metrics

logger = logging.getLogger("runtime.service.shadow")

# Sampled requests wait at most this long before they are evaluated together. Each tick holds the
# event loop briefly, and the requests in flight then wait that much: few ticks a second keep the
# share of requests that wait small enough not to show in p99 (docs/performance.md, "Shadow model").
TICK_S = 0.5
STATS_EVERY_S = 1.0  # PSI/KS recomputed at most this often under load, and once traffic pauses
# Rows one tick hands to the shadow: bounds the loop's work per tick (taking, comparing). As soon as
# this many wait, the tick comes at once: large requests fill a tick with many times this, and one
# burst of pieces held the loop long enough to show in the primary's p99 (docs/performance.md,
# "Shadow model").
ROWS_PER_TICK = 4096

Predict = Callable[[np.ndarray], np.ndarray]  # features -> predictions [N]
# A shadow model's predictions by its name as loaded now; None when it is not loaded, ShadowMismatch
# raised when it is but cannot take the primary's features. Equal results are the same loaded version.
Find = Callable[[str], Predict | None]


class ShadowMismatch(Exception):
    """The shadow is loaded but its contract might refuse the primary's features; the message says why."""


def schema_mismatch(primary: Contract, shadow: Contract) -> str | None:
    """Why `shadow`'s contract might refuse features `primary`'s accepted; None when it takes them all."""
    if shadow.feature_names != primary.feature_names:
        return (
            f"it takes features {', '.join(shadow.feature_names)}; the primary sends {', '.join(primary.feature_names)}"
        )
    problems = [
        f"column '{name}' {problem}"
        for name, p, s in zip(primary.feature_names, _columns(primary), _columns(shadow), strict=True)
        for problem in _column_problems(p, s)
    ]
    return "; ".join(problems) or None


class _Column(NamedTuple):
    kind: str
    missing: bool  # may be missing
    allowed: frozenset[Any] | None  # the categories outside which a value is refused; None: any value


def _columns(contract: Contract) -> list[_Column]:
    n = contract.n_features
    strings = contract.string_columns or (False,) * n
    missing = contract.may_be_missing or (False,) * n
    refused = contract.categories or (None,) * n
    return [
        _Column("string" if s else "numeric", m, None if r is None else r.allowed)
        for s, m, r in zip(strings, missing, refused, strict=True)
    ]


def _column_problems(primary: _Column, shadow: _Column) -> list[str]:
    problems = []
    if primary.kind != shadow.kind:
        problems.append(f"is {shadow.kind} for the shadow, {primary.kind} for the primary")
    if primary.missing and not shadow.missing:
        problems.append("may be missing for the primary, not for the shadow")
    if shadow.allowed is not None and (primary.allowed is None or not primary.allowed <= shadow.allowed):
        problems.append("has categories the shadow refuses and the primary takes")
    return problems


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Shadow:
    def __init__(
        self, model: str, shadow: str, classifier: bool, sample_rate: float, queue_size: int, window: int, find: Find
    ):
        self.model, self.shadow, self.classifier = model, shadow, classifier
        self._find = find
        self.sample_rate = sample_rate
        self._pending = _Pending(queue_size)
        self._window = _Window(window)
        self._stale, self._stats_at = False, 0.0
        self._metrics = metrics.ShadowMetrics(model, shadow)
        self._version: Predict | None = None  # the shadow version the window's pairs come from
        self._mismatch: str | None = None  # why the shadow found last cannot take the primary's features
        self._worker = _Worker(f"shadow-{model}")
        self._tick_handle: asyncio.TimerHandle | None = None
        self._in_flight = False  # one batch at the shadow at a time
        self._backlog = False  # the last tick left requests behind (ROWS_PER_TICK)
        self._closed = False
        # The primary's loop: a primary that computes on a thread (offload_compute, a cap, a
        # deadline or a budget) offers from that thread, and the buffer belongs to the loop.
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def close(self) -> None:
        """The primary is unloaded (or reloaded: a new Shadow comes with it): no more evaluations,
        and the thread ends instead of lingering for the life of the process."""
        self._closed = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        self._worker.stop()

    def offer(self, features: np.ndarray, primary: np.ndarray) -> None:
        """Called after the primary answered, on the event loop or the thread that computed it;
        never blocks."""
        if self._closed or random.random() >= self.sample_rate:
            return
        if _on_a_loop():
            self._take(features, primary)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._take, features, primary)

    def _take(self, features: np.ndarray, primary: np.ndarray) -> None:
        if self._closed:
            return
        if not self._pending.add(features, primary):
            self._metrics.count("dropped")
            return
        full = self._pending.rows >= ROWS_PER_TICK
        if full and self._tick_handle is not None:  # a full piece waits: now, not at the end of the tick
            self._tick_handle.cancel()
            self._tick_handle = None
        self._schedule(0.0 if full else TICK_S)

    def _schedule(self, delay: float) -> None:
        if self._tick_handle is None and not self._in_flight:
            self._tick_handle = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._tick_handle = None
        predict = self._found() if self._pending.requests else None
        if predict is None:
            if self._pending.requests:
                self._metrics.count("incompatible" if self._mismatch else "skipped", self._pending.clear())
            if self._stale:  # traffic paused: the window's last state
                self._publish_stats()
            return
        features, primary, requests = self._pending.take(ROWS_PER_TICK)
        self._backlog = self._pending.requests > 0
        self._in_flight = True
        done = asyncio.wrap_future(self._worker.submit(_timed, predict, features))
        done.add_done_callback(partial(self._evaluated, primary, requests))

    def _found(self) -> Predict | None:
        """The shadow as loaded now, if it takes the primary's features; a new version restarts the
        window PSI and KS are taken over."""
        try:
            predict = None if self._closed else self._find(self.shadow)
        except ShadowMismatch as mismatch:
            if str(mismatch) != self._mismatch:  # once per reason, not per tick
                logger.warning(
                    "shadow %s of %s cannot take its features (%s): its batches are skipped",
                    self.shadow,
                    self.model,
                    mismatch,
                )
            self._mismatch, self._version = str(mismatch), None
            return None
        self._mismatch = None
        if predict is None:
            if self._version is not None:
                logger.warning("shadow %s of %s is not loaded: its batches are skipped", self.shadow, self.model)
            self._version = None
            return None
        if predict != self._version:
            self._window.clear()
            self._stale = False  # nothing of the new version to publish yet
            self._version = predict
        return predict

    def _evaluated(self, primary: np.ndarray, requests: int, done: asyncio.Future[tuple[np.ndarray, float]]) -> None:
        self._in_flight = False
        try:
            shadowed, seconds = done.result()
        except Exception:  # the shadow's failure is only ever counted and logged
            self._metrics.count("error", requests)
            logger.exception("shadow %s of %s failed on %d requests", self.shadow, self.model, requests)
        else:
            self._metrics.observe_batch(seconds, requests)
            self._compare(primary, np.asarray(shadowed))
            if self._stale and time.monotonic() - self._stats_at >= STATS_EVERY_S:
                self._publish_stats()
        if not self._closed:
            # Straight on through a backlog; else the next tick, which publishes once traffic pauses.
            self._schedule(0.0 if self._backlog else TICK_S)

    def _compare(self, primary: np.ndarray, shadowed: np.ndarray) -> None:
        if self.classifier:
            self._metrics.count("compared", len(primary))
            self._metrics.count("agreed", int(np.sum(primary == shadowed)))
            return
        primary, shadowed = primary.astype(np.float64), shadowed.astype(np.float64)
        difference = np.abs(shadowed - primary)
        relative = difference / np.maximum(np.abs(primary), 1e-12)
        self._metrics.observe_differences(difference, relative)
        self._window.add(primary, shadowed)
        self._stale = True

    def _publish_stats(self) -> None:
        p, s = self._window.pairs().T
        self._metrics.set_stats(psi(p, s), ks(p, s), len(p))
        self._stale, self._stats_at = False, time.monotonic()


class _Window:
    """The last `size` (primary, shadow) prediction pairs, in a ring: PSI and KS need no order."""

    def __init__(self, size: int):
        self._pairs = np.empty((size, 2))
        self._next, self._full = 0, False

    def add(self, primary: np.ndarray, shadowed: np.ndarray) -> None:
        size = len(self._pairs)
        pairs = np.column_stack([primary, shadowed])[-size:]
        first = min(len(pairs), size - self._next)  # up to the ring's end, the rest from its start
        self._pairs[self._next : self._next + first] = pairs[:first]
        self._pairs[: len(pairs) - first] = pairs[first:]
        self._full = self._full or self._next + len(pairs) >= size
        self._next = (self._next + len(pairs)) % size

    def pairs(self) -> np.ndarray:
        return self._pairs if self._full else self._pairs[: self._next]

    def clear(self) -> None:
        self._next, self._full = 0, False


class _Pending:
    """Sampled requests waiting for the shadow (event loop only). Each request's rows are copied on
    arrival into one growing block, so a tick takes its batch as a slice: stacking a tick's many small
    arrays at once blocked the loop (docs/performance.md, "Shadow model"). Bounded by requests, like a
    queue."""

    def __init__(self, capacity: int):
        self.capacity, self.requests = capacity, 0
        self._ends: list[int] = []  # each waiting request's last row + 1
        self._features: np.ndarray = np.empty(0)  # rows x features once the first request came
        self._predictions: np.ndarray = np.empty(0)

    @property
    def rows(self) -> int:
        return self._ends[-1] if self._ends else 0

    def add(self, features: np.ndarray, predictions: np.ndarray) -> bool:
        """False (nothing kept) when `capacity` requests already wait."""
        if self.requests >= self.capacity:
            return False
        start, end = self.rows, self.rows + len(features)
        if end > len(self._features):
            self._grow(end, features, predictions)
        self._features[start:end] = features
        self._predictions[start:end] = predictions
        self._ends.append(end)
        self.requests += 1
        return True

    def clear(self) -> int:
        """Nothing waits any more; how many requests did."""
        requests, self.requests, self._ends = self.requests, 0, []
        return requests

    def take(self, max_rows: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The oldest requests holding at most max_rows rows (at least one request), and how many."""
        requests = max(1, bisect.bisect_right(self._ends, max_rows))
        end = self._ends[requests - 1]
        taken = self._features[:end].copy(), self._predictions[:end].copy()
        rest = self.rows - end
        if rest:  # a backlog: shift it to the front (rare: a tick holds ROWS_PER_TICK rows)
            self._features[:rest] = self._features[end : end + rest]
            self._predictions[:rest] = self._predictions[end : end + rest]
        self._ends = [e - end for e in self._ends[requests:]]
        self.requests -= requests
        return *taken, requests

    def _grow(self, rows: int, features: np.ndarray, predictions: np.ndarray) -> None:
        size = max(1024, 2 * len(self._features), rows)
        # Labels as objects: a fixed-width string block sized by the first label would cut longer ones.
        labels = predictions.dtype.kind in "USO"
        grown_features = np.empty((size, *features.shape[1:]), dtype=features.dtype)
        grown_predictions = np.empty(size, dtype=object if labels else predictions.dtype)
        if self.rows:
            grown_features[: self.rows] = self._features[: self.rows]
            grown_predictions[: self.rows] = self._predictions[: self.rows]
        self._features, self._predictions = grown_features, grown_predictions


_Job = tuple[Future[Any], Callable[..., Any], tuple[object, ...]]  # a future, a function and its arguments


class _Worker:
    """One daemon thread running a shadow's predictions (not a ThreadPoolExecutor, whose threads the
    interpreter joins at exit: a hanging shadow would hold up the server's shutdown)."""

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., Any], *args: object) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, fn, args))
        return future

    def stop(self) -> None:
        """The thread ends after the batch it is on, if any."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            try:
                future.set_result(fn(*args))
            except BaseException as error:  # handed to the event loop's callback, which counts it
                future.set_exception(error)


def _timed(predict: Predict, features: np.ndarray) -> tuple[np.ndarray, float]:
    """On the shadow's thread: its predictions and how long they took."""
    started = time.perf_counter()
    shadowed = predict(features)
    return shadowed, time.perf_counter() - started
