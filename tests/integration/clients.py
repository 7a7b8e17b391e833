"""One call shape for the six V2 clients the suite drives, so every good-path test can run over
all of them: plain REST JSON (requests), tritonclient.http (JSON tensors, and binary ones as it sends
by default), tritonclient.grpc, and kserve's
InferenceRESTClient (v2) / InferenceGRPCClient (through kserve_worker.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from harness.models import default_pipeline
from harness.server import Server
from harness.v2 import REQUEST_TIMEOUT_S, json_tensor, rest_outputs
from runtime.core.datatypes import NUMERIC_DATATYPES
from tests.integration import support

# triton-http: tritonclient.http with binary_data=False (JSON tensors; outputs in binary when none
# is named, as tritonclient asks then); triton-http-binary: its defaults, every tensor in binary.
CLIENTS = ["rest-json", "triton-http", "triton-http-binary", "triton-grpc", "kserve-rest", "kserve-grpc"]
GRPC_CLIENTS = {"triton-grpc", "kserve-grpc"}
UNREPORTED = "<client does not report model_version>"


@dataclass
class Result:
    model_name: str
    model_version: str
    datatypes: dict[str, str]
    outputs: dict[str, np.ndarray]


def _tensors(x: np.ndarray, columns: bool, names: list[str], datatype: str):
    """[(name, array)] for the 2-D form ('X') or the column form (one 1-D array per feature)."""
    arr = np.asarray(x).astype(NUMERIC_DATATYPES[datatype])
    if columns:
        return [(n, np.ascontiguousarray(arr[:, j])) for j, n in enumerate(names)]
    return [("X", arr)]


class Clients:
    """Resolves the fixtures a client needs lazily, so a test asks only for `request`."""

    def __init__(self, request: pytest.FixtureRequest):
        self._request = request
        self.server: Server = request.getfixturevalue("server")

    def infer(
        self,
        client: str,
        model: str,
        x: np.ndarray,
        version: str | None = None,
        outputs: list[str] | None = None,
        columns: bool = False,
        datatype: str = "FP64",
        column_order: list[str] | None = None,
    ) -> Result:
        names = default_pipeline(model).feature_names
        tensors = _tensors(x, columns, names, datatype)
        if columns and column_order is not None:
            by_name = dict(tensors)
            tensors = [(n, by_name[n]) for n in column_order]
        return getattr(self, "_" + client.replace("-", "_"))(model, version, tensors, datatype, outputs or [])

    def fixture(self, name: str):
        """Another fixture's value (the clients' own, created on first use)."""
        return self._request.getfixturevalue(name)

    # -- plain JSON ------------------------------------------------------------------------
    def _rest_json(self, model, version, tensors, datatype, outputs) -> Result:
        body = {"inputs": [json_tensor(n, a, datatype) for n, a in tensors]}
        if outputs:
            body["outputs"] = [{"name": o} for o in outputs]
        resp = support.rest_post(self.server, model, body, version=version)
        assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:500]}"
        js = resp.json()
        return Result(
            js["model_name"],
            js.get("model_version"),
            {o["name"]: o["datatype"] for o in js["outputs"]},
            rest_outputs(js),
        )

    # -- tritonclient ----------------------------------------------------------------------
    def _triton_http(self, model, version, tensors, datatype, outputs, binary: bool = False) -> Result:
        import tritonclient.http as httpclient

        client = self.fixture("triton_http")
        inputs = []
        for n, a in tensors:
            inp = httpclient.InferInput(n, list(a.shape), datatype)
            inp.set_data_from_numpy(a, binary_data=binary)
            inputs.append(inp)
        outs = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs] or None
        res = client.infer(model, inputs, model_version=version or "", outputs=outs)
        js = res.get_response()
        support.AUDIT.check(f"triton-http {model}", json.dumps(js))
        return Result(
            js["model_name"],
            js.get("model_version"),
            {o["name"]: o["datatype"] for o in js["outputs"]},
            {o["name"]: res.as_numpy(o["name"]) for o in js["outputs"]},
        )

    def _triton_http_binary(self, model, version, tensors, datatype, outputs) -> Result:
        return self._triton_http(model, version, tensors, datatype, outputs, binary=True)

    def _triton_grpc(self, model, version, tensors, datatype, outputs) -> Result:
        import tritonclient.grpc as grpcclient

        client = self.fixture("triton_grpc")
        inputs = []
        for n, a in tensors:
            inp = grpcclient.InferInput(n, list(a.shape), datatype)
            inp.set_data_from_numpy(a)
            inputs.append(inp)
        outs = [grpcclient.InferRequestedOutput(o) for o in outputs] or None
        res = client.infer(model, inputs, model_version=version or "", outputs=outs, client_timeout=REQUEST_TIMEOUT_S)
        pb = res.get_response()
        support.AUDIT.check(f"triton-grpc {model}", str(pb.model_name))
        return Result(
            pb.model_name,
            pb.model_version,
            {o.name: o.datatype for o in pb.outputs},
            {o.name: res.as_numpy(o.name) for o in pb.outputs},
        )

    # -- kserve (own process) --------------------------------------------------------------
    def _kserve(self, transport, model, version, tensors, datatype, outputs) -> Result:
        worker = self.fixture("kserve_clients")
        inputs = [
            {
                "name": n,
                "shape": list(a.shape),
                "datatype": datatype,
                "data": a.tolist(),
                # gRPC: raw_input_contents; REST: JSON (MLServer has no binary REST extension)
                "binary": transport == "grpc",
            }
            for n, a in tensors
        ]
        ans = worker.infer(transport, model, inputs, version=version, outputs=outputs)
        assert ans["ok"], f"kserve-{transport}: {ans}"
        # kserve 0.16's InferResponse.from_bytes (REST) drops model_version: not reported there.
        version_seen = ans["model_version"] if transport == "grpc" else UNREPORTED
        return Result(
            ans["model_name"],
            version_seen,
            {o["name"]: o["datatype"] for o in ans["outputs"]},
            support.kserve_outputs(ans),
        )

    def _kserve_rest(self, *args) -> Result:
        return self._kserve("rest", *args)

    def _kserve_grpc(self, *args) -> Result:
        return self._kserve("grpc", *args)
