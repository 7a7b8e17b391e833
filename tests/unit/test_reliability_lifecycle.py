"""runtime.lifecycle in process: drain settings, readiness while draining and the order of the
drain, against stand-ins for MLServer's servers. SIGTERM on real servers is tests/reliability."""

from __future__ import annotations

import asyncio
import signal
from types import SimpleNamespace

import pytest
from mlserver.handlers.dataplane import DataPlane
from mlserver.server import MLServer

import runtime.model  # noqa: F401  (installs the patches)
from runtime import admission, lifecycle


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(lifecycle, "STATE", lifecycle.DrainState())
    yield
    if lifecycle.STATE.watchdog is not None:
        lifecycle.STATE.watchdog.cancel()


def test_drain_settings_default_to_fit_kubernetes_default_grace_period():
    settings = lifecycle.DrainSettings.from_env({})
    assert (settings.delay_s, settings.timeout_s, settings.hard_exit_s) == (5.0, 15.0, 25.0)
    assert settings.hard_exit_s < 30  # terminationGracePeriodSeconds' default


def test_drain_settings_from_the_environment_and_bad_values():
    env = {lifecycle.ENV_DELAY: "1", lifecycle.ENV_TIMEOUT: "2.5", lifecycle.ENV_HARD_EXIT: "10"}
    assert lifecycle.DrainSettings.from_env(env) == lifecycle.DrainSettings(1.0, 2.5, 10.0)
    bad = lifecycle.DrainSettings.from_env({lifecycle.ENV_DELAY: "soon", lifecycle.ENV_TIMEOUT: "-1"})
    assert (bad.delay_s, bad.timeout_s) == (lifecycle.DEFAULT_DELAY_S, lifecycle.DEFAULT_TIMEOUT_S)
    # The hard exit never comes before the drain could finish.
    short = lifecycle.DrainSettings.from_env({lifecycle.ENV_DELAY: "4", lifecycle.ENV_HARD_EXIT: "1"})
    assert short.hard_exit_s == short.delay_s + short.timeout_s


class _Registry:
    async def get_models(self):
        return [SimpleNamespace(ready=True)]

    async def get_model(self, name, version=None):
        return SimpleNamespace(ready=True)


def test_readiness_is_false_while_draining_and_liveness_is_not():
    plane = SimpleNamespace(_model_registry=_Registry())

    async def states():
        return (await DataPlane.ready(plane), await DataPlane.model_ready(plane, "m"),
                await DataPlane.live(plane))  # fmt: skip

    assert asyncio.run(states()) == (True, True, True)
    lifecycle.STATE.draining = True
    assert asyncio.run(states()) == (False, False, True)


class _Grpc:
    def __init__(self, log):
        self.log = log

    async def stop(self, grace):
        self.log.append(("grpc.stop", grace))
        await asyncio.sleep(0.05)


class _Server:
    """MLServer's attributes the drain uses: _rest_server._server (uvicorn), _grpc_server._server."""

    def __init__(self, log):
        self.log = log
        self.rest = SimpleNamespace(should_exit=False, server_state=SimpleNamespace(connections=set()))
        self._rest_server = SimpleNamespace(_server=self.rest)
        self._grpc_server = SimpleNamespace(_server=_Grpc(log))


def test_the_drain_keeps_serving_then_closes_then_waits_for_in_flight(monkeypatch):
    log: list = []
    server = _Server(log)
    settings = lifecycle.DrainSettings(delay_s=0.2, timeout_s=5.0, hard_exit_s=3600)
    monkeypatch.setattr(admission.IN_FLIGHT, "total", 1)

    async def main():
        loop = asyncio.get_running_loop()
        started = loop.time()
        drain = asyncio.ensure_future(lifecycle.drain(server, signal.SIGTERM, settings))
        await asyncio.sleep(0.05)
        log.append(("draining", lifecycle.STATE.draining, server.rest.should_exit))
        await asyncio.sleep(0.3)
        log.append(("after delay", server.rest.should_exit, drain.done()))
        admission.IN_FLIGHT.total = 0  # the last request finishes
        await drain
        return loop.time() - started

    elapsed = asyncio.run(main())
    assert log == [
        ("draining", True, False),  # readiness false at once, listeners still open
        ("grpc.stop", 5.0),
        ("after delay", True, False),  # listeners closing, still waiting for the request
    ]
    assert 0.3 <= elapsed < 2.0


def test_the_drain_gives_up_waiting_after_its_timeout(monkeypatch):
    server = _Server([])
    server.rest.server_state.connections.add("stuck")
    settings = lifecycle.DrainSettings(delay_s=0.0, timeout_s=0.3, hard_exit_s=3600)

    async def main():
        loop = asyncio.get_running_loop()
        started = loop.time()
        await lifecycle.drain(server, signal.SIGINT, settings)
        return loop.time() - started

    assert 0.3 <= asyncio.run(main()) < 1.5


def test_stop_drains_once_and_sigquit_or_a_second_sigint_stop_at_once(monkeypatch):
    calls = []

    async def original(self, sig=None):
        calls.append(("stop", sig))

    async def drain(server, sig, settings):
        lifecycle.STATE.draining = True
        lifecycle.STATE.sigint_seen = sig == signal.SIGINT
        calls.append(("drain", sig))

    # Wrap a recorder instead of MLServer's stop; both are restored afterwards.
    monkeypatch.setattr(lifecycle, "drain", drain)
    monkeypatch.setattr(MLServer, "stop", original)
    monkeypatch.setitem(lifecycle._ORIGINALS, "MLServer.stop", lifecycle._ORIGINALS["MLServer.stop"])
    lifecycle._patch_stop(lifecycle.DrainSettings(0, 0, 1))
    stop, server = MLServer.stop, object()

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
