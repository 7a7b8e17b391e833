"""runtime.edge.host: which Host headers reach MLServer's app (RFC 9112 section 3.2, RFC 3986 host[:port]).
On real servers: tests/security/test_heads.py."""

from __future__ import annotations

import pytest

from runtime.edge.host import INVALID, MISSING, REPEATED, host_problem, valid_host


@pytest.mark.parametrize(
    "value",
    [
        b"example.com",
        b"example.com:8080",
        b"127.0.0.1",
        b"127.0.0.1:80",
        b"[::1]",
        b"[::1]:8080",
        b"[2001:db8::7]:443",
        b"[::ffff:192.0.2.1]",
        b"my-svc.ns.svc.cluster.local:8080",
        b"a_b~c",
        b"x%41y",
        b"999.1.1.1",
        b"example.com:",
        b"",
        b":80",
        b"  example.com \t",
        b"localhost:65535",
    ],
)
def test_rfc_3986_hosts_are_valid(value):
    assert valid_host(value)


@pytest.mark.parametrize(
    "value",
    [
        b"[zz]",
        b"a b",
        b"x:port",
        b"x:80:80",
        b"[::1",
        b"::1",
        b"[::1]x",
        b"[fe80::1%25eth0]",
        b"a/b",
        b"a@b",
        b"x%zz",
        b"caf\xc3\xa9.fr",
        b"a\x00b",
        b"x:65536",
        b"x:000080",
        b"[v1.fe]",
        b"a?b",
        b"a#b",
    ],
)
def test_anything_else_is_invalid(value):
    assert not valid_host(value)


def _headers(*hosts: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), *((b"host", h) for h in hosts), (b"accept", b"*/*")]


def test_a_request_is_refused_for_a_missing_repeated_or_invalid_host():
    def version(v: str):  # noqa: ANN202
        return lambda: v

    assert host_problem(_headers(b"example.com"), version("1.1")) is None
    assert host_problem(_headers(), version("1.1")) == MISSING
    assert host_problem(_headers(), version("1.0")) is None  # HTTP/1.0 had no Host
    assert host_problem(_headers(b"a", b"a"), version("1.1")) == REPEATED
    assert host_problem(_headers(b"a", b"a", b"a"), version("1.0")) == REPEATED
    assert host_problem(_headers(b"[zz]"), version("1.1")) == INVALID


def test_long_values_are_checked_every_time_not_cached():
    from runtime.edge import host

    host._valid_cached.cache_clear()
    for i in range(50):
        assert host.valid_host(b"a" * 60_000 + str(i).encode())
        assert not host.valid_host(b"[" * 60_000 + str(i).encode())
    assert host._valid_cached.cache_info().currsize == 0
    assert host.valid_host(b"example.com:8080") and host._valid_cached.cache_info().currsize == 1
