"""Resilience.run's accounting: only the model's own failures (500s, over its budget) count against
its circuit breaker and are answered by its fallback; a client's mistake, its expired deadline, a
refusal or a cancelled call say nothing about the model's health and are not recorded at all."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY

from runtime.core.errors import (
    DeadlineExceeded,
    FeatureCountError,
    InternalPredictionError,
    ModelUnavailable,
    Overloaded,
    PipelineError,
    RateLimited,
    Unauthenticated,
)
from runtime.core.options import RuntimeOptions
from runtime.policy.resilience import Resilience

BREAKER = {
    "breaker_failure_ratio": 0.5,
    "breaker_window": 4,
    "breaker_min_calls": 4,
    "breaker_open_s": 60.0,
    "breaker_probes": 1,
}
# What the client did (never the model's failure): none may open the breaker or reach the fallback.
CLIENTS_OWN = [
    DeadlineExceeded("deadline passed before its computation started"),
    FeatureCountError("expected 10 features"),
    Unauthenticated("missing bearer token"),
    RateLimited("over its rate"),
    Overloaded("already has 2 request(s) in flight"),
]
_names = itertools.count()


def _resilience(**extra: Any) -> Resilience:
    return Resilience(f"resilience-{next(_names)}", RuntimeOptions.from_extra({**BREAKER, **extra}))


def _failing(error: BaseException) -> Callable[[], Awaitable[str]]:
    async def primary() -> str:
        raise error

    return primary


async def _answered() -> str:
    return "primary"


def _run(resilience: Resilience, primary: Callable[[], Awaitable[str]], fallback: Callable | None = None) -> Any:
    """The answer, or the exception the caller gets."""
    try:
        return asyncio.run(resilience.run(primary, fallback))
    except BaseException as error:  # noqa: B036 (cancellation is one of the outcomes)
        return error


def _fallbacks(resilience: Resilience, reason: str) -> float:
    labels = {"model": resilience.model, "fallback": resilience.fallback_model or "", "reason": reason}
    return REGISTRY.get_sample_value("pipeline_fallbacks_total", labels) or 0.0


@pytest.mark.parametrize("error", CLIENTS_OWN, ids=lambda e: type(e).__name__)
def test_the_clients_own_failures_never_open_the_breaker_nor_reach_the_fallback(error):
    resilience = _resilience(fallback_model="backup")
    asked: list[str] = []

    async def fallback(reason: str) -> str:
        asked.append(reason)
        return "fallback"

    for _ in range(8):
        assert _run(resilience, _failing(error), fallback) is error  # the client's, as it was
    assert resilience.breaker is not None and resilience.breaker.state == "closed"
    assert asked == [] and _fallbacks(resilience, "error") == 0
    assert _run(resilience, _answered, fallback) == "primary"


def test_the_models_own_failures_open_it():
    resilience = _resilience()
    for _ in range(4):
        assert isinstance(_run(resilience, _failing(InternalPredictionError("boom"))), InternalPredictionError)
    assert resilience.breaker is not None and resilience.breaker.state == "open"
    assert isinstance(_run(resilience, _answered), ModelUnavailable)


def test_a_clients_deadline_between_model_failures_does_not_dilute_them():
    # Not recorded as a success either: 2 failures of the 4 recorded calls open the breaker.
    resilience = _resilience()
    outcomes = [
        InternalPredictionError("boom"),
        DeadlineExceeded("late"),
        None,
        DeadlineExceeded("late"),
        None,
        InternalPredictionError("boom"),
    ]
    for error in outcomes:
        _run(resilience, _answered if error is None else _failing(error))
    assert resilience.breaker is not None and resilience.breaker.state == "open"


@pytest.mark.parametrize("outcome", [*CLIENTS_OWN, asyncio.CancelledError()], ids=lambda e: type(e).__name__)
def test_a_half_open_probe_that_said_nothing_frees_its_slot(outcome):
    resilience = _resilience()
    breaker = resilience.breaker
    assert breaker is not None
    for _ in range(4):
        _run(resilience, _failing(InternalPredictionError("boom")))
    breaker._opened_at -= breaker.open_s  # half-open at the next call, one probe at a time
    _run(resilience, _failing(outcome))
    assert breaker.state == "half_open"
    assert _run(resilience, _answered) == "primary"  # the probe slot was free again
    assert breaker.state == "closed"


def test_the_fallback_is_counted_by_what_happened_and_only_once_it_answered():
    resilience = _resilience(fallback_model="backup")

    async def fallback(reason: str) -> str:
        return f"fallback ({reason})"

    for _ in range(4):
        assert _run(resilience, _failing(InternalPredictionError("boom")), fallback) == "fallback (error)"
    assert _run(resilience, _answered, fallback) == "fallback (breaker_open)"
    assert _fallbacks(resilience, "error") == 4 and _fallbacks(resilience, "breaker_open") == 1

    async def late(reason: str) -> str:  # the fallback refuses too: the client's deadline passed
        raise DeadlineExceeded("late")

    assert isinstance(_run(resilience, _answered, late), DeadlineExceeded)
    assert _fallbacks(resilience, "breaker_open") == 1


def test_over_its_budget_is_the_models_own_slowness():
    resilience = _resilience(fallback_model="backup", fallback_budget_ms=10)

    async def slow() -> str:
        await asyncio.sleep(1.0)
        return "primary"

    async def fallback(reason: str) -> str:
        return f"fallback ({reason})"

    for _ in range(4):
        assert _run(resilience, slow, fallback) == "fallback (slow)"
    assert resilience.breaker is not None and resilience.breaker.state == "open"
    assert _fallbacks(resilience, "slow") == 4


def test_an_unexpected_exception_is_a_failure():
    resilience = _resilience()
    for _ in range(4):
        assert isinstance(_run(resilience, _failing(RuntimeError("bug"))), RuntimeError)
    assert resilience.breaker is not None and resilience.breaker.state == "open"


def test_every_error_type_is_either_the_models_failure_or_not():
    # A new error type must be placed on one side on purpose: the 500s are the model's.
    from runtime.core import errors

    kinds = {cls: errors.counts_against_model(cls("x")) for cls in _subclasses(PipelineError)}
    assert {cls.__name__ for cls, counted in kinds.items() if counted} == {
        "PipelineError",
        "ArtifactError",
        "InternalPredictionError",
    }


E = TypeVar("E", bound=Exception)


def _subclasses(cls: type[E]) -> list[type[E]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found
