"""Per-request deadlines, as header arithmetic on the server's clock (Unix seconds).

The transport stamps each request on arrival (runtime.integration.rest / .grpc): its arrival
time, the deadline its `X-Request-Timeout-Ms` header asks for and the gRPC deadline. Admission
settles the effective deadline (the header's, else the model's default, never later than gRPC's)
and refuses a request whose deadline has passed; the compute step checks it again when the
computation starts, after any queueing.
"""

from __future__ import annotations

import time

from runtime.core.errors import DeadlineExceeded, InvalidTimeoutError

RECEIVED_AT = "x-pipeline-received-at"
DEADLINE_AT = "x-pipeline-deadline"
GRPC_DEADLINE_AT = "x-pipeline-grpc-deadline"
TIMEOUT_HEADER = "x-request-timeout-ms"


def stamp(headers: dict[str, str], grpc_remaining: float | None = None) -> dict[str, str]:
    """Record the arrival time and the deadlines the request brought.

    Any value a client sent under our keys is overwritten or removed.
    """
    now = time.time()
    headers[RECEIVED_AT] = repr(now)
    headers.pop(DEADLINE_AT, None)
    headers.pop(GRPC_DEADLINE_AT, None)
    raw = headers.get(TIMEOUT_HEADER)
    if raw is not None:
        headers[DEADLINE_AT] = repr(now + parse_timeout_ms(raw) / 1000.0)
    if grpc_remaining is not None:
        headers[GRPC_DEADLINE_AT] = repr(now + grpc_remaining)
    return headers


def parse_timeout_ms(raw: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not value >= 0 or value == float("inf"):  # also catches NaN
        raise InvalidTimeoutError(f"{TIMEOUT_HEADER}: expected a number of milliseconds >= 0, got {str(raw)[:40]!r}")
    return value


def settle_deadline(headers: dict[str, str], default_timeout_ms: float | None) -> None:
    """The request's effective deadline: its X-Request-Timeout-Ms, else the model's default,
    and never later than its gRPC deadline (how long the client will wait at all)."""
    candidates = []
    if DEADLINE_AT in headers:
        candidates.append(float(headers[DEADLINE_AT]))
    elif default_timeout_ms is not None:
        received = float(headers.get(RECEIVED_AT) or time.time())
        candidates.append(received + default_timeout_ms / 1000.0)
    grpc_deadline = headers.pop(GRPC_DEADLINE_AT, None)
    if grpc_deadline is not None:
        candidates.append(float(grpc_deadline))
    if candidates:
        headers[DEADLINE_AT] = repr(min(candidates))


def check_deadline(headers: dict[str, str] | None, where: str) -> None:
    if not headers:
        return
    raw = headers.get(DEADLINE_AT)
    if raw is None:
        return
    now = time.time()
    if now >= float(raw):
        waited_ms = (now - float(headers.get(RECEIVED_AT) or now)) * 1000.0
        raise DeadlineExceeded(f"deadline passed before {where} (request waited {waited_ms:.0f} ms); not computed")
