"""Who may call the repository API (runtime.policy.admin), the request size setting (runtime.edge.guard)
and per-client rate limits (runtime.policy.ratelimit, runtime.policy.admission)."""

from __future__ import annotations

import pytest

from runtime.core.errors import AdminDisabled, AdminUnauthenticated, RateLimited, Unauthenticated
from runtime.edge.body_limits import DEFAULT_MAX_REQUEST_BYTES, max_request_bytes
from runtime.policy.admin import AdminPolicy
from runtime.policy.admission import PEER_HEADER, Policy
from runtime.policy.breaker import CircuitBreaker
from runtime.policy.ratelimit import RateLimiter


@pytest.mark.parametrize(
    "host,env,mode",
    [
        ("127.0.0.1", {}, "open"),
        ("localhost", {}, "open"),
        ("::1", {}, "open"),
        ("0.0.0.0", {}, "off"),  # a pod: locked until an admin token is set
        ("127.0.0.1", {"PIPELINE_AUTH_TOKENS": "t"}, "off"),  # inference guarded: so is the repository
        ("127.0.0.1", {"PIPELINE_AUTH_TOKEN_FILE": "/run/tokens"}, "off"),
        ("0.0.0.0", {"PIPELINE_ADMIN_TOKENS": "a"}, "token"),
        ("0.0.0.0", {"PIPELINE_ADMIN_TOKENS": "a", "PIPELINE_ADMIN_API": "off"}, "off"),
        ("127.0.0.1", {"PIPELINE_ADMIN_API": "OFF"}, "off"),
    ],
)
def test_the_mode_follows_tokens_and_address(host, env, mode):
    assert AdminPolicy.from_env(host, env).mode == mode


def test_token_mode_accepts_only_the_admin_token():
    policy = AdminPolicy.from_env("0.0.0.0", {"PIPELINE_ADMIN_TOKENS": "admin-1, admin-2"})
    policy.check({"authorization": "Bearer admin-2"})
    for headers in ({}, {"authorization": "Bearer inference"}):
        with pytest.raises(AdminUnauthenticated, match="needs the admin token") as refused:
            policy.check(headers)
        assert refused.value.status == 401


def test_off_refuses_everyone_and_says_why():
    policy = AdminPolicy.from_env("0.0.0.0", {})
    with pytest.raises(AdminDisabled, match="listening on 0.0.0.0 without an admin token") as refused:
        policy.check({"authorization": "Bearer anything"})
    assert refused.value.status == 403


@pytest.mark.parametrize("raw,expected", [("", DEFAULT_MAX_REQUEST_BYTES), ("1024", 1024), (" 2048 ", 2048)])
def test_max_request_bytes(raw, expected):
    assert max_request_bytes({"PIPELINE_MAX_REQUEST_BYTES": raw}) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "8MB", "1e6"])
def test_a_bad_max_request_bytes_fails_the_start(raw):
    with pytest.raises(ValueError, match="PIPELINE_MAX_REQUEST_BYTES"):
        max_request_bytes({"PIPELINE_MAX_REQUEST_BYTES": raw})


# ------------------------------------------------------------------------------ rate limits


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_the_burst_then_the_rate():
    clock = _Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    assert limiter.take("a") == pytest.approx(0.5)  # empty: the next token comes in 1/rate s
    assert limiter.take("b") is None  # another client has its own bucket
    clock.now += 0.5
    assert limiter.take("a") is None
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 10  # refills, but never beyond the burst
    assert [limiter.take("a") for _ in range(4)][-1] is not None


def test_the_buckets_are_bounded(monkeypatch):
    from runtime.policy import ratelimit

    monkeypatch.setattr(ratelimit, "MAX_CLIENTS", 3)
    limiter = RateLimiter(rate=1.0, burst=1, clock=_Clock())
    for key in "abcd":
        limiter.take(key)
    assert len(limiter._buckets) == 3 and "a" not in limiter._buckets


def test_admission_limits_per_client_after_authenticating(monkeypatch):
    monkeypatch.setenv("RATE_TOKENS", "one,two")
    policy = Policy.from_extra(
        "m", "1", {"auth_token_env": "RATE_TOKENS", "rate_limit_per_s": 1, "rate_limit_burst": 2}
    )
    for _ in range(2):
        policy.admit({"authorization": "Bearer one"})
    with pytest.raises(
        RateLimited, match=r"client token-[0-9a-f]{8} is over its rate for model 'm' \(1/s, burst 2\); retry after"
    ) as refused:
        policy.admit({"authorization": "Bearer one"})
    assert refused.value.status == 429 and "one" not in str(refused.value).split("token-")[0]
    policy.admit({"authorization": "Bearer two"})  # its own bucket
    with pytest.raises(Unauthenticated):  # an unauthenticated request never spends a token
        policy.admit({"authorization": "Bearer three"})


def test_without_auth_the_peer_address_is_the_client():
    policy = Policy.from_extra("m", "1", {"rate_limit_per_s": 1})
    policy.admit({PEER_HEADER: "10.0.0.1"})
    with pytest.raises(RateLimited, match="client 10.0.0.1"):
        policy.admit({PEER_HEADER: "10.0.0.1"})
    policy.admit({PEER_HEADER: "10.0.0.2"})


# ------------------------------------------------------------------------------ circuit breaker


def test_the_breaker_opens_on_the_failure_ratio_probes_then_closes():
    clock = _Clock()
    states: list[str] = []
    breaker = CircuitBreaker(
        "m", failure_ratio=0.5, window=4, min_calls=4, open_s=1.0, probes=2, on_change=states.append, clock=clock
    )
    for ok in (True, False, True):
        assert breaker.allow()
        breaker.record(ok)
    assert breaker.state == "closed"  # under min_calls
    breaker.record(False)  # 2 of 4 failed
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 1.0
    assert breaker.allow() and breaker.allow() and not breaker.allow()  # two probes at a time
    breaker.record(True)
    breaker.record(True)
    assert breaker.state == "closed" and states == ["open", "half_open", "closed"]


def test_a_failed_probe_opens_it_again():
    clock = _Clock()
    breaker = CircuitBreaker("m", failure_ratio=1.0, window=1, min_calls=1, open_s=1.0, clock=clock)
    breaker.record(False)
    clock.now += 1.0
    assert breaker.allow()
    breaker.record(False)
    assert breaker.state == "open" and not breaker.allow()


def test_a_probe_that_neither_worked_nor_failed_frees_its_slot():
    # A half-open breaker whose only probe was refused for load (or cancelled) must let the next
    # call probe, not stay half-open for good (the feature store's recovery depends on it).
    clock = _Clock()
    breaker = CircuitBreaker("m", failure_ratio=1.0, window=1, min_calls=1, open_s=1.0, probes=1, clock=clock)
    breaker.record(False)
    clock.now += 1.0
    assert breaker.allow() and not breaker.allow()
    breaker.forget()
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state == "closed"
