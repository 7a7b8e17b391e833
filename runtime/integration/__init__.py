"""Every touch of MLServer, uvicorn, grpc, Starlette and prometheus_client internals, installed by
one explicit `install()`.

One module per surface: rest, content_type, rest_stream, grpc_service, grpc_metrics, fast_path,
fast_path_grpc, dataplane, lifecycle, parallel, batching, tracing, http_head, prometheus_internals,
boosting (scikit-learn's, read for a fast path), skops_lookup (skops', replaced before its import)
(and direct, packed, log_format, v2: no points of their own). A point replaces or wraps its target,
or only reads it: every private attribute of another library the integration reads is one, read
through it. `patch_points()` lists every point; the table in docs/integration.md and tests/pins list the
same ones.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading

from runtime import allocator
from runtime.core import artifacts
from runtime.integration import (
    batching,
    boosting,
    content_type,
    dataplane,
    fast_path,
    fast_path_grpc,
    grpc_metrics,
    grpc_service,
    http_head,
    lifecycle,
    parallel,
    prometheus_internals,
    rest,
    rest_stream,
    skops_lookup,
    tracing,
)
from runtime.integration.patching import IntegrationError, PatchPoint, install_all
from runtime.policy.drain import DrainSettings

logger = logging.getLogger("runtime.integration")

__all__ = ["IntegrationError", "install", "patch_points"]

_lock = threading.Lock()
_installed = False


def patch_points(runtime_class: type, drain: DrainSettings | None = None) -> list[PatchPoint]:
    """Every patch point, in the order they are installed."""
    return [
        *rest.patches(),
        *content_type.PATCHES,
        *rest_stream.PATCHES,
        *grpc_service.PATCHES,
        *grpc_metrics.PATCHES,
        fast_path.USER_MIDDLEWARE,
        *fast_path_grpc.PATCHES,
        *dataplane.PATCHES,
        *lifecycle.patches(drain or DrainSettings.from_env()),
        *parallel.PATCHES,
        *batching.patches(runtime_class),
        *tracing.patches(runtime_class),
        *http_head.patches(),
        *prometheus_internals.PATCHES,
        *boosting.POINTS,
        skops_lookup.POINT,
    ]


def _check_not_too_late() -> None:
    import uvicorn

    if lifecycle.servers_started_before(uvicorn.Server):
        raise IntegrationError(
            "pipeline-runtime was set up after MLServer started its servers, too late for its "
            "request guard and graceful drain: set model_repository_implementation to "
            "runtime.integration.startup.StartupRepository (settings.json or "
            "MLSERVER_MODEL_REPOSITORY_IMPLEMENTATION)"
        )


def install(runtime_class: type) -> None:
    """Patch this process once (MLServer re-imports the runtime's module on every model load).

    In a parallel worker no server is patched: it hosts no server, and MLServer's pool owns its
    life cycle; it serves models, so it reads scikit-learn's boosting internals and imports skops
    with the faster lookup all the same. Any
    point that does not match fails the start (IntegrationError, one line).
    """
    global _installed
    with _lock:
        if _installed:
            return
        kept = allocator.keep_freed_memory()
        in_worker = multiprocessing.parent_process() is not None
        drain = DrainSettings.from_env()
        try:
            # First: skops.io is imported here, before any model loads, with its faster lookup.
            skops_lookup.install(artifacts.skops_io)
            if not in_worker:
                _check_not_too_late()
                install_all(patch_points(runtime_class, drain))
            boosting.install()
        except IntegrationError as error:
            logger.critical("%s", error)
            raise
        _installed = True
        if in_worker:
            return
        logger.info(
            "MLServer integration installed; graceful drain: delay %.1fs, timeout %.1fs, hard exit after %.1fs; "
            "allocator: %s",
            drain.delay_s,
            drain.timeout_s,
            drain.hard_exit_s,
            "freed memory kept for the next request (runtime.allocator)" if kept else "as set up by the environment",
        )
