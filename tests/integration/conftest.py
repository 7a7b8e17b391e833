"""Integration fixtures: one real `mlserver start .` per session, driven only through V2 clients.

Never import `mlserver` or `runtime` here (see CONTEXT: the protobuf trap); expectations come
from the artifacts via joblib (itest_support.pipeline).
"""

from __future__ import annotations

import json

import pytest

import itest_support as its
from itest_clients import Clients

_STATE: dict = {}


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("mlserver")
    srv = its.Server.start(log_dir / "mlserver.log")
    _STATE["server"] = srv
    try:
        yield srv
    finally:
        its.close_grpc_channels()
        srv.stop()
        _STATE.pop("server", None)
        # Every response body and gRPC status message has been checked as it arrived; this is
        # the session-wide summary (a traceback would already have failed its own test).
        assert not its.AUDIT.offenders, "responses carried tracebacks:\n" + "\n".join(
            its.AUDIT.offenders
        )
        # The shipped logging configuration: every line the server wrote is one JSON object,
        # including MLServer's warning about the top-level alias's folder name, which it logs
        # before applying logging_settings (runtime/repository.py).
        lines = srv.log_path.read_text().splitlines()
        not_json = [line for line in lines if not _is_json_object(line)]
        assert any("different than model's folder name" in line for line in lines)
        assert not not_json, "server log lines that are not JSON:\n" + "\n".join(not_json[:10])


@pytest.fixture(scope="session")
def kserve_clients(server, tmp_path_factory):
    worker = its.KServeWorker(server, tmp_path_factory.mktemp("kserve") / "worker.log")
    _STATE["kserve"] = worker
    try:
        yield worker
    finally:
        worker.close()
        _STATE.pop("kserve", None)


@pytest.fixture(scope="session")
def triton_http(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.http_hostport, connection_timeout=60,
                                              network_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def triton_grpc(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    yield client
    client.close()


@pytest.fixture
def clients(request) -> Clients:
    """infer(client, model, x, ...) over any of itest_clients.CLIENTS."""
    return Clients(request)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and "server" in _STATE:
        srv = _STATE["server"]
        report.sections.append(
            ("mlserver log tail", f"{srv.log_path}\n{srv.log_tail(60)}")
        )
