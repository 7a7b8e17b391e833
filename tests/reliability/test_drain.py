"""SIGTERM under load: readiness turns false first, no accepted request fails, the process exits
within a bounded time; over REST and gRPC, with and without parallel workers.

Stock MLServer 1.7.1 with parallel workers fails requests in flight on SIGTERM (500 KeyError /
CancelledError, gRPC INTERNAL) and may never exit; runtime.integration.lifecycle drains instead.

"Accepted" is judged from the client side, which is stricter than counting what entered the
server: every request *sent* before the signal, and every request sent during the drain delay,
must succeed. Only after the listeners close may requests fail, and then only by being refused
at the transport (connection refused/closed, gRPC UNAVAILABLE), never with an error status.
"""

from __future__ import annotations

import functools
import re
import signal
import time
from typing import Any

import pytest

from harness.repository import RUNTIME, add_model, make_repository
from harness.server import Server
from tests.reliability import support

DELAY_S = 1.0
TIMEOUT_S = 5.0
LOAD_BEFORE_SIGNAL_S = 1.0
LOAD_AFTER_SIGNAL_S = DELAY_S + 1.5
# Refusals at the transport once the listeners are closed: never an error answer.
TRANSPORT = {"transport", "grpc-UNAVAILABLE", "grpc-CANCELLED"}

CASES: dict[str, dict[str, Any]] = {
    # The shipped configuration: parallel_workers 0, the real runtime, compute on the loop.
    "workers-0": dict(workers=0, implementation=RUNTIME, extra={}),
    # 20 ms of compute per request on a 1-thread executor: requests really are in flight.
    "workers-0-offload-slow": dict(workers=0, implementation=support.SLOW_RUNTIME, extra={"offload_compute": True}),
    # Parallel workers, where stock MLServer fails requests in flight.
    "workers-1-slow": dict(workers=1, implementation=support.SLOW_RUNTIME, extra={}),
}


def _launch(request: pytest.FixtureRequest, case: str) -> Server:
    cfg = CASES[case]
    root = make_repository(
        request.getfixturevalue("tmp_path_factory").mktemp(f"drain-{case}") / "repo", workers=cfg["workers"]
    )
    add_model(root, "diabetes", implementation=cfg["implementation"], extra=cfg["extra"])
    env = {
        "PIPELINE_DRAIN_DELAY_S": str(DELAY_S),
        "PIPELINE_DRAIN_TIMEOUT_S": str(TIMEOUT_S),
        "SLOW_RUNTIME_DELAY_MS": "20",
    }
    return support.launch(root, env=env, ready=["diabetes"])


# Launched with the suite's other servers (conftest.fleet); each is ended by its own test.
SERVERS = {f"drain-{case}": functools.partial(_launch, case=case) for case in CASES}


@pytest.fixture
def server(case, fleet) -> Server:
    return fleet[f"drain-{case}"]


@pytest.mark.parametrize("case", CASES)
def test_sigterm_under_load_fails_no_accepted_request(case, server):
    cfg = CASES[case]

    prober = support.Prober(server, "diabetes").start(LOAD_BEFORE_SIGNAL_S + LOAD_AFTER_SIGNAL_S + 2)
    load = support.Load(server, "diabetes", rest_clients=4, grpc_clients=4).start(
        LOAD_BEFORE_SIGNAL_S + LOAD_AFTER_SIGNAL_S
    )
    time.sleep(LOAD_BEFORE_SIGNAL_S)
    signalled = time.monotonic()
    server.signal(signal.SIGTERM)
    code = server.wait_exit(DELAY_S + TIMEOUT_S + 15)
    exited = time.monotonic()
    load.stop()
    outcomes = load.join()
    samples = prober.stop()

    summary = support.summarize(outcomes)
    print(f"{case}: {summary}; exit code {code} after {exited - signalled:.2f}s")
    assert code is not None, "the server did not exit"
    assert code == 0, f"exit code {code}"
    assert exited - signalled <= DELAY_S + TIMEOUT_S + 5

    before = [o for o in outcomes if o.started < signalled]
    during_delay = [o for o in outcomes if signalled <= o.started < signalled + DELAY_S - 0.3]
    failed_before = [o for o in before if not o.ok]
    assert len(before) > 20 and {o.protocol for o in before} == {"rest", "grpc"}
    assert failed_before == [], f"requests sent before SIGTERM failed: {failed_before[:5]}"
    assert during_delay and all(o.ok for o in during_delay), [o for o in during_delay if not o.ok][:5]
    # After the listeners closed: refused at the transport only, never an error status.
    assert {o.kind for o in outcomes if not o.ok} <= TRANSPORT, summary

    # Readiness turned false before anything was refused, liveness stayed up until the close.
    not_ready = [t for t, probe, state in samples if state == "not-ready" and t >= signalled]
    refused = [o.started for o in outcomes if not o.ok]
    assert not_ready, "readiness never turned false"
    first_not_ready = min(not_ready)
    assert first_not_ready - signalled < 0.5
    if refused:
        assert first_not_ready < min(refused)
    assert {p for t, p, s in samples if s == "not-ready" and t < signalled + DELAY_S} >= {
        "rest-ready",
        "grpc-ready",
        "rest-model-ready",
        "grpc-model-ready",
    }
    live_during_delay = [s for t, p, s in samples if p == "rest-live" and signalled < t < signalled + DELAY_S - 0.3]
    assert live_during_delay and set(live_during_delay) == {"ok"}

    # The server's own account: requests were in flight at the signal, none was left behind.
    log = server.log_text()
    drained = re.search(
        r"drain finished after [\d.]+s: (\d+) request\(s\) admitted since the signal "
        r"\((\d+) answered with an error status\), (\d+) still in flight",
        log,
    )
    assert drained, server.log_tail()
    admitted_after, failed_after, left = map(int, drained.groups())
    assert (failed_after, left) == (0, 0)
    assert admitted_after >= len(during_delay)
    at_signal = re.search(r"signal SIGTERM: draining; readiness is now false; (\d+) request\(s\) in flight", log)
    assert at_signal
    if cfg["implementation"] == support.SLOW_RUNTIME:
        assert int(at_signal.group(1)) >= 1, "nothing was in flight at the signal: the test proves little"
    # Shutdown included, every line the server wrote is JSON (the project's logging settings).
    server.log_records(strict=True)
