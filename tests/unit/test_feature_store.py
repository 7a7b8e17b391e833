"""The feature store's layers (runtime.features.wrappers) and their composition (runtime.features.store)
around a source that is not PostgreSQL: `MemorySource` below is a second implementation of the
FeatureSource protocol, so these prove the cache, the breaker and the metrics depend on the protocol
alone. PostgreSQL itself, behind the same layers, is tested against a real database in tests/features."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest
from prometheus_client import REGISTRY

from runtime.core.errors import FeatureStoreUnavailable
from runtime.core.options import FeatureStoreOptions
from runtime.features.source import Failure, FeatureSource, Row, SourceUnavailable
from runtime.features.store import FeatureStore
from runtime.features.ttl_cache import TTLCache
from runtime.features.wrappers import BreakerGuardedSource, CachingSource
from runtime.policy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker

ROWS: dict[str, Row] = {"x": (1.0, 2.0), "y": (3.0, None), "z": (5.0, 6.0)}
BREAKER_OPEN_S = 0.05


class MemorySource:
    """Rows from a dictionary; `failure` makes every lookup fail that way, `gate` holds lookups."""

    description = "the in-memory features"

    def __init__(self, rows: Mapping[str, Row] = ROWS):
        self.rows = dict(rows)
        self.asked: list[list[str]] = []
        self.failure: Failure | None = None
        self.gate: asyncio.Event | None = None
        self.opened = self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    async def fetch(self, ids: Sequence[str]) -> dict[str, Row]:
        self.asked.append(list(ids))
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise SourceUnavailable(self.failure, f"the in-memory features: {self.failure.name}")
        return {i: self.rows[i] for i in ids if i in self.rows}


def _options(**overrides: float) -> FeatureStoreOptions:
    settings = {"dsn_env": "NEVER_READ", "table": "features", "breaker_open_s": BREAKER_OPEN_S, **overrides}
    return FeatureStoreOptions.model_validate(settings)


def _store(model: str, source: FeatureSource, **overrides: float) -> FeatureStore:
    return FeatureStore(model, _options(**overrides), ("a", "b"), source=source)


def _metric(name: str, model: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": model, **labels}) or 0.0


def _errors(model: str, kind: str) -> float:
    return _metric("pipeline_feature_lookup_errors_total", model, kind=kind)


def _breaker_gauge(model: str) -> float:
    return _metric("pipeline_feature_store_breaker_state", model)


def _refused(store: FeatureStore, ids: Sequence[str]) -> str:
    with pytest.raises(FeatureStoreUnavailable) as refused:
        asyncio.run(store.fetch(ids))
    assert type(refused.value) is FeatureStoreUnavailable  # the class names the request's outcome
    return str(refused.value)


def test_the_store_composes_around_any_source_and_caches_what_it_fetched():
    model, source = "memory-lookups", MemorySource()
    store = _store(model, source)
    asyncio.run(store.open())
    assert source.opened and _breaker_gauge(model) == 0
    first = asyncio.run(store.fetch(["x", "y", "x", "unknown"]))
    assert first.rows == {"x": ROWS["x"], "y": ROWS["y"]} and first.cached == frozenset()
    assert source.asked == [["x", "y", "unknown"]]  # each id once
    second = asyncio.run(store.fetch(["x", "z", "unknown"]))
    assert second.rows == {"x": ROWS["x"], "z": ROWS["z"]} and second.cached == frozenset({"x"})
    assert source.asked[1] == ["z", "unknown"]  # an unknown id is asked again: only rows are cached
    assert _metric("pipeline_feature_cache_total", model, result="hit") == 1
    assert _metric("pipeline_feature_cache_total", model, result="miss") == 5
    assert _metric("pipeline_feature_rows_fetched_total", model) == 3
    assert _metric("pipeline_feature_lookup_seconds_count", model) == 2
    store.count_unknown()
    assert _errors(model, "unknown_id") == 1
    asyncio.run(store.close())
    assert source.closed


def test_a_failing_source_opens_the_breaker_the_cache_still_answers_and_a_probe_closes_it():
    model, source = "memory-breaker", MemorySource()
    store = _store(model, source, breaker_min_calls=3, breaker_window=3)
    asyncio.run(store.fetch(["x"]))
    source.failure = Failure.UNAVAILABLE
    assert _refused(store, ["y"]) == "the in-memory features: UNAVAILABLE"  # the source's own words
    assert _breaker_gauge(model) == 0
    _refused(store, ["y"])  # two failures of three: open
    assert _breaker_gauge(model) == 2 and _errors(model, "unavailable") == 2
    asked = len(source.asked)
    assert "circuit breaker open" in _refused(store, ["y"])
    assert len(source.asked) == asked and _errors(model, "breaker_open") == 1  # refused without asking
    assert asyncio.run(store.fetch(["x"])).cached == {"x"}  # a cache hit never reaches the breaker
    source.failure = None
    asyncio.run(asyncio.sleep(2 * BREAKER_OPEN_S))  # past the open time, whatever the clock resolution
    assert asyncio.run(store.fetch(["y"])).rows == {"y": ROWS["y"]}  # the probe
    assert _breaker_gauge(model) == 0


def test_a_source_refusing_for_load_never_opens_the_breaker():
    model, source = "memory-busy", MemorySource()
    store = _store(model, source, breaker_min_calls=2, breaker_window=2)
    source.failure = Failure.BUSY
    for _ in range(5):
        assert _refused(store, ["x"]) == "the in-memory features: BUSY"
    assert _errors(model, "pool_full") == 5 and _errors(model, "unavailable") == 0
    assert _breaker_gauge(model) == 0 and _metric("pipeline_feature_lookup_seconds_count", model) == 0
    source.failure = None
    assert asyncio.run(store.fetch(["x"])).rows == {"x": ROWS["x"]}


def test_lookups_are_counted_as_cache_misses_even_when_the_source_then_times_out():
    model, source = "memory-timeout", MemorySource()
    store = _store(model, source)
    source.failure = Failure.TIMEOUT
    _refused(store, ["x", "y"])
    assert _metric("pipeline_feature_cache_total", model, result="miss") == 2
    assert _errors(model, "timeout") == 1


def test_a_cancelled_probe_frees_its_slot_for_the_next_one():
    now = [0.0]
    breaker = CircuitBreaker(
        "the in-memory features", 0.5, window=1, min_calls=1, open_s=1.0, probes=1, clock=lambda: now[0]
    )
    source = MemorySource()
    guarded = BreakerGuardedSource(source, breaker)
    source.failure = Failure.TIMEOUT
    with pytest.raises(SourceUnavailable):
        asyncio.run(guarded.fetch(["x"]))
    assert breaker.state == OPEN
    now[0] = 1.0
    source.failure, source.gate = None, asyncio.Event()

    async def cancelled_probe() -> None:
        probe = asyncio.ensure_future(guarded.fetch(["x"]))
        await asyncio.sleep(0)  # the probe waits inside the source
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe

    asyncio.run(cancelled_probe())
    assert breaker.state == HALF_OPEN
    source.gate = None
    assert asyncio.run(guarded.fetch(["x"])) == {"x": ROWS["x"]}  # not refused: the slot was freed
    assert breaker.state == CLOSED


def test_the_cache_layer_asks_again_once_a_row_expired():
    now = [0.0]
    source = MemorySource()
    counted: list[tuple[int, int]] = []
    cached = CachingSource(
        source,
        TTLCache(ttl_s=10, max_entries=10, clock=lambda: now[0]),
        lambda *hits_misses: counted.append(hits_misses),
    )
    asyncio.run(cached.fetch(["x"]))
    assert asyncio.run(cached.fetch(["x"])).cached == {"x"}
    now[0] = 10.0
    assert asyncio.run(cached.fetch(["x"])).cached == frozenset()
    assert source.asked == [["x"], ["x"]] and counted == [(0, 1), (1, 0), (0, 1)]
