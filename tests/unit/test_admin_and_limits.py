"""Who may call the repository API (runtime.admin) and the request size setting (runtime.asgi_guard)."""

from __future__ import annotations

import pytest

from runtime.admin import AdminPolicy
from runtime.asgi_guard import DEFAULT_MAX_REQUEST_BYTES, max_request_bytes
from runtime.errors import AdminDisabled, AdminUnauthenticated


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
