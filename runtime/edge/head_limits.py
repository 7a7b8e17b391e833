"""Limits on an HTTP request's head (request line and headers) on the REST and metrics ports.

Without them an 8 MiB header line is accepted, unfinished heads hold memory for as long as their
sockets stay open, and a head sent a byte at a time (slowloris) holds its connection forever; in
KServe Standard mode no proxy sits in front to cut them. runtime.integration.http_head enforces
these in uvicorn's HTTP protocol, before a request reaches any middleware.

| variable | default | refusal |
|---|---|---|
| PIPELINE_MAX_HEAD_BYTES | 65536 | 431, as soon as the bytes received pass it |
| PIPELINE_MAX_HEADERS | 100 | 431 |
| PIPELINE_HEAD_TIMEOUT_S | 10 | 408 and close (closed silently if nothing arrived) |
| PIPELINE_KEEPALIVE_TIMEOUT_S | 5 | an idle keep-alive connection is closed |

A bad value fails the start with a ValueError naming the variable.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from runtime.edge.env_numbers import seconds, whole_number

logger = logging.getLogger("runtime.heads")

ENV_MAX_HEAD_BYTES = "PIPELINE_MAX_HEAD_BYTES"
ENV_MAX_HEADERS = "PIPELINE_MAX_HEADERS"
ENV_HEAD_TIMEOUT = "PIPELINE_HEAD_TIMEOUT_S"
ENV_KEEPALIVE_TIMEOUT = "PIPELINE_KEEPALIVE_TIMEOUT_S"

# nginx's large_client_header_buffers allows 4 x 8 KiB; 64 KiB leaves room for big cookies and
# tokens while a refused head never costs more than this.
DEFAULT_MAX_HEAD_BYTES = 64 * 1024
DEFAULT_MAX_HEADERS = 100  # Apache httpd's LimitRequestFields: far above what real clients send
DEFAULT_HEAD_TIMEOUT_S = 10.0
# uvicorn's own default, kept: behind a load balancer that reuses connections to the pod, raise it
# above the balancer's idle timeout so the pod never closes a connection the balancer is reusing.
DEFAULT_KEEPALIVE_TIMEOUT_S = 5.0

WARNING_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Refusal:
    """An HTTP error answered instead of a request: its status and the JSON body's message."""

    status: int
    error: str

    def body(self) -> bytes:
        return json.dumps({"error": self.error}).encode()


@dataclass(frozen=True)
class HeadLimits:
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HeadLimits:
        env = os.environ if env is None else env
        return cls(
            max_head_bytes=whole_number(env, ENV_MAX_HEAD_BYTES, DEFAULT_MAX_HEAD_BYTES, "bytes"),
            max_headers=whole_number(env, ENV_MAX_HEADERS, DEFAULT_MAX_HEADERS, "header lines"),
            head_timeout_s=seconds(env, ENV_HEAD_TIMEOUT, DEFAULT_HEAD_TIMEOUT_S, allow_zero=False),
            keepalive_timeout_s=seconds(env, ENV_KEEPALIVE_TIMEOUT, DEFAULT_KEEPALIVE_TIMEOUT_S, allow_zero=True),
        )

    def head_too_large(self) -> Refusal:
        return Refusal(431, f"request head larger than {self.max_head_bytes} bytes ({ENV_MAX_HEAD_BYTES})")

    def too_many_headers(self) -> Refusal:
        return Refusal(431, f"more than {self.max_headers} header lines ({ENV_MAX_HEADERS})")

    def head_too_slow(self) -> Refusal:
        return Refusal(408, f"request head not received within {self.head_timeout_s:g} s ({ENV_HEAD_TIMEOUT})")


class RefusalLog:
    """One warning line per kind of refusal at once, then at most one per interval with the count
    since: a client that sends thousands of bad heads must not flood the log."""

    def __init__(
        self,
        interval_s: float = WARNING_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = logger,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._log = log
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def refused(self, port: str, refusal: Refusal, client: str) -> None:
        kind = f"{port} {refusal.status} {refusal.error}"
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._since[kind] = self._since.get(kind, 0) + 1
            return
        others = self._since.pop(kind, 0)
        self._last[kind] = now
        more = f"; {others} more since the last such line" if others else ""
        self._log.warning(
            "%s port refused a request from %s with %d: %s%s", port, client, refusal.status, refusal.error, more
        )
