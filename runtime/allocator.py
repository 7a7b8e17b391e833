"""The C allocator keeps freed memory for the next large request instead of giving it back.

A large request (10,000 rows over JSON: a 2 MB body, simdjson's padded copy of it, the numbers'
buffer, numpy's temporaries) takes a few megabytes that are all freed once it is answered. glibc
serves blocks that large with mmap and unmaps them when freed, or trims the heap's free top, so
the next such request faults every page in again: about a thousand page faults and a quarter of the
server's CPU time per request (docs/performance.md, "Large batches"). Here blocks below
`MMAP_BELOW` come from the heap, and `TOP_PAD` of its free top is kept when it trims: memory the
process has once used stays mapped, at most `TOP_PAD` of it unused at the top.
An operator's own setting wins (the MALLOC_*_ variables or GLIBC_TUNABLES, read by glibc at
start); a C library without mallopt is left as it is.
"""

from __future__ import annotations

import ctypes
import os

MMAP_BELOW = 32 * 1024 * 1024  # four times the default request limit (PIPELINE_MAX_REQUEST_BYTES)
TOP_PAD = 16 * 1024 * 1024
OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3  # glibc's malloc.h


def keep_freed_memory() -> bool:
    """Whether glibc now keeps freed memory as above; False where the operator set the allocator up
    or there is no mallopt."""
    if any(name in os.environ for name in OPERATOR_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_BELOW)) and bool(mallopt(_M_TOP_PAD, TOP_PAD))
