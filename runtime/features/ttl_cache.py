"""A small time-to-live cache in front of the feature store: bounded entries, oldest evicted.

Single-threaded by design: only the event loop touches it (lookups run there).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if not self.enabled:
            return
        self._entries[key] = (self._clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)  # the oldest insertion: first to expire anyway

    def __len__(self) -> int:
        return len(self._entries)
