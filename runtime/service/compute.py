"""Where a model's synchronous computation runs: inline, or on one dedicated thread.

Offloaded, the event loop stays free to accept, count and refuse requests and to answer probes
while a computation runs; computations stay serial (they hold the GIL anyway). Either way the
request's deadline is checked when its computation starts, after any queueing.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from runtime.policy.deadlines import check_deadline

A = TypeVar("A")
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_pid = 0


def _compute_executor() -> ThreadPoolExecutor:
    """One thread per process (rebuilt after a fork: a parallel worker inherits no threads)."""
    global _executor, _executor_pid
    if _executor is None or _executor_pid != os.getpid():
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-compute")
        _executor_pid = os.getpid()
    return _executor


def _checked(fn: Callable[[A], T], arg: A, headers: dict[str, str] | None) -> T:
    check_deadline(headers, "its computation started")
    return fn(arg)


async def compute(fn: Callable[[A], T], arg: A, headers: dict[str, str] | None, offload: bool) -> T:
    """`fn(arg)`, unless the deadline in `headers` has passed when it would start.

    With `offload`, on the compute thread, with the caller's context variables (tracing span,
    MLServer's model context). Without, inline: the event loop waits, as MLServer would.
    """
    if not offload:
        return _checked(fn, arg, headers)
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_compute_executor(), context.run, _checked, fn, arg, headers)
