"""tests/rehearsal: progressive delivery rehearsed locally, end to end, with real processes only.

    stable v1 ──┐                      ┌── Prometheus (Debian's package), scraping every 1 s
    canary  ────┼── nginx upstream ────┤
    (good v2, erroring v2, shifted v2) └── load: 3 REST clients through nginx, bounded in time

Four `mlserver start .` servers (stable v1; canaries: v2, v2 failing every 5th prediction, v2
with every prediction + 40), one nginx whose upstream weights `rollout auto` rewrites and reloads,
one Prometheus scraping all four, and closed-loop load through nginx for the whole module. All are
started once per session, only when a test asks for them (the unit tests of this package start
nothing), and stopped at the end. nginx and Prometheus are installed from the distribution's
packages when missing (apt-get, as harness.postgres does for PostgreSQL).

Clients only: never import mlserver here (protobuf trap). Run as its own pytest process.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.nginx import Nginx, start_nginx
from harness.prometheus import Prometheus, start_prometheus
from harness.server import Server, launch_all, log_tail_sections
from tests.rehearsal import support

LOAD_MAX_S = 170.0  # the load stops on its own after this, whatever happens to the tests


@pytest.fixture(scope="session")
def fleet() -> Iterator[dict[str, Server]]:
    base = Path(tempfile.mkdtemp(prefix="pipeline-rehearsal-"))
    servers = launch_all(
        {
            "stable": lambda: support.launch_version(base, "stable", "diabetes/1", "1"),
            "good": lambda: support.launch_version(base, "good", "diabetes/2", "2"),
            "erroring": lambda: support.launch_version(
                base,
                "erroring",
                "diabetes/2",
                "2",
                support.ERRORING,
                {"REHEARSAL_ERROR_EVERY": str(support.ERROR_EVERY)},
            ),
            "shifted": lambda: support.launch_version(
                base, "shifted", "diabetes/2", "2", support.SHIFTED, {"REHEARSAL_SHIFT": str(support.SHIFT)}
            ),
        }
    )
    try:
        yield servers
    finally:
        for server in servers.values():
            server.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def prometheus(fleet: dict[str, Server]) -> Iterator[Prometheus]:
    prom = start_prometheus({name: [f"127.0.0.1:{s.metrics_port}"] for name, s in fleet.items()}, interval_s=1.0)
    try:
        prom.wait_targets_up()
        yield prom
    finally:
        prom.close()


@pytest.fixture(scope="session")
def nginx(fleet: dict[str, Server]) -> Iterator[Nginx]:
    """The load balancer: every server in its upstream, only the stable one up at first."""
    lb = start_nginx({s.http_hostport: (100 if name == "stable" else None) for name, s in fleet.items()})
    try:
        yield lb
    finally:
        lb.close()


@pytest.fixture(scope="session")
def load(nginx: Nginx, prometheus: Prometheus) -> Iterator[support.Load]:
    running = support.Load(nginx.url, clients=3).start(LOAD_MAX_S)
    time.sleep(1.0)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def split(nginx: Nginx, fleet: dict[str, Server]) -> Callable[[str, int | None], None]:
    """Set the upstream to the stable server and one canary (every other canary down)."""

    def set_split(canary: str, canary_weight: int | None = None) -> None:
        weights: dict[str, int | None] = {s.http_hostport: None for s in fleet.values()}
        weights[fleet["stable"].http_hostport] = 100 - (canary_weight or 0)
        weights[fleet[canary].http_hostport] = canary_weight or None
        nginx.set_weights(weights)

    return set_split


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        values = getattr(item, "funcargs", {})
        servers = list(values.get("fleet", {}).values())
        report.sections.extend(log_tail_sections(servers, lines=30, width=400))
        for key in ("nginx", "prometheus"):
            if key in values:
                report.sections.append((f"{key} log tail", values[key].log_tail()))
