"""A model's own failures, contained: its circuit breaker, its compute budget and its fallback.

    breaker open           -> the fallback answers ("breaker_open"), else a fast 503
    internal error         -> counted as a failure; the fallback answers ("error"), else the 500
    over the budget        -> counted as a failure; the fallback answers ("slow")
    a client's mistake     -> not a failure, never rescued: the 4xx as it is

The fallback is another model of the same server; the adapter says how to ask it.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Optional, TypeVar

from runtime import metrics
from runtime.breaker import STATE_VALUES, CircuitBreaker
from runtime.errors import INTERNAL, ModelUnavailable, PipelineError
from runtime.options import RuntimeOptions

T = TypeVar("T")
Fallback = Callable[[str], Awaitable[T]]  # reason -> the fallback's answer


class Resilience:
    def __init__(self, model: str, options: RuntimeOptions):
        self.model = model
        self.fallback_model = options.fallback_model
        self.budget_s = options.fallback_budget_ms / 1000.0 if options.fallback_budget_ms else None
        self.breaker: Optional[CircuitBreaker] = None
        if options.breaker_failure_ratio is not None:
            self.breaker = CircuitBreaker(
                model, options.breaker_failure_ratio, options.breaker_window, options.breaker_min_calls,
                options.breaker_open_s, options.breaker_probes,
                on_change=lambda state: metrics.set_breaker_state(model, STATE_VALUES[state]),
            )  # fmt: skip
            metrics.set_breaker_state(model, 0)

    @property
    def active(self) -> bool:
        return self.breaker is not None or self.fallback_model is not None

    async def run(self, primary: Callable[[], Awaitable[T]], fallback: Optional[Fallback]) -> T:
        if self.breaker is not None and not self.breaker.allow():
            return await self._instead(fallback, "breaker_open")
        try:
            if self.budget_s is not None and fallback is not None:
                result = await asyncio.wait_for(primary(), self.budget_s)
            else:
                result = await primary()
        except asyncio.TimeoutError:
            self._record(False)
            return await self._instead(fallback, "slow")
        except PipelineError as error:
            if error.status < INTERNAL:  # the client's mistake, a deadline, a refusal
                self._record(True)
                raise
            self._record(False)
            if fallback is None:
                raise
            return await self._instead(fallback, "error")
        self._record(True)
        return result

    def _record(self, ok: bool) -> None:
        if self.breaker is not None:
            self.breaker.record(ok)

    async def _instead(self, fallback: Optional[Fallback], reason: str) -> T:
        if fallback is None:
            raise ModelUnavailable(
                f"model '{self.model}' is unavailable: its circuit breaker is open after repeated "
                "failures; retry later"
            )
        metrics.count_fallback(self.model, self.fallback_model or "", reason)
        return await fallback(reason)
