"""Fuzz and soak fixtures: one real `mlserver start .` per session, driven only by raw clients.

Never import mlserver here (the protobuf trap): requests + tritonclient's stubs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from harness import fuzz as fs
from harness.server import log_tail_sections

_TABLES: list[tuple[str, str]] = []  # (test, its answers table) for the terminal summary


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shipped models and one with string columns (harness.fuzz.fuzz_repository)."""
    srv = fs.start_fuzz_server(tmp_path_factory.mktemp("mlserver"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def fuzz(server, request):
    """A fresh client and tally per test: no test sees another's counts."""
    session = fs.FuzzSession(server)
    try:
        yield session
    finally:
        session.close()
        if session.stats.examples:
            _TABLES.append((request.node.name, session.stats.table()))


def pytest_configure(config):
    # Before any test: hypothesis must not create ./.hypothesis in the repository.
    fs.use_private_hypothesis_dir(Path(tempfile.mkdtemp(prefix="fuzz-hypothesis-")))


def pytest_terminal_summary(terminalreporter):
    """A report only (what the server answered); every check is in the tests."""
    if _TABLES:
        terminalreporter.section("fuzz summary")
        for name, table in _TABLES:
            terminalreporter.write_line(f"{name}:\n{table}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.extend(log_tail_sections(getattr(item, "funcargs", {}).values(), lines=15, width=400))
