"""Graceful drain on SIGTERM: its settings, its state and its sequence.

On SIGTERM:
  1. readiness turns false at once; liveness stays true and inference is still served, so
     traffic routed before the endpoints update still succeeds;
  2. after PIPELINE_DRAIN_DELAY_S the REST and gRPC listeners close; requests already accepted
     run to completion, for at most PIPELINE_DRAIN_TIMEOUT_S;
  3. only then does the server's own stop run. A watchdog exits with status 1 after
     PIPELINE_DRAIN_HARD_EXIT_S whatever happens (set the pod's grace period above it).
SIGINT (Ctrl-C) drains the same way with no delay; a second SIGINT stops at once. SIGQUIT stops
at once. runtime.integration.lifecycle connects this to MLServer.
The delay exists for Kubernetes (endpoints update after the pod is told to stop): in a pod
(KUBERNETES_SERVICE_HOST set) it defaults to 5 s, elsewhere to 0, so a local server stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.policy.inflight import IN_FLIGHT, REFUSED

logger = logging.getLogger("runtime.lifecycle")

ENV_DELAY = "PIPELINE_DRAIN_DELAY_S"
ENV_TIMEOUT = "PIPELINE_DRAIN_TIMEOUT_S"
ENV_HARD_EXIT = "PIPELINE_DRAIN_HARD_EXIT_S"
# Kubernetes sets it in every container: the drain delay's default depends on it.
ENV_IN_POD = "KUBERNETES_SERVICE_HOST"
# Defaults fit Kubernetes' default terminationGracePeriodSeconds (30 s): 5 + 15 + 5 = 25 s.
DEFAULT_DELAY_S = 5.0
LOCAL_DELAY_S = 0.0  # nothing routes to a local server by endpoints: no reason to wait
DEFAULT_TIMEOUT_S = 15.0
HARD_EXIT_MARGIN_S = 5.0
POLL_S = 0.05


@dataclass(frozen=True)
class DrainSettings:
    delay_s: float
    timeout_s: float
    hard_exit_s: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> DrainSettings:
        env = dict(os.environ) if env is None else env
        delay = _seconds(env, ENV_DELAY, DEFAULT_DELAY_S if env.get(ENV_IN_POD) else LOCAL_DELAY_S)
        timeout = _seconds(env, ENV_TIMEOUT, DEFAULT_TIMEOUT_S)
        hard_exit = _seconds(env, ENV_HARD_EXIT, delay + timeout + HARD_EXIT_MARGIN_S)
        return cls(delay, timeout, max(hard_exit, delay + timeout))


def _seconds(env: Any, name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        logger.warning("%s=%r is not a number of seconds >= 0; using %s", name, raw, default)
        return default
    return value


class DrainState:
    def __init__(self) -> None:
        self.draining = False
        self.sigint_seen = False
        self.started_at: float | None = None
        self.watchdog: threading.Timer | None = None


STATE = DrainState()


@dataclass(frozen=True)
class Listeners:
    """What the drain drives on the server: close the listeners (letting accepted requests
    finish, for at most `grace_s`), and tell whether they are done."""

    close: Callable[[float], None]
    idle: Callable[[], bool]


async def drain(listeners: Listeners, sig: int, settings: DrainSettings) -> None:
    """Readiness false -> keep serving for the delay -> close listeners -> wait for in-flight."""
    STATE.draining = True
    STATE.sigint_seen = sig == signal.SIGINT
    loop = asyncio.get_running_loop()
    STATE.started_at = started = loop.time()
    STATE.watchdog = threading.Timer(settings.hard_exit_s, _hard_exit, args=(settings.hard_exit_s,))
    STATE.watchdog.daemon = True
    STATE.watchdog.start()
    admitted_before, failed_before = IN_FLIGHT.admitted, IN_FLIGHT.failed
    delay = settings.delay_s if sig == signal.SIGTERM else 0.0
    logger.info(
        "signal %s: draining; readiness is now false; %d request(s) in flight; serving for %.1fs "
        "before closing the listeners",
        signal_name(sig),
        IN_FLIGHT.total,
        delay,
    )
    await asyncio.sleep(delay)
    listeners.close(settings.timeout_s)
    deadline = started + delay + settings.timeout_s
    while loop.time() < deadline:
        if IN_FLIGHT.total == 0 and listeners.idle():
            break
        await asyncio.sleep(POLL_S)
    REFUSED.flush()
    logger.info(
        "drain finished after %.2fs: %d request(s) admitted since the signal (%d answered with an "
        "error status), %d still in flight; stopping MLServer",
        loop.time() - started,
        IN_FLIGHT.admitted - admitted_before,
        IN_FLIGHT.failed - failed_before,
        IN_FLIGHT.total,
    )


def _hard_exit(after_s: float) -> None:
    logger.error("drain did not finish within %.1fs of the signal; exiting now", after_s)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    time.sleep(0.05)
    os._exit(1)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
