"""The shadow's pieces without a server: the bulk histogram observe against prometheus_client's own,
the waiting requests' block, the window ring, and the event loop never waiting for a slow shadow."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import numpy as np
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

from runtime.core.drift import psi
from runtime.observation.metrics import DIFF_BUCKETS, incrementer, observe_many, observer
from runtime.service import shadow as shadow_module
from runtime.service.shadow import Shadow, _Pending, _Window

_names = itertools.count()


def test_observe_many_is_observe_on_each_value():
    values = np.array([0.0, 0.1, 0.1000001, 0.5, 3.0, 7.5, 20.0, 99.9, 100.0, 1e9, -1.0, 2.0, 2.0])
    one, many = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("d", "h", ["m"], buckets=DIFF_BUCKETS, registry=one).labels("x")
    by_many = Histogram("d", "h", ["m"], buckets=DIFF_BUCKETS, registry=many).labels("x")
    for value in values.tolist():
        by_one.observe(value)
    observe_many(by_many, values)
    samples = {s.labels.get("le"): s.value for s in next(iter(many.collect())).samples if s.name == "d_bucket"}
    expected = {s.labels.get("le"): s.value for s in next(iter(one.collect())).samples if s.name == "d_bucket"}
    assert samples == expected and samples["+Inf"] == len(values)
    assert many.get_sample_value("d_sum", {"m": "x"}) == pytest.approx(values.sum())
    assert b"d_count" in generate_latest(many)


def test_observer_is_observe():
    """The per-request observer (runtime.observation.metrics.observer) on values at, between and past bounds."""
    values = [0.0, 0.1, 0.1000001, 0.5, 3.0, 7.5, 20.0, 100.0, 1e9, -1.0, 2.0]
    one, fast = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("d", "h", ["m"], buckets=DIFF_BUCKETS, registry=one).labels("x")
    observe = observer(Histogram("d", "h", ["m"], buckets=DIFF_BUCKETS, registry=fast).labels("x"))
    for value in values:
        by_one.observe(value)
        observe(value)
    assert [
        (s.name, s.labels, s.value) for s in next(iter(fast.collect())).samples if not s.name.endswith("_created")
    ] == [(s.name, s.labels, s.value) for s in next(iter(one.collect())).samples if not s.name.endswith("_created")]


def test_incrementer_is_inc():
    """The predictions counter's incrementer (runtime.observation.metrics.incrementer), on one and on many."""
    one, fast = CollectorRegistry(), CollectorRegistry()
    by_one = Counter("p", "c", ["m"], registry=one).labels("x")
    inc = incrementer(Counter("p", "c", ["m"], registry=fast).labels("x"))
    for amount in (1, 1, 7, 250):
        by_one.inc(amount)
        inc(amount)
    assert fast.get_sample_value("p_total", {"m": "x"}) == one.get_sample_value("p_total", {"m": "x"}) == 259


def test_observe_many_leaves_nan_out():
    registry = CollectorRegistry()
    child = Histogram("d", "h", ["m"], buckets=DIFF_BUCKETS, registry=registry).labels("x")
    observe_many(child, np.array([1.0, np.nan]))
    assert registry.get_sample_value("d_count", {"m": "x"}) == 1
    assert registry.get_sample_value("d_sum", {"m": "x"}) == 1.0


def test_pending_takes_the_oldest_requests_up_to_a_row_count_and_keeps_the_rest():
    pending = _Pending(capacity=10)
    for i in range(5):  # request i has i+1 rows, all of value i
        assert pending.add(np.full((i + 1, 3), float(i)), np.full(i + 1, float(i)))
    features, predictions, requests = pending.take(max_rows=4)
    assert requests == 2 and features[:, 0].tolist() == [0, 1, 1] and predictions.tolist() == [0, 1, 1]
    features, _, requests = pending.take(max_rows=1)  # one request even when it holds more rows
    assert requests == 1 and features[:, 0].tolist() == [2, 2, 2]
    features, _, requests = pending.take(max_rows=100)
    assert requests == 2 and features[:, 0].tolist() == [3] * 4 + [4] * 5
    assert pending.requests == 0 and pending.rows == 0


def test_pending_is_bounded_by_requests_and_keeps_labels_whole():
    pending = _Pending(capacity=2)
    assert pending.add(np.ones((1, 2)), np.array(["setosa"]))
    assert pending.add(np.ones((1, 2)), np.array(["versicolor"]))  # longer than the first label
    assert not pending.add(np.ones((1, 2)), np.array(["virginica"]))
    assert pending.take(max_rows=10)[1].tolist() == ["setosa", "versicolor"]


def test_pending_grows_past_its_first_block():
    pending = _Pending(capacity=10_000)
    rows = np.arange(3000 * 2, dtype=float).reshape(3000, 2)
    for row in rows:
        pending.add(row[None, :], row[:1])
    features, predictions, requests = pending.take(max_rows=10_000)
    assert requests == 3000 and np.array_equal(features, rows) and np.array_equal(predictions, rows[:, 0])


def test_the_window_holds_the_last_pairs():
    window = _Window(5)
    window.add(np.array([1.0, 2.0]), np.array([10.0, 20.0]))
    assert sorted(window.pairs()[:, 0]) == [1, 2]
    window.add(np.arange(3.0, 7.0), np.arange(30.0, 70.0, 10.0))
    assert sorted(window.pairs()[:, 0]) == [2, 3, 4, 5, 6]
    window.add(np.arange(100.0), np.arange(100.0))
    assert sorted(window.pairs()[:, 1]) == [95, 96, 97, 98, 99]


def _shadow(predict: Callable[[np.ndarray], np.ndarray] | None, **kwargs) -> tuple[Shadow, str]:
    """A shadow whose model `candidate` predicts with `predict` (None: not loaded)."""
    model = f"unit-{next(_names)}"
    options = {"classifier": False, "sample_rate": 1.0, "queue_size": 100, "window": 10} | kwargs
    return Shadow(model, "candidate", find=lambda name: predict if name == "candidate" else None, **options), model


def _sample(model: str, name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": model, "shadow": "candidate", **labels}) or 0.0


def test_differences_psi_and_ks_of_a_known_shadow(monkeypatch):
    monkeypatch.setattr(shadow_module, "TICK_S", 0.01)
    shadow, model = _shadow(lambda x: x[:, 0] + 2.0)  # the shadow predicts the primary (column 0) plus 2
    primary = np.arange(8.0)

    async def offer_then_wait() -> None:
        for value in primary:
            shadow.offer(np.array([[value, 0.0]]), np.array([value]))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if _sample(model, "pipeline_shadow_window_rows") == 8:
                return

    asyncio.run(offer_then_wait())
    assert _sample(model, "pipeline_shadow_events_total", event="evaluated") == 8
    assert _sample(model, "pipeline_shadow_abs_difference_count") == 8
    assert _sample(model, "pipeline_shadow_abs_difference_sum") == pytest.approx(16.0)
    assert _sample(model, "pipeline_shadow_abs_difference_bucket", le="2.0") == 8
    assert _sample(model, "pipeline_shadow_abs_difference_bucket", le="1.0") == 0
    assert _sample(model, "pipeline_shadow_psi") == pytest.approx(psi(primary, primary + 2))
    assert _sample(model, "pipeline_shadow_ks") == pytest.approx(0.25)


def test_a_sleeping_shadow_never_holds_up_the_event_loop(monkeypatch):
    monkeypatch.setattr(shadow_module, "TICK_S", 0.01)

    def sleeping(x: np.ndarray) -> np.ndarray:
        time.sleep(0.3)
        return x[:, 0]

    shadow, model = _shadow(sleeping, queue_size=5)

    async def offer_and_measure_lag() -> float:
        worst, until = 0.0, time.monotonic() + 0.8
        while time.monotonic() < until:
            shadow.offer(np.ones((1, 2)), np.ones(1))
            started = time.monotonic()
            await asyncio.sleep(0.002)
            worst = max(worst, time.monotonic() - started - 0.002)
        return worst

    worst_lag = asyncio.run(offer_and_measure_lag())
    assert worst_lag < 0.1, f"the loop waited {worst_lag * 1000:.0f} ms for a shadow sleeping 300 ms"
    assert _sample(model, "pipeline_shadow_events_total", event="dropped") > 0  # the buffer filled meanwhile
    assert 1 <= _sample(model, "pipeline_shadow_batch_seconds_count") <= 3


def test_a_failing_shadow_is_counted():

    def failing(x: np.ndarray) -> np.ndarray:
        raise ZeroDivisionError("division by zero")

    shadow, model = _shadow(failing)

    async def offer_then_wait() -> None:
        shadow.offer(np.ones((3, 2)), np.ones(3))
        shadow.offer(np.ones((1, 2)), np.ones(1))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if _sample(model, "pipeline_shadow_events_total", event="error"):
                return

    asyncio.run(offer_then_wait())
    assert _sample(model, "pipeline_shadow_events_total", event="error") == 2  # requests, not rows
    assert _sample(model, "pipeline_shadow_events_total", event="evaluated") == 0


def test_observe_many_falls_back_to_observe_without_prometheus_clients_internals():
    class Plain:  # a histogram child that keeps its buckets elsewhere
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

    child = Plain()
    observe_many(child, np.array([1.0, np.nan, 2.0]))  # type: ignore[arg-type]
    assert child.seen == [1.0, 2.0]


def test_a_closed_shadow_takes_no_more_requests_and_its_thread_ends():
    shadow, model = _shadow(lambda x: x[:, 0])

    async def offer_close_offer() -> None:
        shadow.offer(np.ones((1, 2)), np.ones(1))
        shadow.close()
        shadow.offer(np.ones((1, 2)), np.ones(1))  # a request still in flight on the unloaded primary
        await asyncio.sleep(0.3)

    asyncio.run(offer_close_offer())
    shadow._worker.thread.join(timeout=5)
    assert not shadow._worker.thread.is_alive()
    assert shadow._pending.requests == 1  # the one offered before the close, never evaluated
    for event in ("evaluated", "skipped", "dropped"):
        assert _sample(model, "pipeline_shadow_events_total", event=event) == 0


def test_a_full_piece_is_evaluated_at_once_not_at_the_end_of_the_tick(monkeypatch):
    monkeypatch.setattr(shadow_module, "TICK_S", 30.0)
    monkeypatch.setattr(shadow_module, "ROWS_PER_TICK", 8)
    shadow, model = _shadow(lambda x: x[:, 0])

    async def offer_then_wait() -> None:
        shadow.offer(np.ones((3, 2)), np.ones(3))  # 3 rows: waits for the (30 s) tick
        await asyncio.sleep(0.2)
        assert _sample(model, "pipeline_shadow_events_total", event="evaluated") == 0
        shadow.offer(np.ones((5, 2)), np.ones(5))  # 8 rows: a full piece
        for _ in range(100):
            await asyncio.sleep(0.01)
            if _sample(model, "pipeline_shadow_events_total", event="evaluated"):
                return

    asyncio.run(offer_then_wait())
    assert _sample(model, "pipeline_shadow_events_total", event="evaluated") == 2


class _Swappable:
    """The shadow model's name as the registry resolves it: loaded (a version's predict) or not."""

    def __init__(self) -> None:
        self.loaded: Callable[[np.ndarray], np.ndarray] | None = None

    def find(self, name: str) -> Callable[[np.ndarray], np.ndarray] | None:
        return self.loaded if name == "candidate" else None


async def _evaluate(shadow: Shadow, model: str, event: str, count: float) -> None:
    for _ in range(200):
        await asyncio.sleep(0.01)
        if _sample(model, "pipeline_shadow_events_total", event=event) >= count:
            return


def test_the_shadow_is_looked_up_for_every_batch(monkeypatch):
    monkeypatch.setattr(shadow_module, "TICK_S", 0.01)
    registry = _Swappable()
    model = f"unit-{next(_names)}"
    shadow = Shadow(model, "candidate", False, 1.0, 100, 10, find=registry.find)
    rows = np.arange(4.0)[:, None]

    async def scenario() -> None:
        shadow.offer(rows, rows[:, 0])  # not loaded yet: skipped
        await _evaluate(shadow, model, "skipped", 1)
        registry.loaded = lambda x: x[:, 0] + 1.0  # loaded
        shadow.offer(rows, rows[:, 0])
        await _evaluate(shadow, model, "evaluated", 1)
        registry.loaded = None  # unloaded
        shadow.offer(rows, rows[:, 0])
        shadow.offer(rows, rows[:, 0])
        await _evaluate(shadow, model, "skipped", 3)
        registry.loaded = lambda x: x[:, 0] + 3.0  # loaded again, another version
        shadow.offer(rows, rows[:, 0])
        await _evaluate(shadow, model, "evaluated", 2)
        for _ in range(100):  # the stats once traffic paused
            await asyncio.sleep(0.01)
            if _sample(model, "pipeline_shadow_window_rows") == 4:
                return

    asyncio.run(scenario())
    shadow.close()
    assert _sample(model, "pipeline_shadow_events_total", event="skipped") == 3  # requests
    assert _sample(model, "pipeline_shadow_events_total", event="evaluated") == 2
    assert _sample(model, "pipeline_shadow_abs_difference_sum") == pytest.approx(4 * 1.0 + 4 * 3.0)
    # The window restarted with the new version: only its 4 pairs (all 3 apart).
    assert _sample(model, "pipeline_shadow_window_rows") == 4
    assert _sample(model, "pipeline_shadow_psi") == pytest.approx(psi(np.arange(4.0), np.arange(4.0) + 3))


def test_the_same_version_found_again_keeps_its_window(monkeypatch):
    monkeypatch.setattr(shadow_module, "TICK_S", 0.01)
    version = lambda x: x[:, 0]  # noqa: E731
    shadow, model = _shadow(version)
    rows = np.arange(3.0)[:, None]

    async def scenario() -> None:
        shadow.offer(rows, rows[:, 0])
        await _evaluate(shadow, model, "evaluated", 1)
        shadow.offer(rows, rows[:, 0])
        await _evaluate(shadow, model, "evaluated", 2)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if _sample(model, "pipeline_shadow_window_rows") == 6:
                return

    asyncio.run(scenario())
    shadow.close()
    assert _sample(model, "pipeline_shadow_window_rows") == 6


def test_pending_clear_says_how_many_requests_waited():
    pending = _Pending(capacity=10)
    for _ in range(3):
        pending.add(np.ones((2, 2)), np.ones(2))
    assert pending.clear() == 3 and pending.requests == 0 and pending.rows == 0
    assert pending.add(np.zeros((1, 2)), np.zeros(1)) and pending.take(max_rows=10)[2] == 1
