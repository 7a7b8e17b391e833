"""runtime.edge.head_limits: the head limits' settings, their refusals and the rate of their warnings.
Enforced on real servers: tests/security/test_heads.py."""

from __future__ import annotations

import json
import logging

import pytest

from runtime.edge.head_limits import (
    ENV_HEAD_TIMEOUT,
    ENV_KEEPALIVE_TIMEOUT,
    ENV_MAX_HEAD_BYTES,
    ENV_MAX_HEADERS,
    HeadLimits,
    Refusal,
    RefusalLog,
)


def test_defaults():
    assert HeadLimits.from_env({}) == HeadLimits(65536, 100, 10.0, 5.0)


def test_from_the_environment():
    env = {
        ENV_MAX_HEAD_BYTES: "16384",
        ENV_MAX_HEADERS: " 50 ",
        ENV_HEAD_TIMEOUT: "2.5",
        ENV_KEEPALIVE_TIMEOUT: "0",
        ENV_MAX_HEAD_BYTES + "_UNRELATED": "x",
    }
    assert HeadLimits.from_env(env) == HeadLimits(16384, 50, 2.5, 0.0)
    assert HeadLimits.from_env({ENV_MAX_HEADERS: ""}).max_headers == 100  # empty: the default


@pytest.mark.parametrize(
    "name, raw",
    [
        (ENV_MAX_HEAD_BYTES, "64k"),
        (ENV_MAX_HEAD_BYTES, "0"),
        (ENV_MAX_HEADERS, "-1"),
        (ENV_MAX_HEADERS, "1.5"),
        (ENV_MAX_HEADERS, "\u00b2"),
        (ENV_HEAD_TIMEOUT, "0"),
        (ENV_HEAD_TIMEOUT, "soon"),
        (ENV_HEAD_TIMEOUT, "inf"),
        (ENV_KEEPALIVE_TIMEOUT, "-1"),
        (ENV_KEEPALIVE_TIMEOUT, "nan"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(name, raw):
    with pytest.raises(ValueError) as error:
        HeadLimits.from_env({name: raw})
    assert str(error.value).startswith(f"{name}={raw!r}: expected ")


def test_each_refusal_names_its_limit_and_variable():
    limits = HeadLimits(1000, 10, 2.0, 1.0)
    assert limits.head_too_large() == Refusal(431, f"request head larger than 1000 bytes ({ENV_MAX_HEAD_BYTES})")
    assert limits.too_many_headers() == Refusal(431, f"more than 10 header lines ({ENV_MAX_HEADERS})")
    assert limits.head_too_slow() == Refusal(408, f"request head not received within 2 s ({ENV_HEAD_TIMEOUT})")
    assert json.loads(limits.head_too_slow().body()) == {"error": limits.head_too_slow().error}


def test_warnings_are_one_line_per_kind_then_one_per_interval_with_the_count(caplog):
    now = [100.0]
    log = RefusalLog(interval_s=60, clock=lambda: now[0], log=logging.getLogger("test.heads"))
    big, slow = Refusal(431, "big"), Refusal(408, "slow")
    with caplog.at_level(logging.WARNING, logger="test.heads"):
        for _ in range(5):
            log.refused("REST", big, "1.2.3.4:5")
        log.refused("REST", slow, "1.2.3.4:5")
        log.refused("metrics", big, "1.2.3.4:5")
        now[0] += 61
        log.refused("REST", big, "1.2.3.4:6")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "REST port refused a request from 1.2.3.4:5 with 431: big",
        "REST port refused a request from 1.2.3.4:5 with 408: slow",
        "metrics port refused a request from 1.2.3.4:5 with 431: big",
        "REST port refused a request from 1.2.3.4:6 with 431: big; 4 more since the last such line",
    ]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in caplog.records)
