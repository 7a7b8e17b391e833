"""The Host header of an HTTP/1.x request, checked before any middleware sees it.

A malformed Host (`Host: [zz]`) used to reach starlette_exporter's urlsplit and end as a 500 with an
ERROR traceback on every route. RFC 9112 section 3.2: a server must answer 400 to an HTTP/1.1
request without a Host header, with more than one, or with an invalid value. Valid is RFC 3986's
`host [":" port]`: a reg-name (which covers IPv4 addresses) or a bracketed IPv6 literal; the port
is digits, at most 65535 (URL parsers refuse more).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Sequence

MISSING = "an HTTP/1.1 request needs a Host header"
REPEATED = "more than one Host header"
INVALID = "the Host header is not a valid host[:port]"

_REG_NAME = rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*"
_HOST = re.compile(rb"(?:" + _REG_NAME + rb"|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::(?P<port>[0-9]*))?")
_MAX_PORT = 65535
_OWS = b" \t"


# Clients send the same few Host values over and over: each is checked once (per process, bounded
# in count, and in size: a long value, which no client needs, is checked every time, so a head full
# of distinct long values cannot fill the cache).
_CACHED_LENGTH = 270


def valid_host(value: bytes) -> bool:
    """Whether a Host field value is RFC 3986 `host [":" port]` (surrounding whitespace aside)."""
    return _valid_cached(value) if len(value) <= _CACHED_LENGTH else _valid(value)


@functools.lru_cache(maxsize=1024)
def _valid_cached(value: bytes) -> bool:
    return _valid(value)


def _valid(value: bytes) -> bool:
    match = _HOST.fullmatch(value.strip(_OWS))
    if match is None:
        return False
    port = match["port"]
    if port and (len(port) > 5 or int(port) > _MAX_PORT):
        return False
    ipv6 = match["ipv6"]
    if ipv6 is not None:
        try:
            ipaddress.IPv6Address(ipv6.decode("ascii"))
        except ValueError:
            return False
    return True


def host_problem(headers: Sequence[tuple[bytes, bytes]], http_version: Callable[[], str]) -> str | None:
    """Why a request's Host header is refused with 400, or None. `headers`: (lower-case name,
    value) pairs as received; `http_version` ("1.1", "1.0") is asked only when there is no Host."""
    host: bytes | None = None
    for name, value in headers:
        if name == b"host":
            if host is not None:
                return REPEATED
            host = value
    if host is None:
        return MISSING if http_version() == "1.1" else None
    return None if valid_host(host) else INVALID
