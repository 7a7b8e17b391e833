"""MLServer's stop and uvicorn's signal handlers: the graceful drain of runtime.policy.drain.

Why: MLServer 1.7.1's stop() closes the parallel inference pool *first*: with parallel_workers
>= 1, requests in flight then fail (500 KeyError / CancelledError, gRPC INTERNAL) and uvicorn
waits forever for the ones whose worker is gone, so the process never exits. It never turns
readiness false either (runtime.integration.dataplane). And uvicorn 0.54's Server.serve()
installs its own SIGINT/SIGTERM handlers (capture_signals; MLServer's
`_NoSignalServer.install_signal_handlers` override no longer stops that), so the REST and
metrics servers would start closing the instant the signal lands. The runtime is installed
before MLServer starts them (runtime.integration.startup), so they never take the signals.

Drives the private `MLServer._rest_server._server` (uvicorn.Server: `should_exit`,
`server_state.connections`) and `MLServer._grpc_server._server` (grpc.aio.Server: `stop(grace)`):
each attribute on the way is a point, checked at install like the patches and read through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import uvicorn
from mlserver.grpc import GRPCServer
from mlserver.rest import RESTServer
from uvicorn.server import ServerState

from runtime.integration.patching import PatchPoint, read_point
from runtime.policy.drain import STATE, DrainSettings, Listeners, drain

logger = logging.getLogger("runtime.lifecycle")


def _private(target: str, kind: type, set_by: str, why: str) -> PatchPoint:
    lost = "the drain cannot close the listeners or see the connections left"
    return read_point(target, why, "none: no public handle on the running servers", lost, kind=kind, set_by=set_by)


REST = _private("mlserver.server:MLServer._rest_server", RESTServer, "_create_servers", "MLServer's REST server")
GRPC = _private("mlserver.server:MLServer._grpc_server", GRPCServer, "_create_servers", "MLServer's gRPC server")
UVICORN = _private(
    "mlserver.rest.server:RESTServer._server", uvicorn.Server, "start", "the REST server's uvicorn.Server"
)
GRPC_AIO = _private(
    "mlserver.grpc.server:GRPCServer._server", grpc.aio.Server, "_create_server", "the gRPC server's grpc.aio.Server"
)
SHOULD_EXIT = _private(
    "uvicorn.server:Server.should_exit",
    bool,
    "__init__",
    "uvicorn's exit flag, which the drain sets to close the listener",
)
SERVER_STATE = _private(
    "uvicorn.server:Server.server_state", ServerState, "__init__", "uvicorn's state of its connections"
)
CONNECTIONS = _private(
    "uvicorn.server:ServerState.connections", set, "__init__", "the open REST connections, which the drain waits for"
)


def _listeners(server: Any) -> Listeners:
    grpc_server = GRPC_AIO.read(GRPC.read(server))
    rest_server = UVICORN.read(REST.read(server))
    SHOULD_EXIT.read(rest_server)  # an attribute set below: one that no longer exists would do nothing
    connections = CONNECTIONS.read(SERVER_STATE.read(rest_server))
    stopped: list[asyncio.Future] = []

    def close(grace_s: float) -> None:
        # gRPC: refuse new RPCs, give those running up to the grace. REST: uvicorn closes the
        # listener and idle keep-alive connections, and lets requests in progress finish.
        stopped.append(asyncio.ensure_future(grpc_server.stop(grace=grace_s)))
        rest_server.should_exit = True  # not handle_exit(): that records a signal to re-raise

    def idle() -> bool:
        return all(f.done() for f in stopped) and not connections

    return Listeners(close, idle)


def _drain_then_stop(settings: DrainSettings) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(original_stop: Callable[..., Any]) -> Callable[..., Any]:
        async def stop(self, sig: int | None = None) -> None:
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
            await drain(_listeners(self), sig, settings)
            # The drain has set uvicorn's should_exit: a SIGINT handed on would now be uvicorn's
            # second Ctrl-C (handle_exit: force_exit), cancelling its lifespan mid-shutdown with a
            # traceback logged at ERROR. The drain is done either way: stop as for SIGTERM.
            await original_stop(self, signal.SIGTERM if sig == signal.SIGINT else sig)

        return stop

    return wrap


@contextlib.contextmanager
def _no_capture(self: Any) -> Iterator[None]:  # noqa: ARG001
    yield


def _never_capture(_original: Any) -> Any:
    return _no_capture


def servers_started_before(server_class: type) -> bool:
    """Whether a uvicorn server already holds SIGTERM/SIGINT, i.e. MLServer started its servers
    before the runtime was installed (too late for the REST guard and the drain)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    return any(
        isinstance(getattr(signal.getsignal(sig), "__self__", None), server_class)
        for sig in (signal.SIGTERM, signal.SIGINT)
    )


def patches(settings: DrainSettings) -> list[PatchPoint]:
    return [
        PatchPoint(
            target="mlserver.server:MLServer.stop",
            why="drain first (readiness false, serve for the delay, close listeners, wait for "
            "requests in flight), then MLServer's own stop; the loop's signal handler looks "
            "self.stop up when the signal arrives",
            upstream="SeldonIO/MLServer#2292 (open PR: close the pool after the servers)",
            if_removed="SIGTERM fails requests in flight (and hangs with parallel workers)",
            params=("self", "sig"),
            apply=_drain_then_stop(settings),
        ),
        *(
            PatchPoint(
                target=f"{module}:_NoSignalServer.capture_signals",
                why="uvicorn must not take SIGTERM/SIGINT from MLServer (a no-op, as MLServer meant "
                "with install_signal_handlers): MLServer.stop alone decides, through the event loop",
                upstream="encode/uvicorn#1600 moved signal handling into capture_signals (0.29); "
                "MLServer's install_signal_handlers override has been dead since",
                if_removed=f"on SIGTERM the {what} server closes at once, before the drain",
                params=("self",),
                apply=_never_capture,
            )
            for module, what in (("mlserver.rest.server", "REST"), ("mlserver.metrics.server", "metrics"))
        ),
        REST,
        GRPC,
        UVICORN,
        GRPC_AIO,
        SHOULD_EXIT,
        SERVER_STATE,
        CONNECTIONS,
    ]
