"""Fuzz and soak fixtures: one real `mlserver start .` per session, driven only by raw clients.

Never import `mlserver` or `runtime` here (the protobuf trap): requests + tritonclient's stubs.
"""

from __future__ import annotations

import pytest

import fuzz_support as fs

_STATE: dict = {}


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    fs.use_private_hypothesis_dir(tmp_path_factory.mktemp("hypothesis"))
    srv = fs.start_server(tmp_path_factory.mktemp("mlserver") / "mlserver.log")
    _STATE["server"] = srv
    try:
        yield srv
    finally:
        fs.stop_server(srv)
        _STATE.pop("server", None)


@pytest.fixture(scope="session")
def fuzz(server):
    session = fs.FuzzSession(server)
    _STATE["fuzz"] = session
    try:
        yield session
    finally:
        session.close()


def pytest_configure(config):
    # Before any test: hypothesis must not create ./.hypothesis in the repository.
    import tempfile
    from pathlib import Path

    fs.use_private_hypothesis_dir(Path(tempfile.mkdtemp(prefix="fuzz-hypothesis-")))


def pytest_terminal_summary(terminalreporter):
    session = _STATE.get("fuzz")
    if session is not None and session.stats.examples:
        terminalreporter.section("fuzz summary")
        terminalreporter.write_line(session.stats.table())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and "server" in _STATE:
        srv = _STATE["server"]
        tail = "\n".join(line[:400] for line in srv.log_tail(15).splitlines())
        report.sections.append(("mlserver log tail (lines cut at 400 chars)", f"{srv.log_path}\n{tail}"))
