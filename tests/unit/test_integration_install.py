"""The integration package's install (runtime.integration): every patch point is checked before
any is applied, a target that moved or changed shape (a private attribute the runtime only reads
included) fails the start with one line naming it and the MLServer version, and the install
happens once per process. What each patch does is pinned by behaviour through real servers in
tests/pins."""

from __future__ import annotations

import ast
import importlib
import multiprocessing
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlserver
import pytest
import uvicorn
from mlserver import tracing as mlserver_tracing
from mlserver.grpc.interceptors import PromServerInterceptor
from mlserver.handlers.dataplane import DataPlane
from mlserver.server import MLServer
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import Histogram
from py_grpc_prometheus.prometheus_server_interceptor import PromServerInterceptor as PyGrpcPromInterceptor

import runtime.model
from runtime import integration
from runtime.integration import dataplane, lifecycle, patching
from runtime.integration.grpc_metrics import BoundPromInterceptor
from runtime.integration.patching import IntegrationError, PatchPoint, install_all

REPO = Path(__file__).resolve().parents[2]


def _points() -> list[PatchPoint]:
    return integration.patch_points(runtime.model.PipelineRuntime)


def test_the_supported_versions_are_the_installed_ones():
    # Every point below was written against these; an upgrade re-runs tests/pins first.
    assert mlserver.__version__ == patching.SUPPORTED_MLSERVER
    assert uvicorn.__version__ == "0.54.0"


def test_every_point_is_documented_and_unique():
    points = _points()
    assert len({p.target for p in points}) == len(points)
    for point in points:
        assert point.why and point.upstream and point.if_removed, point.target


def test_every_point_still_matches_after_install():
    # The checks compare shapes (parameters, types), which the wrappers keep.
    for point in _points():
        point.check()


class _Target:
    def __init__(self):
        self._made = 1

    def method(self, a, b):  # noqa: ANN001
        return "original"


def _point(target: str, **kwargs) -> PatchPoint:
    return PatchPoint(target=target, why="w", upstream="u", if_removed="r", **kwargs)


def test_a_missing_target_fails_with_one_line_naming_it_and_the_version():
    point = _point(f"{__name__}:_Target.gone", params=("self",))
    with pytest.raises(IntegrationError) as error:
        point.check()
    message = str(error.value)
    assert "\n" not in message
    assert f"{__name__}:_Target.gone" in message and "not found" in message
    assert f"MLServer {mlserver.__version__} is installed" in message


def test_a_changed_signature_or_type_fails_the_same_way():
    with pytest.raises(IntegrationError, match=r"expected parameters \('self', 'a'\), found \('self', 'a', 'b'\)"):
        _point(f"{__name__}:_Target.method", params=("self", "a")).check()
    with pytest.raises(IntegrationError, match="expected a dict, found function"):
        _point(f"{__name__}:_Target.method", kind=dict).check()


def test_nothing_is_applied_unless_every_point_matches(monkeypatch):
    monkeypatch.setattr(_Target, "method", _Target.method)
    good = _point(
        f"{__name__}:_Target.method", params=("self", "a", "b"), apply=lambda original: lambda self, a, b: "patched"
    )
    bad = _point(f"{__name__}:_Target.gone", params=("self",))
    with pytest.raises(IntegrationError):
        install_all([good, bad])
    assert _Target().method(1, 2) == "original"  # not half-patched
    install_all([good])
    assert _Target().method(1, 2) == "patched"


def test_an_instance_attribute_is_checked_in_the_code_of_the_method_that_sets_it():
    made = _point(f"{__name__}:_Target._made", set_by="__init__")
    assert made.check() is _Target.__init__ and made.read(_Target()) == 1
    with pytest.raises(IntegrationError, match=r"_Target\._gone: not found \(_Target\.__init__ no longer sets it\)"):
        _point(f"{__name__}:_Target._gone", set_by="__init__").check()
    with pytest.raises(IntegrationError, match=r"_Target\._made: not found \(.*no attribute 'setup'"):
        _point(f"{__name__}:_Target._made", set_by="setup").check()


def test_reading_an_instance_that_lacks_the_attribute_or_holds_another_type_fails_naming_the_point():
    with pytest.raises(IntegrationError, match=r"DataPlane\._model_registry: not found on a SimpleNamespace"):
        dataplane.MODEL_REGISTRY.read(SimpleNamespace())
    with pytest.raises(IntegrationError, match=r"RESTServer\._server: expected a Server, found str"):
        lifecycle.UVICORN.read(SimpleNamespace(_server="a server"))


def test_py_grpc_prometheus_without_a_metric_the_interceptor_records_fails_where_it_is_bound():
    mlservers = PromServerInterceptor(enable_handling_time_histogram=True, registry=CollectorRegistry())
    del mlservers._interceptor._metrics["grpc_server_handled_histogram"]
    with pytest.raises(IntegrationError) as error:
        BoundPromInterceptor(mlservers)
    message = str(error.value)
    assert "PromServerInterceptor._metrics: no ['grpc_server_handled_histogram']" in message
    assert f"with py-grpc-prometheus {py_grpc_prometheus_version()}" in message


def py_grpc_prometheus_version() -> str:
    from importlib import metadata

    return metadata.version("py-grpc-prometheus")


# What a release that renamed a private attribute the runtime reads would look like (each is the
# library's own code with the one name changed).
def _data_plane_init(self, settings, model_registry):  # noqa: ANN001
    self._settings = settings
    self._models = model_registry


def _mlserver_create_servers(self):  # noqa: ANN001
    self._rest = None
    self._grpc_server = None


def _py_grpc_prometheus_init(self, enable_handling_time_histogram=False, legacy=False, skip_exceptions=False):  # noqa: ANN001
    self._enable_handling_time_histogram = enable_handling_time_histogram
    self._is_legacy = legacy
    self._grpc_server_handled_total_counter = None
    self._metrics = {}
    self._skip_exceptions = skip_exceptions


def _histogram_metric_init(self):  # noqa: ANN001
    self._bucket_values = []
    self._sum = None


@pytest.mark.parametrize(
    "owner, name, replacement, target, library",
    [
        (DataPlane, "__init__", _data_plane_init, "mlserver.handlers.dataplane:DataPlane._model_registry", ""),
        (MLServer, "_create_servers", _mlserver_create_servers, "mlserver.server:MLServer._rest_server", ""),
        (
            PromServerInterceptor,
            "_compute_status_code",
            None,
            "mlserver.grpc.interceptors:PromServerInterceptor._compute_status_code",
            "",
        ),
        (mlserver_tracing, "_TRACER_PROVIDER", None, "mlserver.tracing:_TRACER_PROVIDER", ""),
        (
            PyGrpcPromInterceptor,
            "__init__",
            _py_grpc_prometheus_init,
            "py_grpc_prometheus.prometheus_server_interceptor:PromServerInterceptor._legacy",
            " with py-grpc-prometheus",
        ),
        (Histogram, "_metric_init", _histogram_metric_init, "prometheus_client.metrics:Histogram._buckets", " with "),
    ],
)
def test_a_renamed_private_attribute_fails_the_start_naming_the_point_and_the_version(
    monkeypatch, owner, name, replacement, target, library
):
    if replacement is None:
        monkeypatch.delattr(owner, name)
    else:
        monkeypatch.setattr(owner, name, replacement)
    monkeypatch.setattr(integration, "_installed", False)
    before = (DataPlane.infer, MLServer.stop)
    with pytest.raises(IntegrationError) as error:
        integration.install(runtime.model.PipelineRuntime)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"pipeline-runtime cannot use {target}: not found"), message
    assert f"MLServer {mlserver.__version__} is installed{library}" in message
    assert (DataPlane.infer, MLServer.stop) == before  # nothing applied twice, nothing half-applied


# Underscore names that are public API: NamedTuple's methods, os._exit.
_PUBLIC = {"_replace", "_asdict", "_fields", "_make", "_exit"}


def test_no_private_attribute_is_read_unless_runtime_defines_it_or_through_a_point():
    """A guard rail over runtime/: an underscore attribute read (`x._name`, `getattr(x, "_name")`)
    must name something the runtime's own code defines; another library's goes through a point.
    (It cannot tell whose object a name is read on: a private name the runtime also defines passes.)"""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted((REPO / "runtime").rglob("*.py"))}
    defined = set(_PUBLIC)
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
    read = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                name = node.attr
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) in ("getattr", "hasattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
            ):
                name = str(node.args[1].value)
            else:
                continue
            if name.startswith("_") and not name.startswith("__") and name not in defined:
                read.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert not read, "read through a PatchPoint (runtime.integration.patching) instead"


def test_install_happens_once_however_often_mlserver_reimports_the_runtime():
    before = (DataPlane.infer, DataPlane.ready, MLServer.stop)
    importlib.reload(runtime.model)  # what MLServer does on every model load
    integration.install(runtime.model.PipelineRuntime)
    assert (DataPlane.infer, DataPlane.ready, MLServer.stop) == before
    assert DataPlane.infer.__module__ == "runtime.integration.dataplane"


def test_install_is_a_no_op_in_a_parallel_worker(monkeypatch):
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    monkeypatch.setattr(integration, "_installed", False)
    before = (DataPlane.infer, MLServer.stop)
    integration.install(runtime.model.PipelineRuntime)
    assert (DataPlane.infer, MLServer.stop) == before


async def _never_served(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the server is only built, never started")


def test_installing_after_uvicorn_took_the_signals_fails_the_start(monkeypatch):
    previous = signal.getsignal(signal.SIGTERM)
    try:
        server = uvicorn.Server(uvicorn.Config(app=_never_served))
        signal.signal(signal.SIGTERM, server.handle_exit)  # what a started MLServer REST server does
        assert lifecycle.servers_started_before(uvicorn.Server)
        monkeypatch.setattr(integration, "_installed", False)
        with pytest.raises(IntegrationError, match="runtime.integration.startup.StartupRepository"):
            integration.install(runtime.model.PipelineRuntime)
    finally:
        signal.signal(signal.SIGTERM, previous)
        integration._installed = True
    assert not lifecycle.servers_started_before(uvicorn.Server)


def test_importing_the_runtime_leaves_the_test_process_signals_alone():
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_documented_table_lists_every_patch_point_as_the_registry_does():
    from runtime.integration.__main__ import table

    doc = (Path(__file__).resolve().parents[2] / "docs" / "integration.md").read_text(encoding="utf-8")
    start, end = "<!-- patch-table:start -->\n", "\n<!-- patch-table:end -->"
    documented = doc[doc.index(start) + len(start) : doc.index(end)]
    assert documented == table(), "docs/integration.md's table is stale: paste `python -m runtime.integration`"
