"""Graceful drain on SIGTERM for MLServer 1.7.1, in the process that hosts the servers.

On SIGTERM:
  1. readiness turns false at once (REST /v2/health/ready and /v2/models/{m}[/versions/{v}]/ready,
     gRPC ServerReady and ModelReady); liveness stays true and inference is still served, so
     traffic routed before the endpoints update still succeeds;
  2. after PIPELINE_DRAIN_DELAY_S the REST and gRPC listeners close; requests already accepted
     run to completion, for at most PIPELINE_DRAIN_TIMEOUT_S;
  3. only then does MLServer's own stop() run: it closes the (idle by now) worker pool and the
     servers, and the process exits. A watchdog exits with status 1 after
     PIPELINE_DRAIN_HARD_EXIT_S whatever happens (set the pod's grace period above it).
SIGINT (Ctrl-C) drains the same way with no delay; a second SIGINT stops at once. SIGQUIT stops
at once (MLServer's own stop).

Why: MLServer 1.7.1's stop() closes the parallel inference pool *first*: with parallel_workers
>= 1, requests in flight then fail (500 KeyError / CancelledError, gRPC INTERNAL) and uvicorn
waits forever for the ones whose worker is gone, so the process never exits. It never turns
readiness false either. And uvicorn 0.54's Server.serve() installs its own SIGINT/SIGTERM
handlers (capture_signals; MLServer's `_NoSignalServer.install_signal_handlers` override no longer
stops that), so the REST and metrics servers start closing the instant the signal lands.

MLServer/uvicorn internals patched (once per process, from `install()`; pinned by
tests/unit/test_reliability_patches.py):
- `mlserver.server.MLServer.stop` (class attribute; the loop's signal handler looks `self.stop` up
  when the signal arrives): the drain sequence above, then the original.
- `mlserver.handlers.dataplane.DataPlane.ready` / `.model_ready`: false while draining (not
  `model.ready = False`: MLServer would then refuse inference with 400 ModelNotReady).
- `_NoSignalServer.capture_signals` in `mlserver.rest.server` and `mlserver.metrics.server`: a
  no-op, as MLServer meant; and if uvicorn already holds SIGTERM/SIGINT when this installs, its
  handler is replaced by a no-op (the event loop's handler, which calls MLServer.stop, keeps
  working: it is woken through the signal wakeup fd, not through the Python handler).
Uses the private `MLServer._rest_server._server` (uvicorn.Server: `should_exit`,
`server_state.connections`) and `MLServer._grpc_server._server` (grpc.aio.Server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from runtime import admission

logger = logging.getLogger("runtime.lifecycle")

ENV_DELAY = "PIPELINE_DRAIN_DELAY_S"
ENV_TIMEOUT = "PIPELINE_DRAIN_TIMEOUT_S"
ENV_HARD_EXIT = "PIPELINE_DRAIN_HARD_EXIT_S"
# Defaults fit Kubernetes' default terminationGracePeriodSeconds (30 s): 5 + 15 + 5 = 25 s.
DEFAULT_DELAY_S = 5.0
DEFAULT_TIMEOUT_S = 15.0
HARD_EXIT_MARGIN_S = 5.0
POLL_S = 0.05


@dataclass(frozen=True)
class DrainSettings:
    delay_s: float
    timeout_s: float
    hard_exit_s: float

    @classmethod
    def from_env(cls, env: Optional[dict[str, str]] = None) -> "DrainSettings":
        env = os.environ if env is None else env
        delay = _seconds(env, ENV_DELAY, DEFAULT_DELAY_S)
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
        self.started_at: Optional[float] = None
        self.watchdog: Optional[threading.Timer] = None


STATE = DrainState()
_installed = False
_install_lock = threading.Lock()
# What each patch replaced (for the pins in tests/unit/test_reliability_patches.py).
_ORIGINALS: dict[str, Any] = {}


def draining() -> bool:
    return STATE.draining


def _noop_signal_handler(signum: int, frame: Any) -> None:  # noqa: ARG001
    """Stands in for uvicorn's handle_exit; MLServer's event-loop handler still fires."""


@contextlib.contextmanager
def _no_capture(self: Any) -> Iterator[None]:  # noqa: ARG001
    yield


def install() -> None:
    """Install the drain in this process; idempotent. A no-op in parallel workers (MLServer's
    pool owns their life cycle: they ignore signals and are stopped by the main process)."""
    global _installed
    if multiprocessing.parent_process() is not None:
        return
    with _install_lock:
        if _installed:
            return
        _installed = True
        settings = DrainSettings.from_env()
        _patch_readiness()
        _patch_stop(settings)
        _take_signals_from_uvicorn()
        logger.info(
            "graceful drain installed: delay %.1fs, timeout %.1fs, hard exit after %.1fs",
            settings.delay_s, settings.timeout_s, settings.hard_exit_s,
        )  # fmt: skip


def _patch_readiness() -> None:
    from mlserver.handlers.dataplane import DataPlane

    original_ready = _ORIGINALS["DataPlane.ready"] = DataPlane.ready
    original_model_ready = _ORIGINALS["DataPlane.model_ready"] = DataPlane.model_ready

    async def ready(self) -> bool:  # type: ignore[no-untyped-def]
        return False if STATE.draining else await original_ready(self)

    async def model_ready(self, name: str, version: Optional[str] = None) -> bool:  # type: ignore
        ok = await original_model_ready(self, name, version)  # ModelNotFound (404) as before
        return ok and not STATE.draining

    DataPlane.ready = ready
    DataPlane.model_ready = model_ready


def _take_signals_from_uvicorn() -> None:
    import uvicorn
    from mlserver.metrics import server as metrics_server
    from mlserver.rest import server as rest_server

    # Servers that start serving from now on install no signal handlers...
    for module in (rest_server, metrics_server):
        module._NoSignalServer.capture_signals = _no_capture
    # ...and those already serving lose theirs (only when uvicorn holds them: never in tests
    # that merely import the runtime).
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(sig)
        if isinstance(getattr(handler, "__self__", None), uvicorn.Server):
            signal.signal(sig, _noop_signal_handler)


def _patch_stop(settings: DrainSettings) -> None:
    from mlserver.server import MLServer

    original_stop = _ORIGINALS["MLServer.stop"] = MLServer.stop

    async def stop(self, sig: Optional[int] = None) -> None:  # type: ignore[no-untyped-def]
        if sig is None or sig == signal.SIGQUIT:
            # Programmatic stop (a model failed at startup) or SIGQUIT: MLServer's own, at once.
            return await original_stop(self, sig)
        if STATE.draining:
            # uvicorn re-raises the signals it recorded when its serve() returns, and people
            # press Ctrl-C twice: a second SIGINT stops at once, anything else is ignored.
            if sig == signal.SIGINT and STATE.sigint_seen:
                logger.warning("second SIGINT: stopping without waiting for the drain")
                return await original_stop(self, sig)
            STATE.sigint_seen = STATE.sigint_seen or sig == signal.SIGINT
            return None
        await drain(self, sig, settings)
        await original_stop(self, sig)

    MLServer.stop = stop


async def drain(server: Any, sig: int, settings: DrainSettings) -> None:
    """Readiness false -> keep serving for the delay -> close listeners -> wait for in-flight."""
    STATE.draining = True
    STATE.sigint_seen = sig == signal.SIGINT
    loop = asyncio.get_running_loop()
    STATE.started_at = started = loop.time()
    STATE.watchdog = threading.Timer(settings.hard_exit_s, _hard_exit, args=(settings.hard_exit_s,))
    STATE.watchdog.daemon = True
    STATE.watchdog.start()
    counts = admission.IN_FLIGHT
    admitted_before, failed_before = counts.admitted, counts.failed
    delay = settings.delay_s if sig == signal.SIGTERM else 0.0
    logger.info(
        "signal %s: draining; readiness is now false; %d request(s) in flight; serving for %.1fs "
        "before closing the listeners",
        _name(sig), counts.total, delay,
    )  # fmt: skip
    await asyncio.sleep(delay)

    grpc_server = server._grpc_server._server  # grpc.aio.Server
    rest_server = server._rest_server._server  # uvicorn.Server
    # gRPC: refuse new RPCs, give those running up to the timeout. REST: uvicorn closes the
    # listener and idle keep-alive connections, and lets requests in progress finish.
    grpc_stopped = asyncio.ensure_future(grpc_server.stop(grace=settings.timeout_s))
    rest_server.should_exit = True  # not handle_exit(): that records a signal to re-raise
    deadline = started + delay + settings.timeout_s
    while loop.time() < deadline:
        if counts.total == 0 and grpc_stopped.done() and not rest_server.server_state.connections:
            break
        await asyncio.sleep(POLL_S)
    admission.REFUSED.flush()
    logger.info(
        "drain finished after %.2fs: %d request(s) admitted since the signal (%d answered with an "
        "error status), %d still in flight; stopping MLServer",
        loop.time() - started, counts.admitted - admitted_before, counts.failed - failed_before,
        counts.total,
    )  # fmt: skip


def _hard_exit(after_s: float) -> None:
    logger.error("drain did not finish within %.1fs of the signal; exiting now", after_s)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    time.sleep(0.05)
    os._exit(1)


def _name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
