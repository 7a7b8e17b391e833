"""A circuit breaker: closed -> open after a failure ratio over a window -> half-open probes ->
closed again (or open again on a failed probe).

While open, `allow()` answers False at once, so a failing dependency costs callers nothing; after
`open_s` a few probe calls go through to test it. Thread-safe: the compute thread and the event
loop both report.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

logger = logging.getLogger("runtime.policy.breaker")

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # the gauge's values


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failure_ratio: float,
        window: int = 20,
        min_calls: int = 10,
        open_s: float = 10.0,
        probes: int = 3,
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = name
        self.failure_ratio, self.min_calls, self.open_s, self.probes = failure_ratio, min_calls, open_s, probes
        self._results: deque[bool] = deque(maxlen=window)
        self._state = CLOSED
        self._opened_at = 0.0
        self._probes_started = 0
        self._probes_ok = 0
        self._lock = threading.Lock()
        self._on_change = on_change or (lambda state: None)
        self._clock = clock

    @property
    def state(self) -> str:
        return self._state

    def allow(self) -> bool:
        with self._lock:
            if self._state == OPEN:
                if self._clock() - self._opened_at < self.open_s:
                    return False
                self._move(HALF_OPEN)
            if self._state == HALF_OPEN:
                if self._probes_started >= self.probes:
                    return False
                self._probes_started += 1
            return True

    def forget(self) -> None:
        """An allowed call that neither worked nor failed (refused for load, cancelled): a
        half-open breaker's probe slot is free again, so a lost probe cannot keep it half-open."""
        with self._lock:
            if self._state == HALF_OPEN and self._probes_started > self._probes_ok:
                self._probes_started -= 1

    def record(self, ok: bool) -> None:
        with self._lock:
            if self._state == HALF_OPEN:
                if not ok:
                    self._open()
                else:
                    self._probes_ok += 1
                    if self._probes_ok >= self.probes:
                        self._results.clear()
                        self._move(CLOSED)
                return
            if self._state == OPEN:
                return
            self._results.append(ok)
            failures = self._results.count(False)
            if len(self._results) >= self.min_calls and failures / len(self._results) >= self.failure_ratio:
                self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._move(OPEN)

    def _move(self, state: str) -> None:
        previous, self._state = self._state, state
        self._probes_started = self._probes_ok = 0
        logger.warning("circuit breaker of %s: %s -> %s", self.name, previous, state)
        self._on_change(state)
