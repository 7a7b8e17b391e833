"""Pins of the MLServer 1.7.1 / uvicorn internals that runtime.admission and runtime.lifecycle
patch or rely on. Each test fails if an upgrade changes what the patch assumes; read the module
docstrings of runtime/admission.py and runtime/lifecycle.py before adapting one.

Also: every patch is installed exactly once per process, however often MLServer re-imports the
runtime's module (it does on every model load).
"""

from __future__ import annotations

import importlib
import inspect
import signal

import grpc
import mlserver
import pytest
import uvicorn
from mlserver.grpc import server as grpc_server
from mlserver.grpc import servicers as grpc_servicers
from mlserver.grpc import utils as grpc_utils
from mlserver.handlers.dataplane import DataPlane
from mlserver.metrics import server as metrics_server
from mlserver.parallel.dispatcher import AsyncResponses
from mlserver.rest import endpoints as rest_endpoints
from mlserver.rest import server as rest_server
from mlserver.server import MLServer

import runtime.model  # noqa: F401  (installs the patches, as MLServer's first model load does)
from runtime import admission, errors, lifecycle


def _source(fn) -> str:
    return inspect.getsource(inspect.unwrap(fn))


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


# ------------------------------------------------------------------------------ versions


def test_the_patched_versions_are_the_pinned_ones():
    # Every pin below was checked against these exact versions.
    assert mlserver.__version__ == "1.7.1"
    assert uvicorn.__version__ == "0.54.0"


# ------------------------------------------------------------------------------ admission


def test_dataplane_infer_is_the_one_entry_of_rest_and_grpc_inference():
    original = admission._ORIGINALS["DataPlane.infer"]
    assert _params(original) == ["self", "payload", "name", "version"]
    assert _params(admission._ORIGINALS["DataPlane.infer_stream"]) == ["self", "payloads", "name", "version"]
    # Both transports call it through the DataPlane instance (a class attribute lookup).
    assert "self._data_plane.infer(" in _source(rest_endpoints.Endpoints.infer)
    # (the servicer's methods are wrapped without functools.wraps: read the module)
    assert "self._data_plane.infer(" in inspect.getsource(grpc_servicers)
    assert "self._data_plane.infer_stream(" in inspect.getsource(grpc_servicers)
    # It looks the model up through the registry we use too.
    assert "self._model_registry.get_model(name, version)" in _source(DataPlane._infer_contextmanager)


def test_rest_headers_go_through_the_module_global_insert_headers():
    assert "insert_headers(payload, request_headers)" in _source(rest_endpoints.Endpoints.infer)
    assert "insert_headers(payload, request_headers)" in _source(rest_endpoints.Endpoints.infer_stream)
    assert rest_endpoints.insert_headers.__module__ == "runtime.admission"  # patched
    # MLServer's own replaces parameters.headers with the transport's, dropping what a body sent.
    assert "parameters.headers = headers" in _source(admission._ORIGINALS["insert_headers"])


def test_grpc_headers_go_through_the_servicers_insert_headers():
    assert _params(admission._ORIGINALS["InferenceServicer._InsertHeaders"]) == ["self", "request", "context"]
    assert inspect.getsource(grpc_servicers).count("self._InsertHeaders(request, context)") == 3
    assert "to_headers(context)" in _source(admission._ORIGINALS["InferenceServicer._InsertHeaders"])


def test_grpc_errors_are_mapped_through_the_module_dict():
    assert "STATUS_CODE_MAPPING.get(err.status_code" in _source(grpc_utils._grpc_status_code)
    assert grpc_utils.STATUS_CODE_MAPPING[401] == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_utils.STATUS_CODE_MAPPING[503] == grpc.StatusCode.UNAVAILABLE
    assert grpc_utils.STATUS_CODE_MAPPING[504] == grpc.StatusCode.DEADLINE_EXCEEDED
    # MLServer's own entries are untouched.
    assert grpc_utils.STATUS_CODE_MAPPING[400] == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_utils.STATUS_CODE_MAPPING[500] == grpc.StatusCode.INTERNAL
    assert grpc_utils._grpc_status_code(errors.Overloaded("x")) == grpc.StatusCode.UNAVAILABLE


def test_grpc_logs_each_error_on_the_filtered_logger():
    source = _source(grpc_utils.handle_mlserver_error)
    assert "logger.exception(err)" in source
    assert grpc_utils.logger.name == "mlserver.grpc"


def test_async_responses_keep_futures_by_message_id():
    assert "self._futures[message_id]" in _source(admission._ORIGINALS["AsyncResponses.resolve"])
    assert "self._futures: Dict[str, Future" in _source(AsyncResponses.__init__)
    assert "del self._futures[message_id]" in _source(AsyncResponses._clear_message)


# ------------------------------------------------------------------------------ lifecycle


def test_mlserver_stop_closes_the_worker_pool_before_the_servers():
    # The reason for the drain: the pool goes first, with requests still in flight.
    source = _source(lifecycle._ORIGINALS["MLServer.stop"])
    assert source.index("_inference_pool_registry.close()") < source.index("_grpc_server.stop(")
    assert _params(lifecycle._ORIGINALS["MLServer.stop"]) == ["self", "sig"]
    # The loop's signal handler looks `self.stop` up when the signal arrives.
    assert "self.stop(sig=s)" in _source(MLServer._add_signal_handlers)


def test_the_servers_expose_what_the_drain_drives():
    assert "self._server = _NoSignalServer(" in _source(rest_server.RESTServer.start)
    assert "self._server = aio.server(" in _source(grpc_server.GRPCServer._create_server)
    assert "self._rest_server = RESTServer(" in _source(MLServer._create_servers)
    assert "self._grpc_server = GRPCServer(" in _source(MLServer._create_servers)
    assert "if self.should_exit:" in _source(uvicorn.Server.on_tick)
    assert "self.server_state.connections" in _source(uvicorn.Server.shutdown)
    assert "connections" in _source(uvicorn.server.ServerState.__init__)
    assert "grace" in inspect.signature(grpc.aio.Server.stop).parameters


def test_uvicorn_installs_signal_handlers_that_mlserver_cannot_switch_off():
    assert "with self.capture_signals():" in _source(uvicorn.Server.serve)
    assert "signal.signal(sig, self.handle_exit)" in _source(uvicorn.Server.capture_signals)
    for module in (rest_server, metrics_server):
        assert issubclass(module._NoSignalServer, uvicorn.Server)
        assert module._NoSignalServer.capture_signals is lifecycle._no_capture  # patched


def test_readiness_goes_through_the_dataplane():
    assert _params(lifecycle._ORIGINALS["DataPlane.ready"]) == ["self"]
    assert _params(lifecycle._ORIGINALS["DataPlane.model_ready"]) == ["self", "name", "version"]
    assert "self._data_plane.ready()" in _source(rest_endpoints.Endpoints.ready)
    assert "self._data_plane.model_ready(" in _source(rest_endpoints.Endpoints.model_ready)
    assert "self._data_plane.ready()" in inspect.getsource(grpc_servicers)
    assert "self._data_plane.model_ready(" in inspect.getsource(grpc_servicers)


# ------------------------------------------------------------------------------ installed once


def _patch_points() -> dict:
    return {
        "infer": DataPlane.infer,
        "infer_stream": DataPlane.infer_stream,
        "ready": DataPlane.ready,
        "model_ready": DataPlane.model_ready,
        "stop": MLServer.stop,
        "rest": rest_endpoints.insert_headers,
        "grpc": grpc_servicers.InferenceServicer._InsertHeaders,
        "resolve": AsyncResponses.resolve,
    }


def test_every_patch_is_installed_once_however_often_the_module_is_reloaded():
    patched = _patch_points()
    filters = len(grpc_utils.logger.filters)
    importlib.reload(runtime.model)  # what MLServer does on a model load
    admission.install()
    lifecycle.install()
    assert _patch_points() == patched
    assert len(grpc_utils.logger.filters) == filters
    for name, fn in patched.items():
        assert fn.__module__ in ("runtime.admission", "runtime.lifecycle"), name


def test_signal_takeover_replaces_only_a_uvicorn_handler():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        server = uvicorn.Server(uvicorn.Config(app=None))
        signal.signal(signal.SIGTERM, server.handle_exit)
        lifecycle._take_signals_from_uvicorn()
        assert signal.getsignal(signal.SIGTERM) is lifecycle._noop_signal_handler

        def mine(signum, frame):  # someone else's handler is left alone
            pass

        signal.signal(signal.SIGTERM, mine)
        lifecycle._take_signals_from_uvicorn()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_importing_the_runtime_leaves_the_test_process_signals_alone():
    assert signal.getsignal(signal.SIGTERM) is not lifecycle._noop_signal_handler
    assert signal.getsignal(signal.SIGINT) is not lifecycle._noop_signal_handler


@pytest.mark.parametrize("module", [admission, lifecycle])
def test_install_is_a_no_op_in_a_parallel_worker(module, monkeypatch):
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    monkeypatch.setattr(module, "_installed", False)
    before = (DataPlane.infer, MLServer.stop)
    module.install()
    assert (DataPlane.infer, MLServer.stop) == before
