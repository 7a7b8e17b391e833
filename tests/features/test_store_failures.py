"""The feature store failing under a real server, with its own PostgreSQL cluster that the tests
stop, kill and restart: fast 503s and an open breaker while it is down, recovery without a
restart of the server, a server started while it is down, pool limits under 64 concurrent
requests, and the fault test (killed under 16 clients for 10 s)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
import requests
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from harness.server import served
from tests.features.support import cluster, grpc_by_id, launch, rest_by_id

POOL_MAX = 4
BREAKER_OPEN_S = 1.0
DEADLINE_MS = 2000


@pytest.fixture(scope="module")
def own_pg():  # its own: the tests stop, kill and restart it
    yield from cluster()


@pytest.fixture(scope="module")
def server(own_pg, tmp_path_factory):
    common = {"cache_ttl_s": 0, "pool_max": POOL_MAX, "breaker_open_s": BREAKER_OPEN_S, "lookup_timeout_ms": 500}
    defaults = dict.fromkeys(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], 0.0)
    models: dict[str, dict[str, Any] | None] = {
        "by-id": common,
        "busy": {**common, "pool_max_waiting": 8},
        "degrades": {**common, "defaults": defaults, "on_unavailable": "defaults"},
    }
    server = launch(tmp_path_factory.mktemp("failures"), own_pg, models)
    yield from served(server)


def _until_ok(server, model: str, seconds: float) -> float:
    """How long until a lookup succeeds again (fails the test past `seconds`)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if rest_by_id(server, model, ["patient-0001"]).status_code == 200:
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"{model} still failing {seconds} s after the database came back")


def test_a_stopped_database_gives_fast_503s_opens_the_breaker_and_recovers_without_a_restart(server, own_pg):
    assert rest_by_id(server, "by-id", ["patient-0001"]).status_code == 200
    own_pg.stop("fast")
    try:
        answers = []
        for _ in range(12):
            started = time.monotonic()
            response = rest_by_id(server, "by-id", ["patient-0001"])
            answers.append((response.status_code, time.monotonic() - started, response.json()["error"]))
        assert {a[0] for a in answers} == {503}, answers
        assert all("feature store is unavailable" in a[2] for a in answers), answers
        assert "circuit breaker open" in answers[-1][2]
        assert max(a[1] for a in answers) < 0.5 + 0.5  # the lookup budget, and a margin for the machine
        assert server.metric("pipeline_feature_store_breaker_state", model="by-id") == 2
        client = tgrpc.InferenceServerClient(url=server.grpc_url)
        with pytest.raises(InferenceServerException) as raised:
            grpc_by_id(client, "by-id", ["patient-0001"])
        client.close()
        assert raised.value.status() == "StatusCode.UNAVAILABLE"
        assert "feature store is unavailable" in raised.value.message()
        degraded = rest_by_id(server, "degrades", ["patient-0001"], parameters={"feature_sources": True})
        assert degraded.status_code == 200, degraded.text  # configured: defaults while the store is down
        assert '"rows": ["defaults"]' in degraded.json()["parameters"]["feature_sources"]
    finally:
        own_pg.start()
    _until_ok(server, "by-id", 15)
    assert server.metric("pipeline_feature_store_breaker_state", model="by-id") == 0
    assert server.log_records(lambda r: "circuit breaker of the feature store of by-id" in r.get("message", ""))


def test_the_pool_stays_within_its_limits_under_64_concurrent_lookups(server, own_pg):
    seen, stop = [], threading.Event()

    def watch() -> None:  # the database's own view of the runtime's connections
        while not stop.is_set():
            seen.append(
                own_pg.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pipeline-runtime/busy'"
                )[0][0]
            )
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    statuses: Counter = Counter()
    lock = threading.Lock()

    def client(i: int) -> None:
        session = requests.Session()
        for n in range(5):
            response = rest_by_id(server, "busy", [f"patient-{(i * 5 + n) % 442:04d}"], session=session)
            with lock:
                statuses[response.status_code] += 1
            if response.status_code == 503:
                assert "busy" in response.json()["error"] or "unavailable" in response.json()["error"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    watcher.join(5)
    assert set(statuses) <= {200, 503} and statuses[200] > 0, statuses
    assert 0 < max(seen) <= POOL_MAX, seen
    assert server.metric("pipeline_feature_pool_connections", model="busy", state="size") <= POOL_MAX


def test_a_server_started_while_the_database_is_down_is_ready_and_recovers_when_it_returns(own_pg, tmp_path):
    own_pg.stop("fast")
    server = launch(tmp_path, own_pg, {"late": {"cache_ttl_s": 0, "breaker_open_s": BREAKER_OPEN_S}})
    try:
        server.wait_ready()  # ready with no database at all
        response = rest_by_id(server, "late", ["patient-0001"])
        assert response.status_code == 503 and "feature store is unavailable" in response.json()["error"]
        own_pg.start()
        _until_ok(server, "late", 20)
    finally:
        own_pg.start()
        server.kill()


def test_killed_under_16_clients_no_hang_no_500_and_back_to_no_errors(server, own_pg):
    """The database is killed (immediate shutdown: a crash) 2 s into 10 s of lookups from 16
    clients and restarted 3 s later."""
    outcomes, lock, stop_at = [], threading.Lock(), time.monotonic() + 10

    def client(i: int) -> None:
        session = requests.Session()
        for n in range(3000):  # bounded in count as well as in time
            if time.monotonic() >= stop_at:
                break
            started = time.monotonic()
            try:
                status = rest_by_id(
                    server,
                    "by-id",
                    [f"patient-{(i * 7 + n) % 442:04d}"],
                    session=session,
                    headers={"X-Request-Timeout-Ms": str(DEADLINE_MS)},
                    timeout=10,
                ).status_code
            except requests.RequestException:
                status = -1
            with lock:
                outcomes.append((started, time.monotonic() - started, status))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    time.sleep(2)
    own_pg.stop("immediate")
    time.sleep(3)
    own_pg.start()
    restarted = time.monotonic()
    for t in threads:
        t.join(30)
    assert outcomes
    statuses = Counter(s for _, _, s in outcomes)
    assert set(statuses) <= {200, 503}, statuses  # no 500, no transport error
    assert statuses[503] > 0, statuses  # the outage was seen
    assert max(seconds for _, seconds, _ in outcomes) < DEADLINE_MS / 1000, "a request hung past its deadline"
    last_error = max(started for started, _, s in outcomes if s != 200)
    print(f"{statuses}; last error {last_error - restarted:.2f} s after the restart")
    tail = [s for started, _, s in outcomes if started > stop_at - 1.5]
    assert tail and set(tail) == {200}, Counter(tail)  # recovered: no errors in the last 1.5 s
