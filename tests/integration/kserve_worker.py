"""Drives kserve 0.16's V2 clients (InferenceRESTClient, InferenceGRPCClient) and its V1 REST client
(InferenceRESTClient with protocol "v1") on behalf of the test process.

kserve's generated gRPC module and tritonclient's register the same protobuf symbols
(`inference.ServerLiveRequest`, ...), so one Python process cannot import both. The tests use
tritonclient in-process and talk to kserve through this worker: one JSON request per stdin line,
one JSON answer per stdout line (`python -m tests.integration.kserve_worker HTTP_URL GRPC_URL`).
Never imports mlserver.

Request:  {"op": "infer", "transport": "rest"|"grpc", "model": str, "version": str|null,
           "inputs": [{"name", "shape", "datatype", "data", "binary": bool}],
           "outputs": [str, ...]}
          {"op": "health", "transport": "rest"|"grpc", "checks": [["live"], ["model", name]]}
          {"op": "v1_predict", "transport": "rest", "model": str, "instances": [...]}  -> "predictions"
          {"op": "v1_ready", "transport": "rest", "model": str}                        -> "ready"
Answer:   {"ok": true, ...} or {"ok": false, "status": int|str, "message": str}
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import grpc
import httpx
import numpy as np

# From the defining modules: for mypy, run at the project's root, `kserve` is the manifests' folder.
from kserve.inference_client import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from runtime.core.datatypes import NUMERIC_DATATYPES


def build_request(msg: dict) -> InferRequest:
    inputs = []
    for spec in msg["inputs"]:
        inp = InferInput(spec["name"], list(spec["shape"]), spec["datatype"])
        arr = np.asarray(spec["data"], dtype=NUMERIC_DATATYPES[spec["datatype"]]).reshape(spec["shape"])
        inp.set_data_from_numpy(arr, binary_data=bool(spec.get("binary", False)))
        inputs.append(inp)
    outputs = [RequestedOutput(name) for name in msg.get("outputs") or []] or None
    return InferRequest(
        model_name=msg["model"],
        infer_inputs=inputs,
        request_outputs=outputs,
        model_version=msg.get("version"),
    )


def encode_response(resp) -> dict:
    return {
        "ok": True,
        "model_name": resp.model_name,
        "model_version": resp.model_version,
        "outputs": [
            {
                "name": o.name,
                "datatype": o.datatype,
                "shape": list(o.shape),
                "data": np.asarray(o.as_numpy()).ravel().tolist(),
            }
            for o in resp.outputs
        ],
    }


class Worker:
    def __init__(self, http_url: str, grpc_url: str):
        self.http_url = http_url
        self.rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60, retries=0))
        self.rest_v1 = InferenceRESTClient(RESTConfig(protocol="v1", timeout=60, retries=0))
        self.grpc = InferenceGRPCClient(grpc_url, timeout=60, retries=0)

    async def handle(self, msg: dict) -> dict:
        op, transport = msg["op"], msg["transport"]
        try:
            if op == "infer":
                req = build_request(msg)
                if transport == "rest":
                    # InferenceRESTClient has no version argument: it builds
                    # <base>/v2/models/<model_name>/infer, so a versioned name routes the version.
                    model_name = msg["model"]
                    if msg.get("version"):
                        model_name = f"{msg['model']}/versions/{msg['version']}"
                    resp = await self.rest.infer(self.http_url, req, model_name=model_name)
                else:
                    resp = await self.grpc.infer(req)
                return encode_response(resp)
            if op == "v1_predict":  # a dict in, a dict out: the V1 protocol's JSON as it is
                answer = await self.rest_v1.infer(self.http_url, {"instances": msg["instances"]}, msg["model"])
                return {"ok": True, **answer}
            if op == "v1_ready":
                return {"ok": True, "ready": await self.rest_v1.is_model_ready(self.http_url, msg["model"])}
            if op == "health":
                checks = [await self.check(transport, c) for c in msg["checks"]]
                return {"ok": True, "checks": checks}
            return {"ok": False, "status": "bad-op", "message": f"unknown op {op!r}"}
        except httpx.HTTPStatusError as err:
            return {"ok": False, "status": err.response.status_code, "message": err.response.text}
        except grpc.RpcError as err:
            return {"ok": False, "status": err.code().name, "message": err.details() or ""}
        except Exception as err:  # a client-side refusal: report it, keep serving
            return {"ok": False, "status": "client-error", "message": f"{type(err).__name__}: {err}"}

    async def check(self, transport: str, check: list) -> dict:
        """One health call: ["live"], ["ready"] or ["model", name]; errors reported, not raised."""
        kind, args = check[0], check[1:]
        try:
            if transport == "rest":
                call = {
                    "live": self.rest.is_server_live,
                    "ready": self.rest.is_server_ready,
                    "model": self.rest.is_model_ready,
                }[kind]
                value = await call(self.http_url, *args)
            else:
                call = {
                    "live": self.grpc.is_server_live,
                    "ready": self.grpc.is_server_ready,
                    "model": self.grpc.is_model_ready,
                }[kind]
                value = await call(*args)
            return {"value": value}
        except grpc.RpcError as err:
            return {"error": err.code().name, "message": err.details() or ""}
        except Exception as err:
            return {"error": type(err).__name__, "message": str(err)}

    async def close(self) -> None:
        await self.rest.close()
        await self.rest_v1.close()
        await self.grpc.close()


async def main(http_url: str, grpc_url: str) -> None:
    worker = Worker(http_url, grpc_url)
    loop = asyncio.get_running_loop()
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            answer = await worker.handle(json.loads(line))
            print(json.dumps(answer), flush=True)
    finally:
        await worker.close()


if __name__ == "__main__":
    # kserve's clients log every failed call with a traceback; expected failures are noise here.
    logging.disable(logging.CRITICAL)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
