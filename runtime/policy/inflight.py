"""Requests in flight per model version (the cap, and the drain's wait), and refusal counts.

Both live in the process hosting the REST and gRPC servers and are only touched from its event
loop thread.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from runtime.observation import metrics

logger = logging.getLogger("runtime.policy.admission")

SUMMARY_EVERY_S = 10.0

Key = tuple[str, str | None]


class InFlight:
    """Requests admitted and not yet answered, per (model, version) and in total.

    The key outlives reloads: requests still running on the replaced model object count against
    the same cap as those on the new one.
    """

    def __init__(self) -> None:
        self.per_model: defaultdict[Key, int] = defaultdict(int)
        self.total = 0
        self.admitted = 0  # since start, for the drain's log line
        self.failed = 0  # admitted, then answered with an error (any status, e.g. a 400)

    def enter(self, key: Key) -> None:
        self.per_model[key] += 1
        self.total += 1
        self.admitted += 1

    def leave(self, key: Key, ok: bool) -> None:
        self.per_model[key] -= 1
        self.total -= 1
        if not ok:
            self.failed += 1


class Refusals:
    """Counts refusals and logs a summary at most every SUMMARY_EVERY_S (not one line each):
    under overload, a line per refusal would flood the log."""

    def __init__(self) -> None:
        self.counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.total: defaultdict[str, int] = defaultdict(int)
        self._last_log = 0.0

    def add(self, model: str, error: Exception) -> None:
        metrics.count_refusal(model, error)
        reason = type(error).__name__
        self.counts[(model, reason)] += 1
        self.total[reason] += 1
        now = time.monotonic()
        if now - self._last_log >= SUMMARY_EVERY_S:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        self._last_log = time.monotonic() if now is None else now
        if self.counts:
            summary = ", ".join(f"{m}: {n} {r}" for (m, r), n in sorted(self.counts.items()))
            logger.warning("refused requests since the last summary: %s", summary)
            self.counts.clear()


IN_FLIGHT = InFlight()
REFUSED = Refusals()
