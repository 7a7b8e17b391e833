"""tests/reliability: real `mlserver start .` processes under bounded load, faults and hostile input.

Clients only (requests, tritonclient): never import mlserver or runtime here (protobuf trap);
see rel_support. Run as its own pytest process by `make test`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

import rel_support as rs

_SERVERS: list[rs.Server] = []


@pytest.fixture
def start_server() -> Iterator:
    """start_server(root, env=..., ready=[models]) -> Server; every server is stopped at teardown."""
    started: list[rs.Server] = []

    def start(root: Path, **kwargs) -> rs.Server:
        server = rs.start_server(root, **kwargs)
        started.append(server)
        _SERVERS.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.kill()
            _SERVERS.remove(server)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in _SERVERS:
            report.sections.append((f"mlserver log tail ({server.root})", server.log_tail(40)))
