"""The integration package's install (runtime.integration): every patch point is checked before
any is applied, a target that moved or changed shape fails the start with one line naming it and
the MLServer version, and the install happens once per process. What each patch does is pinned
by behaviour through real servers in tests/pins."""

from __future__ import annotations

import importlib
import multiprocessing
import signal
from pathlib import Path

import mlserver
import pytest
import uvicorn
from mlserver.handlers.dataplane import DataPlane
from mlserver.server import MLServer

import runtime.model
from runtime import integration
from runtime.integration import lifecycle, patching
from runtime.integration.patching import IntegrationError, PatchPoint, install_all


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


def test_installing_after_uvicorn_took_the_signals_fails_the_start(monkeypatch):
    previous = signal.getsignal(signal.SIGTERM)
    try:
        server = uvicorn.Server(uvicorn.Config(app=None))
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
