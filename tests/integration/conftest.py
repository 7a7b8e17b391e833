"""Integration fixtures: real `mlserver start .` processes driven only through V2 clients.

Every server the selected tests need is launched at the start of the session, side by side, and
waited for together (harness.server.launch_all): the shipped repository for any test using
`server`, plus whatever the test modules declare in a module-level `SERVERS` dict
(name -> builder(request) returning a launched Server). Never import mlserver here (the protobuf
trap); expectations come from the artifacts (harness.models).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.models import served_models
from harness.otlp import TraceReceiver
from harness.server import Server, declared_servers, launch_all, log_tail_sections, stop_all
from tests.integration import support
from tests.integration.clients import Clients


def _shipped(request: pytest.FixtureRequest) -> Server:
    log_dir = request.getfixturevalue("tmp_path_factory").mktemp("mlserver")
    return Server.launch(log_dir / "mlserver.log", models=served_models())


@pytest.fixture(scope="session")
def receiver() -> Iterator[TraceReceiver]:
    rec = TraceReceiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="session")
def fleet(request: pytest.FixtureRequest) -> Iterator[dict[str, Server]]:
    builders = declared_servers(request.session.items, request)
    if any(isinstance(item, pytest.Function) and "server" in item.fixturenames for item in request.session.items):
        builders["shipped"] = lambda: _shipped(request)
    servers = launch_all(builders)
    try:
        yield servers
    finally:
        support.close_grpc_channels()
        stop_all(servers.values())


@pytest.fixture(scope="session")
def server(fleet) -> Server:
    """The repository itself, as `make serve` runs it."""
    return fleet["shipped"]


@pytest.fixture(scope="session")
def kserve_clients(server, tmp_path_factory):
    worker = support.KServeWorker(server, tmp_path_factory.mktemp("kserve") / "worker.log")
    try:
        yield worker
    finally:
        worker.close()


@pytest.fixture(scope="session")
def triton_http(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.http_hostport, connection_timeout=60, network_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def triton_grpc(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    yield client
    client.close()


@pytest.fixture
def clients(request, server) -> Clients:
    """infer(client, model, x, ...) over any of clients.CLIENTS."""
    return Clients(request)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.extend(log_tail_sections(getattr(item, "funcargs", {}).values(), width=600))
