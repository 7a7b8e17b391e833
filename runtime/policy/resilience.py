"""A model's own failures, contained: its circuit breaker, its compute budget and its fallback.

    breaker open           -> the fallback answers ("breaker_open"), else a fast 503
    internal error         -> counted as a failure; the fallback answers ("error"), else the 500
    over the budget        -> counted as a failure; the fallback answers ("slow")
    a client's mistake, its own deadline, a refusal, a cancelled call
                           -> not recorded at all (a half-open probe's slot is freed), never
                              rescued: the 4xx, 503 or 504 as it is

A call that says nothing about the model's health is neither a failure nor a success: counted as a
success it would dilute the model's real failures. The fallback is another model of the same
server; the adapter says how to ask it, and it is counted once it answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from runtime.core.errors import ModelUnavailable, PipelineError, counts_against_model
from runtime.core.options import RuntimeOptions
from runtime.observation import metrics
from runtime.policy.breaker import STATE_VALUES, CircuitBreaker

T = TypeVar("T")
Fallback = Callable[[str], Awaitable[T]]  # reason -> the fallback's answer


class Resilience:
    def __init__(self, model: str, options: RuntimeOptions):
        self.model = model
        self.fallback_model = options.fallback_model
        self.budget_s = options.fallback_budget_ms / 1000.0 if options.fallback_budget_ms else None
        self.breaker: CircuitBreaker | None = None
        if options.breaker_failure_ratio is not None:
            self.breaker = CircuitBreaker(
                model,
                options.breaker_failure_ratio,
                options.breaker_window,
                options.breaker_min_calls,
                options.breaker_open_s,
                options.breaker_probes,
                on_change=lambda state: metrics.set_breaker_state(model, STATE_VALUES[state]),
            )
            metrics.set_breaker_state(model, 0)

    @property
    def active(self) -> bool:
        return self.breaker is not None or self.fallback_model is not None

    async def run(self, primary: Callable[[], Awaitable[T]], fallback: Fallback[T] | None) -> T:
        if self.breaker is not None and not self.breaker.allow():
            return await self._instead(fallback, "breaker_open")
        try:
            if self.budget_s is not None and fallback is not None:
                result = await asyncio.wait_for(primary(), self.budget_s)
            else:
                result = await primary()
        except TimeoutError:
            self._record(False)
            return await self._instead(fallback, "slow")
        except PipelineError as error:
            if not counts_against_model(error):
                self._forget()
                raise
            self._record(False)
            if fallback is None:
                raise
            return await self._instead(fallback, "error")
        except Exception:
            self._record(False)
            raise
        except BaseException:  # cancelled: the client went away
            self._forget()
            raise
        self._record(True)
        return result

    def _record(self, ok: bool) -> None:
        if self.breaker is not None:
            self.breaker.record(ok)

    def _forget(self) -> None:
        if self.breaker is not None:
            self.breaker.forget()

    async def _instead(self, fallback: Fallback[T] | None, reason: str) -> T:
        if fallback is None:
            raise ModelUnavailable(
                f"model '{self.model}' is unavailable: its circuit breaker is open after repeated failures; retry later"
            )
        answer = await fallback(reason)
        metrics.count_fallback(self.model, self.fallback_model or "", reason)
        return answer
