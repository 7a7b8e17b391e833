"""Layers that wrap any `FeatureSource` (runtime.features.source), whatever its backend:

    CachingSource -> MeteredSource -> BreakerGuardedSource -> the source

- BreakerGuardedSource: a source that keeps failing costs nothing while its breaker is open
  (runtime.policy.breaker, the same breaker the model uses): refusals at once instead of one
  timeout per request.
- MeteredSource: the round-trip time and rows of every lookup that reached it, the kind of every
  failure (an open breaker included, so it sits outside the breaker).
- CachingSource: a TTL cache answering the ids it holds; outermost, so a hit skips even the breaker.
  It also says which ids it answered, so it returns `Fetched` rather than rows.

Only the event loop calls them (the cache is not thread-safe).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runtime.features.source import Failure, FeatureSource, Row, SourceUnavailable
from runtime.features.ttl_cache import TTLCache
from runtime.observation.metrics import FeatureStoreMetrics
from runtime.policy.breaker import CircuitBreaker


@dataclass(frozen=True)
class Fetched:
    rows: dict[str, Row]  # every id the source (or the cache) knows; unknown ids are absent
    cached: frozenset[str]  # the ids the cache answered


class _Wrapper:
    """Opens, closes and names itself as the source it wraps."""

    def __init__(self, source: FeatureSource):
        self.source = source

    @property
    def description(self) -> str:
        return self.source.description

    async def open(self) -> None:
        await self.source.open()

    async def close(self) -> None:
        await self.source.close()


class BreakerGuardedSource(_Wrapper):
    def __init__(self, source: FeatureSource, breaker: CircuitBreaker):
        super().__init__(source)
        self.breaker = breaker

    async def fetch(self, ids: Sequence[str]) -> dict[str, Row]:
        if not self.breaker.allow():
            raise SourceUnavailable(
                Failure.BREAKER_OPEN,
                "the feature store is unavailable (circuit breaker open after repeated failures); retry later",
            )
        worked: bool | None = None  # None: neither (refused for load, cancelled): the breaker forgets the call
        try:
            rows = await self.source.fetch(ids)
            worked = True
        except SourceUnavailable as exc:
            if exc.failure.counts_against_source:
                worked = False
            raise
        finally:
            if worked is None:
                self.breaker.forget()
            else:
                self.breaker.record(worked)
        return rows


class MeteredSource(_Wrapper):
    def __init__(self, source: FeatureSource, metrics: FeatureStoreMetrics):
        super().__init__(source)
        self._metrics = metrics

    async def fetch(self, ids: Sequence[str]) -> dict[str, Row]:
        started = time.perf_counter()
        try:
            rows = await self.source.fetch(ids)
        except SourceUnavailable as exc:
            self._metrics.error(exc.failure.value)
            raise
        self._metrics.fetched(time.perf_counter() - started, len(rows))
        return rows


class CachingSource(_Wrapper):
    def __init__(self, source: FeatureSource, cache: TTLCache[str, Row], on_lookup: Callable[[int, int], None]):
        """`on_lookup(hits, misses)`: per fetch, over its distinct ids, before the source is asked
        (so a lookup that then fails is counted too)."""
        super().__init__(source)
        self._cache = cache
        self._on_lookup = on_lookup

    async def fetch(self, ids: Sequence[str]) -> Fetched:
        rows: dict[str, Row] = {}
        missing = []
        for entity in dict.fromkeys(ids):
            row = self._cache.get(entity)
            if row is None:
                missing.append(entity)
            else:
                rows[entity] = row
        self._on_lookup(len(rows), len(missing))
        cached = frozenset(rows)
        if missing:
            fetched = await self.source.fetch(missing)
            for entity, row in fetched.items():
                self._cache.put(entity, row)
            rows.update(fetched)
        return Fetched(rows, cached)
