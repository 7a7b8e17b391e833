"""Property-based fuzzing of raw V2 inference requests over REST and gRPC (hypothesis).

Each protocol runs CI_EXAMPLES (2,000) derandomized examples against one real server; see
harness/fuzz.py for what an answer may be and harness/strategies.py for what is sent. The
10,000-example run is `python -m bench.fuzz --examples 10000`. FUZZ_EXAMPLES=<n> overrides the
count here. Each test checks its own examples and health checks (a fresh tally per test).
"""

from __future__ import annotations

import os
import sys

import pytest

from harness import fuzz as fs
from harness import strategies as S

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", fs.CI_EXAMPLES))


@pytest.mark.timeout(900)
def test_rest_requests_never_get_a_server_error(fuzz):
    fuzz.fuzz("rest", S.rest_cases(), EXAMPLES)


@pytest.mark.timeout(900)
def test_grpc_requests_never_get_a_server_error(fuzz):
    fuzz.fuzz("grpc", S.grpc_cases(), EXAMPLES)


def test_server_is_healthy(fuzz):
    """Ready on both protocols and a known-good request answered correctly on both."""
    fuzz.health("on its own")
    assert fuzz.stats.health_checks == 1
    assert not fuzz.stats.health_failures, "\n".join(fuzz.stats.health_failures)


def test_this_process_never_imported_mlserver():
    """The protobuf trap: clients only in this pytest process (the MLServer-free runtime core,
    e.g. runtime.core.artifacts, is allowed; runtime.model and runtime.integration import mlserver)."""
    server_side = sorted(
        m
        for m in sys.modules
        if m.split(".")[0] == "mlserver" or m.startswith(("runtime.model", "runtime.integration"))
    )
    assert not server_side, server_side
