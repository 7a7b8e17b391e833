"""The drain in process (runtime.policy.drain, runtime.integration.lifecycle): settings, readiness while
draining and the order of the drain, against stand-ins for the servers' listeners. SIGTERM on
real servers is tests/reliability."""

from __future__ import annotations

import asyncio
import signal
from types import SimpleNamespace
from typing import Any

import pytest
from mlserver.handlers.dataplane import DataPlane

import runtime.model  # noqa: F401  (installs the patches)
from runtime.integration import lifecycle
from runtime.policy import drain as drain_module
from runtime.policy.drain import STATE, DrainSettings, DrainState, Listeners
from runtime.policy.inflight import IN_FLIGHT


@pytest.fixture(autouse=True)
def fresh_state():
    # The patched readiness reads the one STATE object: reset it in place.
    DrainState.__init__(STATE)
    yield
    if STATE.watchdog is not None:
        STATE.watchdog.cancel()
    DrainState.__init__(STATE)


def test_drain_settings_default_to_fit_kubernetes_default_grace_period():
    settings = DrainSettings.from_env({drain_module.ENV_IN_POD: "10.96.0.1"})
    assert (settings.delay_s, settings.timeout_s, settings.hard_exit_s) == (5.0, 15.0, 25.0)
    assert settings.hard_exit_s < 30  # terminationGracePeriodSeconds' default


def test_outside_a_pod_the_drain_has_no_delay_unless_set():
    assert DrainSettings.from_env({}).delay_s == 0.0
    assert DrainSettings.from_env({drain_module.ENV_DELAY: "2"}).delay_s == 2.0


def test_drain_settings_from_the_environment_and_bad_values():
    env = {drain_module.ENV_DELAY: "1", drain_module.ENV_TIMEOUT: "2.5", drain_module.ENV_HARD_EXIT: "10"}
    assert DrainSettings.from_env(env) == DrainSettings(1.0, 2.5, 10.0)
    bad_env = {drain_module.ENV_DELAY: "soon", drain_module.ENV_TIMEOUT: "-1", drain_module.ENV_IN_POD: "10.96.0.1"}
    bad = DrainSettings.from_env(bad_env)
    assert (bad.delay_s, bad.timeout_s) == (drain_module.DEFAULT_DELAY_S, drain_module.DEFAULT_TIMEOUT_S)
    # The hard exit never comes before the drain could finish.
    short = DrainSettings.from_env({drain_module.ENV_DELAY: "4", drain_module.ENV_HARD_EXIT: "1"})
    assert short.hard_exit_s == short.delay_s + short.timeout_s


class _Registry:
    async def get_models(self):
        return [SimpleNamespace(ready=True)]

    async def get_model(self, name, version=None):
        return SimpleNamespace(ready=True)


def test_readiness_is_false_while_draining_and_liveness_is_not():
    plane = SimpleNamespace(_model_registry=_Registry())

    async def states():
        return (await DataPlane.ready(plane), await DataPlane.model_ready(plane, "m"), await DataPlane.live(plane))

    assert asyncio.run(states()) == (True, True, True)
    STATE.draining = True
    assert asyncio.run(states()) == (False, False, True)


class _Listeners:
    """Records what the drain asks of the servers' listeners."""

    def __init__(self, log: list):
        self.log = log
        self.connections = 0

    def close(self, grace_s: float) -> None:
        self.log.append(("close", grace_s))

    def idle(self) -> bool:
        return self.connections == 0

    def handle(self) -> Listeners:
        return Listeners(self.close, self.idle)


def test_the_drain_keeps_serving_then_closes_then_waits_for_in_flight(monkeypatch):
    log: list = []
    listeners = _Listeners(log)
    settings = DrainSettings(delay_s=0.2, timeout_s=5.0, hard_exit_s=3600)
    monkeypatch.setattr(IN_FLIGHT, "total", 1)

    async def main():
        loop = asyncio.get_running_loop()
        started = loop.time()
        drain = asyncio.ensure_future(drain_module.drain(listeners.handle(), signal.SIGTERM, settings))
        await asyncio.sleep(0.05)
        log.append(("draining", STATE.draining))
        await asyncio.sleep(0.3)
        log.append(("after delay", drain.done()))
        IN_FLIGHT.total = 0  # the last request finishes
        await drain
        return loop.time() - started

    elapsed = asyncio.run(main())
    assert log == [
        ("draining", True),  # readiness false at once, listeners still open
        ("close", 5.0),  # after the delay, with the timeout as grace
        ("after delay", False),  # listeners closing, still waiting for the request
    ]
    assert 0.3 <= elapsed < 2.0


def test_the_drain_gives_up_waiting_after_its_timeout(monkeypatch):
    listeners = _Listeners([])
    listeners.connections = 1  # a connection that never goes away
    settings = DrainSettings(delay_s=0.0, timeout_s=0.3, hard_exit_s=3600)

    async def main():
        loop = asyncio.get_running_loop()
        started = loop.time()
        await drain_module.drain(listeners.handle(), signal.SIGINT, settings)
        return loop.time() - started

    assert 0.3 <= asyncio.run(main()) < 1.5


def _recording_stop(monkeypatch) -> tuple[Any, list[tuple[str, Any]]]:
    """The patch's wrapper around a recorder instead of MLServer's stop, and what it records."""
    calls: list[tuple[str, Any]] = []

    async def original(self, sig=None):
        calls.append(("stop", sig))

    async def drain(listeners, sig, settings):
        STATE.draining = True
        STATE.sigint_seen = sig == signal.SIGINT
        calls.append(("drain", sig))

    monkeypatch.setattr(lifecycle, "drain", drain)
    monkeypatch.setattr(lifecycle, "_listeners", lambda server: None)
    monkeypatch.setattr(STATE, "draining", False)
    return lifecycle._drain_then_stop(DrainSettings(0, 0, 1))(original), calls


def test_stop_drains_once_and_sigquit_or_a_second_sigint_stop_at_once(monkeypatch):
    stop, calls = _recording_stop(monkeypatch)
    server = object()

    async def main():
        await stop(server, None)  # programmatic (a model failed at startup): straight through
        await stop(server, signal.SIGTERM)  # drains, then stops
        await stop(server, signal.SIGTERM)  # uvicorn's re-raise: ignored
        await stop(server, signal.SIGINT)  # first Ctrl-C during the drain: ignored
        await stop(server, signal.SIGINT)  # the second: stop at once
        await stop(server, signal.SIGQUIT)  # always at once

    asyncio.run(main())
    assert calls == [
        ("stop", None),
        ("drain", signal.SIGTERM),
        ("stop", signal.SIGTERM),
        ("stop", signal.SIGINT),
        ("stop", signal.SIGQUIT),
    ]


def test_a_ctrl_c_drain_stops_mlserver_as_for_sigterm(monkeypatch):
    """After the drain has set uvicorn's should_exit, a SIGINT handed on would be uvicorn's second
    Ctrl-C (force_exit: its lifespan cancelled, a traceback logged at ERROR)."""
    stop, calls = _recording_stop(monkeypatch)
    asyncio.run(stop(object(), signal.SIGINT))
    assert calls == [("drain", signal.SIGINT), ("stop", signal.SIGTERM)]
