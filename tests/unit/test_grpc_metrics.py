"""runtime.integration.grpc_metrics records what MLServer's own gRPC metrics interceptor records:
the same call through each (on two method names) leaves the same samples. The whole server is
compared in tests/integration/test_fast_path.py (its request counts, fast path on and off)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest
from mlserver.grpc.interceptors import PromServerInterceptor
from prometheus_client import REGISTRY

import runtime.model  # noqa: F401  (installs the integration, as loading the runtime does)
from runtime.integration.grpc_metrics import BoundPromInterceptor

MLSERVERS = PromServerInterceptor(enable_handling_time_histogram=True)  # once a process: it registers metrics
OURS = BoundPromInterceptor(MLSERVERS)


class _Context:
    def code(self):  # what a servicer context reports once the call ended normally
        return None


class _Failed(grpc.RpcError, grpc.Call):
    def code(self):
        return grpc.StatusCode.INVALID_ARGUMENT


class _Aborted(Exception):  # grpc.aio's AbortError is no RpcError
    pass


def _call(interceptor, method: str, outcome) -> None:
    async def behavior(request, context):
        if isinstance(outcome, BaseException):
            raise outcome
        return "answer"

    handler = grpc.unary_unary_rpc_method_handler(behavior)

    async def continuation(details):
        return handler

    async def run():
        details = SimpleNamespace(method=f"/inference.GRPCInferenceService/{method}", invocation_metadata=())
        wrapped = await interceptor.intercept_service(continuation, details)
        try:
            await wrapped.unary_unary("request", _Context())
        except BaseException:
            pass

    asyncio.run(run())


def _samples(method: str) -> dict:
    found = {}
    for family in REGISTRY.collect():
        if family.name.startswith("grpc_server"):
            for s in family.samples:
                if s.labels.get("grpc_method") == method and not s.name.endswith(("_created", "_sum")) and s.value:
                    found[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "grpc_method")))] = s.value
    return found


@pytest.mark.parametrize("outcome", ["ok", _Failed(), _Aborted()], ids=["ok", "rpc-error", "abort"])
def test_the_same_samples_as_mlservers_interceptor(outcome):
    mine, theirs = f"Ours{type(outcome).__name__}", f"Theirs{type(outcome).__name__}"
    for _ in range(3):  # the second call on a method reuses its wrapped handler
        _call(OURS, mine, outcome)
        _call(MLSERVERS, theirs, outcome)
    assert _samples(mine) == _samples(theirs) and _samples(mine)


def test_it_replaces_only_mlservers_interceptor():
    assert BoundPromInterceptor.replaces(MLSERVERS)
    assert not BoundPromInterceptor.replaces(OURS) and not BoundPromInterceptor.replaces(object())
