"""The transport floor: what a Python server on this machine's stack costs before any model runtime.

    python -m bench.floor_server --model_dir DIR --http_port P --grpc_port G

One process, one uvloop event loop, as MLServer runs them: uvicorn (httptools) with a bare ASGI app
on the REST port and a grpc.aio server with one generic handler on the gRPC port, both answering
V2 inference for the bench's model from a cache of whole response bytes keyed by the request's
bytes (a miss runs the scikit-learn pipeline once, on a DataFrame when the request has one tensor
per column). No routing, validation, middleware, interceptor,
metrics or logs: nothing any runtime inside MLServer (or KServe) could skip, only what none can.
Its req/s and CPU per request are the ceiling of any model server built on uvicorn and grpc.aio
here; bench.report sets them beside the issue's targets. Readiness routes answer 200 / ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pandas as pd
import uvicorn
import uvloop
from tritonclient.grpc import service_pb2

SERVICE = "inference.GRPCInferenceService"


class Answers:
    """Response bytes by request bytes, per protocol; a miss predicts once."""

    def __init__(self, model_dir: Path, name: str):
        (model_file,) = sorted(model_dir.glob("*.joblib"))
        self._pipeline, self._name = joblib.load(model_file), name
        self._rest: dict[bytes, bytes] = {}
        self._grpc: dict[bytes, bytes] = {}

    def rest(self, body: bytes) -> bytes:
        answer = self._rest.get(body)
        if answer is None:
            tensors = [(t["name"], t["shape"], t["data"]) for t in json.loads(body)["inputs"]]
            predictions = self._predict(_features(tensors))
            answer = self._rest[body] = json.dumps(
                {
                    "model_name": self._name,
                    "outputs": [
                        {
                            "name": "predict",
                            "shape": [len(predictions)],
                            "datatype": "FP64",
                            "data": predictions.tolist(),
                        }
                    ],
                }
            ).encode()
        return answer

    def grpc(self, message: bytes) -> bytes:
        answer = self._grpc.get(message)
        if answer is None:
            request = service_pb2.ModelInferRequest.FromString(message)
            tensors = [(t.name, list(t.shape), _contents(t)) for t in request.inputs]
            predictions = self._predict(_features(tensors))
            response = service_pb2.ModelInferResponse(model_name=self._name, id=request.id)
            output = response.outputs.add(name="predict", datatype="FP64", shape=[len(predictions)])
            output.contents.fp64_contents.extend(predictions.tolist())
            answer = self._grpc[message] = response.SerializeToString()
        return answer

    def _predict(self, features: Any) -> np.ndarray:
        return np.asarray(self._pipeline.predict(features), dtype=np.float64).ravel()


def _features(tensors: list[tuple[str, list[int], list[Any]]]) -> Any:
    """One [N, F] tensor as a float64 matrix; one tensor per column (the PandasCodec request of the
    `columns` model) as a DataFrame of those columns."""
    if len(tensors) == 1:
        ((_, shape, data),) = tensors
        return np.asarray(data, dtype=np.float64).reshape(shape)
    return pd.DataFrame({name: data for name, _, data in tensors})


def _contents(tensor: Any) -> list[Any]:
    """A gRPC input tensor's typed contents: FP64 values, or BYTES decoded to str."""
    if tensor.datatype == "BYTES":
        return [value.decode() for value in tensor.contents.bytes_contents]
    return list(tensor.contents.fp64_contents)


def rest_app(answers: Answers) -> Callable[..., Any]:
    headers = [(b"content-type", b"application/json")]

    async def app(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        answer = answers.rest(body) if scope["method"] == "POST" else b"{}"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


def grpc_handlers(answers: Answers) -> grpc.GenericRpcHandler:
    ready: bytes = service_pb2.ServerReadyResponse(ready=True).SerializeToString()
    model_ready: bytes = service_pb2.ModelReadyResponse(ready=True).SerializeToString()

    async def infer(message: bytes, context: Any) -> bytes:
        return answers.grpc(message)

    async def server_ready(message: bytes, context: Any) -> bytes:
        return ready

    async def model_is_ready(message: bytes, context: Any) -> bytes:
        return model_ready

    methods = {
        "ModelInfer": infer,
        "ServerReady": server_ready,
        "ServerLive": server_ready,
        "ModelReady": model_is_ready,
    }
    # No (de)serializers: the handlers see and return the messages' bytes.
    return grpc.method_handlers_generic_handler(
        SERVICE, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()}
    )


async def serve(args: argparse.Namespace) -> None:
    answers = Answers(Path(args.model_dir), args.model_name)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc_handlers(answers),))
    server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    await server.start()
    config = uvicorn.Config(
        rest_app(answers),
        host="127.0.0.1",
        port=args.http_port,
        access_log=False,
        log_level="warning",
        http="httptools",
        loop="uvloop",
        lifespan="off",
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await server.stop(grace=None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--model_name", default="diabetes")
    p.add_argument("--http_port", type=int, required=True)
    p.add_argument("--grpc_port", type=int, required=True)
    uvloop.install()
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
