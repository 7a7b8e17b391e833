"""Property-based fuzzing of raw V2 inference requests over REST and gRPC (hypothesis).

Each protocol runs CI_EXAMPLES (2,000) derandomized examples against one real server; see
fuzz_support.py for what an answer may be and strategies.py for what is sent. The 10,000-example
run is `python -m bench.fuzz --examples 10000`. FUZZ_EXAMPLES=<n> overrides the count here.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings

import fuzz_support as fs
import strategies as S

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", fs.CI_EXAMPLES))
CI = settings(settings.get_profile("fuzz-ci"), max_examples=EXAMPLES)


@pytest.mark.timeout(900)
@CI
@given(case=S.rest_cases())
def test_rest_requests_never_get_a_server_error(fuzz, case):
    fuzz.run(case)


@pytest.mark.timeout(900)
@CI
@given(case=S.grpc_cases())
def test_grpc_requests_never_get_a_server_error(fuzz, case):
    fuzz.run(case)


def test_server_stayed_healthy_throughout(fuzz):
    fuzz.health("at the end")
    stats = fuzz.stats
    assert stats.health_checks >= 1
    assert not stats.health_failures, "\n".join(stats.health_failures)
    # Every example really reached the server (hypothesis may stop early only on a failure).
    for protocol in ("rest", "grpc"):
        assert stats.examples[protocol] >= EXAMPLES, (protocol, dict(stats.examples))


def test_this_process_never_imported_the_server_side():
    """The protobuf trap (CONTEXT): clients only in this pytest process."""
    import sys

    assert not {"mlserver", "runtime"} & set(sys.modules), sorted(
        m for m in sys.modules if m.split(".")[0] in ("mlserver", "runtime"))
