"""KServe's own Python model server for the same pipeline, written the way KServe's sklearnserver is.

    python -m bench.kserve_server --model_dir DIR --model_name diabetes --http_port P --grpc_port G \
        --enable_latency_logging false

`kserve.ModelServer` parses its own flags (--http_port, --grpc_port, --workers, --enable_latency_logging,
...) from argv. Per-request logging is off: no latency log line (--enable_latency_logging false), no
uvicorn access log, no per-request timing trace, no gRPC per-call INFO line. Both servers listen on
127.0.0.1 only.
Runs in its own process: kserve and mlserver register the same protobuf symbols.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
from typing import Any

import joblib
import uvicorn
from kserve.errors import InferenceError, ModelMissingError
from kserve.model import Model
from kserve.model_server import ModelServer
from kserve.model_server import parser as kserve_parser
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.utils.utils import get_predict_input, get_predict_response

MODEL_EXTENSIONS = (".joblib", ".pkl", ".pickle")


class SKLearnModel(Model):
    """Same shape as kserve/python/sklearnserver/sklearnserver/model.py (v0.16)."""

    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.name = name
        self.model_dir = model_dir
        self.ready = False

    def load(self) -> bool:
        model_path = pathlib.Path(self.model_dir)
        model_files = [
            model_path / f
            for f in os.listdir(model_path)
            if (model_path / f).is_file() and f.endswith(MODEL_EXTENSIONS)
        ]
        if not model_files:
            raise ModelMissingError(model_path)
        if len(model_files) > 1:
            raise RuntimeError(f"More than one model file is detected: {model_files}")
        self._model = joblib.load(model_files[0])
        self.ready = True
        return self.ready

    def predict(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        try:
            instances = get_predict_input(payload)
            result = self._model.predict(instances)
            return get_predict_response(payload, result, self.name)
        except Exception as e:
            raise InferenceError(str(e)) from e


def _loopback_only() -> None:
    """kserve binds 0.0.0.0 (REST) and [::] (gRPC); the benchmark listens on loopback only."""

    class LoopbackConfig(uvicorn.Config):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["host"] = "127.0.0.1"
            super().__init__(*args, **kwargs)

    # kserve builds its uvicorn.Config by this name; mypy refuses any assignment to a class name
    uvicorn.Config = LoopbackConfig  # type: ignore[misc]

    from grpc import aio

    real_server = aio.server

    def server(*args: Any, **kwargs: Any) -> Any:
        srv = real_server(*args, **kwargs)
        add_port = srv.add_insecure_port
        srv.add_insecure_port = lambda addr: add_port(addr.replace("[::]", "127.0.0.1"))
        return srv

    aio.server = server


def _quiet_per_request_logs() -> None:
    # uvicorn's access log, kserve's per-request timing trace, and the INFO line that kserve's gRPC
    # LoggingInterceptor writes for every call ("grpc method: ...") on the "kserve" logger.
    for name in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(name).disabled = True
    logging.getLogger("kserve").setLevel(logging.WARNING)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve_parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    model = SKLearnModel(args.model_name, args.model_dir)
    model.load()
    _loopback_only()
    server = ModelServer()
    _quiet_per_request_logs()
    server.start([model])


if __name__ == "__main__":
    main()
