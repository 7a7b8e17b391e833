"""tests/reliability: real `mlserver start .` processes under bounded load, faults and hostile input.

Every server the selected tests need is launched at the start of the session, side by side, and
waited for together (harness.server.launch_all): each test module declares its servers in a
module-level `SERVERS` dict (name -> builder(request) returning a launched Server). Servers a
test ends (drain) or changes (reload) are that test's own. Clients only (requests, tritonclient):
never import mlserver here (protobuf trap). Run as its own pytest process by `make test`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.server import Server, declared_servers, launch_all, log_tail_sections


@pytest.fixture(scope="session")
def fleet(request: pytest.FixtureRequest) -> Iterator[dict[str, Server]]:
    servers = launch_all(declared_servers(request.session.items, request))
    try:
        yield servers
    finally:
        for server in servers.values():
            server.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.extend(log_tail_sections(getattr(item, "funcargs", {}).values(), lines=40, width=600))
