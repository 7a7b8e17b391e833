"""Shared helpers for the integration suite: the server under test, expected predictions and
client-side checks.

This module (like the whole suite) never imports `mlserver` or `runtime`: expectations are
computed from the shipped, hash-checked artifacts (`models/<name>/<version>/`, skops or joblib as
the manifest says) with numpy, and the server is reached only through V2 clients over loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import grpc
import joblib
import numpy as np
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / "models"

DIABETES = "diabetes"
BREAST_CANCER = "breast-cancer"
STABLE_DIABETES_VERSION = "1"  # the unversioned alias (top-level model-settings.json)

STARTUP_TIMEOUT_S = 90.0
SHUTDOWN_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 60.0
DEFAULT_MAX_ROWS = 10_000

# datatype -> numpy dtype, as in the Open Inference Protocol
NUMERIC_DTYPES: dict[str, np.dtype] = {
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
}

# datatype -> InferTensorContents field (FP16 has none: raw_input_contents only)
GRPC_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

PARITY_RTOL = 1e-9
PROBA_ATOL = 1e-15  # probabilities live in [0, 1]; this is far below 1e-9 of a row's sum


# --------------------------------------------------------------------------------------------
# Expected predictions, straight from the artifacts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    name: str
    version: str
    manifest: dict
    scaler: Any
    model: Any

    @property
    def feature_names(self) -> list[str]:
        return list(self.manifest["feature_names"])

    @property
    def n_features(self) -> int:
        return len(self.manifest["feature_names"])

    @property
    def is_classifier(self) -> bool:
        return self.manifest.get("kind") == "classifier"

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return self.scaler.transform(x) if self.scaler is not None else x

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(self._scaled(x)))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(self._scaled(x)), dtype=np.float64)


def _load_artifact(directory: Path, entry: dict) -> Any:
    """Load one artifact the manifest names, after checking its sha256 against the manifest.

    The format follows the manifest ("skops" or "joblib"). For skops, the types are whatever this
    committed, hash-checked file holds: the test trusts its own artifacts, the server decides
    for itself what it trusts.
    """
    import hashlib

    path = directory / entry["file"]
    data = path.read_bytes()
    if entry.get("sha256"):
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{path}: sha256 mismatch"
    fmt = entry.get("format") or ("skops" if path.suffix == ".skops" else "joblib")
    if fmt == "skops":
        import skops.io as sio

        return sio.load(path, trusted=sio.get_untrusted_types(file=path))
    return joblib.load(path)


@lru_cache(maxsize=None)
def pipeline(name: str, version: str) -> Pipeline:
    d = MODELS_DIR / name / version
    manifest = json.loads((d / "manifest.json").read_text())
    scaler = _load_artifact(d, manifest["scaler"]) if manifest.get("scaler") else None
    model = _load_artifact(d, manifest["model"])
    return Pipeline(name, version, manifest, scaler, model)


def default_pipeline(name: str) -> Pipeline:
    return pipeline(name, STABLE_DIABETES_VERSION if name == DIABETES else "1")


@lru_cache(maxsize=None)
def dataset(name: str) -> np.ndarray:
    """The bundled scikit-learn dataset the model was trained on (float64 [N, F])."""
    from sklearn.datasets import load_breast_cancer, load_diabetes

    loader = {DIABETES: load_diabetes, BREAST_CANCER: load_breast_cancer}[name]
    x = np.asarray(loader().data, dtype=np.float64)
    x.setflags(write=False)
    return x


def sample_rows(name: str, n: int, offset: int = 0) -> np.ndarray:
    x = dataset(name)
    idx = (np.arange(n) + offset) % len(x)
    return np.array(x[idx])


def assert_parity(actual, expected, what: str = "predict") -> None:
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.dtype.kind in "iub":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        atol = PROBA_ATOL if what == "predict_proba" else 0.0
        np.testing.assert_allclose(
            actual.astype(np.float64), expected, rtol=PARITY_RTOL, atol=atol, err_msg=what
        )


# --------------------------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def mlserver_executable() -> str:
    candidate = Path(sys.executable).with_name("mlserver")
    if candidate.exists():
        return str(candidate)
    import shutil

    found = shutil.which("mlserver")
    if not found:
        raise RuntimeError("the `mlserver` executable is not installed next to this Python")
    return found


def served_models() -> list[tuple[str, str | None]]:
    """(name, version) of every model directory shipped, plus the unversioned alias(es)."""
    out: list[tuple[str, str | None]] = []
    for ms in sorted(MODELS_DIR.glob("*/*/model-settings.json")):
        cfg = json.loads(ms.read_text())
        out.append((cfg["name"], str(cfg.get("parameters", {}).get("version") or ms.parent.name)))
    top = REPO_ROOT / "model-settings.json"
    if top.exists():
        out.append((json.loads(top.read_text())["name"], None))
    return out


@dataclass
class Server:
    """`mlserver start .` in `root` (the repository by default) on free loopback ports."""

    proc: subprocess.Popen
    log_path: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    root: Path = REPO_ROOT
    # (name, version) whose readiness wait_ready checks; version None = an unversioned model.
    models: tuple[tuple[str, str | None], ...] = ()
    _log_file: Any = field(repr=False, default=None)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_hostport(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:  # pragma: no cover - diagnostic only
            return f"<cannot read {self.log_path}: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    @classmethod
    def start(cls, log_path: Path, attempts: int = 2) -> "Server":
        """The repository's server, ready; retry once if another process grabbed a port meanwhile."""
        for attempt in range(1, attempts + 1):
            server = cls.launch(log_path, models=tuple(served_models()))
            try:
                server.wait_ready()
                return server
            except RuntimeError as exc:
                server.stop()
                lost_port_race = "address already in use" in str(exc).lower()
                if not lost_port_race or attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def launch(
        cls,
        log_path: Path,
        root: Path = REPO_ROOT,
        models: Iterable[tuple[str, str | None]] = (),
        env: dict[str, str] | None = None,
        base_env: dict[str, str] | None = None,
    ) -> "Server":
        """Start without waiting (several servers can then become ready side by side); the
        environment is `base_env` (default: this process's) updated with `env` and the ports."""
        http_port, grpc_port, metrics_port = free_ports(3)
        full_env = dict(os.environ if base_env is None else base_env)
        full_env.update(env or {})
        full_env.update(
            MLSERVER_HOST="127.0.0.1",
            MLSERVER_HTTP_PORT=str(http_port),
            MLSERVER_GRPC_PORT=str(grpc_port),
            MLSERVER_METRICS_PORT=str(metrics_port),
            PYTHONUNBUFFERED="1",
        )
        log_file = open(log_path, "wb")
        proc = subprocess.Popen(
            [mlserver_executable(), "start", "."],
            cwd=root,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,  # every line the server writes lands in one log
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its worker processes share a group we can signal
        )
        return cls(proc, log_path, http_port, grpc_port, metrics_port, root, tuple(models), log_file)

    def _ready_urls(self) -> list[str]:
        urls = [f"{self.http_url}/v2/health/ready"]
        for name, version in self.models:
            if version is None:
                urls.append(f"{self.http_url}/v2/models/{name}/ready")
            else:
                urls.append(f"{self.http_url}/v2/models/{name}/versions/{version}/ready")
        return urls

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        urls = self._ready_urls()
        last = "no attempt yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlserver exited with code {self.proc.returncode} before becoming ready;"
                    f" log tail:\n{self.log_tail()}"
                )
            try:
                pending = [u for u in urls if requests.get(u, timeout=2).status_code != 200]
                if not pending and self._grpc_ready():
                    return
                last = f"not ready yet: {pending or 'gRPC ServerReady'}"
            except (requests.RequestException, grpc.RpcError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise RuntimeError(
            f"mlserver not ready after {timeout:.0f}s ({last}); log tail:\n{self.log_tail()}"
        )

    def _grpc_ready(self) -> bool:
        with grpc.insecure_channel(self.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            return stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=2).ready

    def wait_exit(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            # SIGINT: the runtime drains without the SIGTERM delay meant for load balancers.
            self.proc.send_signal(signal.SIGINT)
            self.wait_exit(SHUTDOWN_TIMEOUT_S)
        self.kill()

    def kill(self) -> None:
        """SIGKILL to the server's own process group: the server and any worker left behind."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


# --------------------------------------------------------------------------------------------
# Response checks
# --------------------------------------------------------------------------------------------

TRACEBACK_MARKERS = ("Traceback (most recent call last)", "Traceback")


class BodyAudit:
    """Records every response body/status message seen; none may carry a traceback."""

    def __init__(self) -> None:
        self.count = 0
        self.offenders: list[str] = []

    def check(self, where: str, text: str | bytes | None) -> None:
        if text is None:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        self.count += 1
        if any(m in text for m in TRACEBACK_MARKERS) or 'File "/' in text:
            self.offenders.append(f"{where}: {text[:500]}")
            raise AssertionError(f"response of {where} contains a traceback: {text[:2000]}")


AUDIT = BodyAudit()


def assert_mentions(message: str, fragments: Iterable[Any], where: str = "") -> None:
    """Each fragment must occur in the message; a tuple fragment means 'any of these';
    a callable fragment is a predicate on the message."""
    low = message.lower()
    for frag in fragments:
        if callable(frag):
            if not frag(message):
                raise AssertionError(f"{where} error message fails {frag.__doc__}: {message!r}")
            continue
        options = frag if isinstance(frag, tuple) else (frag,)
        if not any(str(o).lower() in low for o in options):
            raise AssertionError(
                f"{where} error message lacks {' or '.join(repr(str(o)) for o in options)}:"
                f" {message!r}"
            )


def lists_offered_outputs(*offered: str):
    """Predicate: the message, with its quoted unknown name removed, lists the offered outputs."""

    def check(message: str) -> bool:
        rest = message
        start = rest.find("'")
        end = rest.find("'", start + 1) if start >= 0 else -1
        if end > start >= 0:
            rest = rest[:start] + rest[end + 1:]
        return all(o in rest for o in offered)

    check.__doc__ = f"to list the offered outputs {offered}"
    return check


# ---- plain REST (requests) -----------------------------------------------------------------

_SESSION = requests.Session()


def rest_infer_url(server: Server, model: str, version: str | None = None) -> str:
    if version is None:
        return f"{server.http_url}/v2/models/{model}/infer"
    return f"{server.http_url}/v2/models/{model}/versions/{version}/infer"


def rest_post(server: Server, model: str, body: Any, version: str | None = None,
              raw: bytes | str | None = None) -> requests.Response:
    url = rest_infer_url(server, model, version)
    if raw is not None:
        resp = _SESSION.post(url, data=raw, headers={"Content-Type": "application/json"},
                             timeout=REQUEST_TIMEOUT_S)
    else:
        resp = _SESSION.post(url, json=body, timeout=REQUEST_TIMEOUT_S)
    AUDIT.check(f"POST {url}", resp.content)
    return resp


def rest_get(server: Server, path: str) -> requests.Response:
    resp = _SESSION.get(f"{server.http_url}{path}", timeout=REQUEST_TIMEOUT_S)
    AUDIT.check(f"GET {path}", resp.content)
    return resp


def rest_outputs(resp_json: dict) -> dict[str, np.ndarray]:
    """Output name -> numpy array shaped as the response declares."""
    out = {}
    for o in resp_json["outputs"]:
        out[o["name"]] = np.asarray(o["data"]).reshape(o["shape"])
    return out


def json_tensor(name: str, x: np.ndarray, datatype: str = "FP64") -> dict:
    x = np.asarray(x)
    return {"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.tolist()}


# ---- raw gRPC (tritonclient's generated stubs) ---------------------------------------------

_CHANNELS: dict[str, grpc.Channel] = {}


def grpc_channel(server: Server) -> grpc.Channel:
    ch = _CHANNELS.get(server.grpc_url)
    if ch is None:
        ch = grpc.insecure_channel(
            server.grpc_url,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        _CHANNELS[server.grpc_url] = ch
    return ch


def grpc_stub(server: Server) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc_channel(server))


def close_grpc_channels() -> None:
    for ch in _CHANNELS.values():
        ch.close()
    _CHANNELS.clear()


def pb_tensor(name: str, shape: list[int], datatype: str, values: Iterable[Any] | None = None,
              field_name: str | None = None) -> service_pb2.ModelInferRequest.InferInputTensor:
    t = service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    if values is not None:
        fname = field_name or GRPC_CONTENTS_FIELD[datatype]
        getattr(t.contents, fname).extend(list(values))
    return t


def pb_request(model: str, inputs: list, version: str = "", outputs: Iterable[str] = (),
               raw: list[bytes] | None = None) -> service_pb2.ModelInferRequest:
    req = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    req.inputs.extend(inputs)
    for o in outputs:
        req.outputs.add(name=o)
    if raw:
        req.raw_input_contents.extend(raw)
    return req


class GrpcOutcome:
    def __init__(self, response=None, code: grpc.StatusCode | None = None, details: str = ""):
        self.response = response
        self.code = code
        self.details = details

    @property
    def ok(self) -> bool:
        return self.code is None


def grpc_call(server: Server, request: service_pb2.ModelInferRequest) -> GrpcOutcome:
    try:
        resp = grpc_stub(server).ModelInfer(request, timeout=REQUEST_TIMEOUT_S)
    except grpc.RpcError as err:
        details = err.details() or ""
        AUDIT.check(f"gRPC ModelInfer {request.model_name}", details)
        return GrpcOutcome(code=err.code(), details=details)
    AUDIT.check(f"gRPC ModelInfer {request.model_name}", str(resp))
    return GrpcOutcome(response=resp)


def pb_outputs(resp: service_pb2.ModelInferResponse) -> dict[str, np.ndarray]:
    """Decode a ModelInferResponse (contents or raw_output_contents) into numpy arrays."""
    out = {}
    for i, o in enumerate(resp.outputs):
        dtype = NUMERIC_DTYPES.get(o.datatype)
        if resp.raw_output_contents:
            arr = np.frombuffer(resp.raw_output_contents[i], dtype=dtype)
        else:
            fname = GRPC_CONTENTS_FIELD[o.datatype]
            arr = np.asarray(list(getattr(o.contents, fname)), dtype=dtype)
        out[o.name] = arr.reshape(list(o.shape))
    return out


def pb_2d_request(model: str, x: np.ndarray, version: str = "", outputs: Iterable[str] = (),
                  name: str = "X") -> service_pb2.ModelInferRequest:
    x = np.asarray(x, dtype=np.float64)
    return pb_request(model, [pb_tensor(name, list(x.shape), "FP64", x.ravel().tolist())],
                      version=version, outputs=outputs)


# ---- "a good request still works" -----------------------------------------------------------

GOOD_ROWS = 3


def good_rest_request_works(server: Server) -> None:
    p = default_pipeline(DIABETES)
    x = sample_rows(DIABETES, GOOD_ROWS, offset=7)
    resp = rest_post(server, DIABETES, {"inputs": [json_tensor("X", x)]})
    assert resp.status_code == 200, f"good request after a bad one: {resp.status_code} {resp.text}"
    assert_parity(rest_outputs(resp.json())["predict"], p.predict(x))


def good_grpc_request_works(server: Server) -> None:
    p = default_pipeline(DIABETES)
    x = sample_rows(DIABETES, GOOD_ROWS, offset=7)
    outcome = grpc_call(server, pb_2d_request(DIABETES, x))
    assert outcome.ok, f"good request after a bad one: {outcome.code} {outcome.details}"
    assert_parity(pb_outputs(outcome.response)["predict"], p.predict(x))


# ---- kserve clients, in their own process (see kserve_worker.py) -----------------------------


class KServeWorker:
    """Talks to kserve_worker.py over pipes; every answer bounded by a timeout."""

    def __init__(self, server: Server, log_path: Path):
        import selectors

        self._stderr = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("kserve_worker.py")),
             server.http_url, server.grpc_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=REPO_ROOT,
        )
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.log_path = log_path
        hello = self._read(60.0)
        assert hello.get("ready"), f"kserve worker did not start: {hello}"

    def _read(self, timeout: float) -> dict:
        if not self._sel.select(timeout):
            raise AssertionError(f"kserve worker gave no answer in {timeout:.0f}s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(
                "kserve worker exited; stderr tail:\n"
                + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
            )
        return json.loads(line)

    def call(self, msg: dict, timeout: float = REQUEST_TIMEOUT_S + 10) -> dict:
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()
        answer = self._read(timeout)
        if not answer.get("ok"):
            AUDIT.check(f"kserve {msg.get('transport')} {msg.get('op')}", answer.get("message"))
        return answer

    def infer(self, transport: str, model: str, inputs: list[dict], version: str | None = None,
              outputs: Iterable[str] = ()) -> dict:
        return self.call({"op": "infer", "transport": transport, "model": model,
                          "version": version, "inputs": inputs, "outputs": list(outputs)})

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        finally:
            self._sel.close()
            self._stderr.close()


def kserve_outputs(answer: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}


# ---- gRPC metadata with tensor parameters ---------------------------------------------------
# MLServer's dataplane.proto gives TensorMetadata a `parameters` map (field 4); tritonclient's
# and kserve's copies of the V2 proto lack it, so they silently drop the feature names. This
# decodes the same wire bytes with a private descriptor pool (no global symbols registered).


@lru_cache(maxsize=None)
def _metadata_message_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="itest_metadata_probe.proto", package="itest_probe", syntax="proto3"
    )

    def add_field(msg, name, number, ftype, label=F.LABEL_OPTIONAL, type_name=None):
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name

    param = fdp.message_type.add(name="InferParameter")
    add_field(param, "bool_param", 1, F.TYPE_BOOL)
    add_field(param, "int64_param", 2, F.TYPE_INT64)
    add_field(param, "string_param", 3, F.TYPE_STRING)
    add_field(param, "double_param", 4, F.TYPE_DOUBLE)
    add_field(param, "uint64_param", 5, F.TYPE_UINT64)

    tensor = fdp.message_type.add(name="TensorMetadata")
    add_field(tensor, "name", 1, F.TYPE_STRING)
    add_field(tensor, "datatype", 2, F.TYPE_STRING)
    add_field(tensor, "shape", 3, F.TYPE_INT64, F.LABEL_REPEATED)
    entry = tensor.nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    add_field(entry, "key", 1, F.TYPE_STRING)
    add_field(entry, "value", 2, F.TYPE_MESSAGE, type_name=".itest_probe.InferParameter")
    add_field(tensor, "parameters", 4, F.TYPE_MESSAGE, F.LABEL_REPEATED,
              ".itest_probe.TensorMetadata.ParametersEntry")

    meta = fdp.message_type.add(name="ModelMetadataResponse")
    add_field(meta, "name", 1, F.TYPE_STRING)
    add_field(meta, "versions", 2, F.TYPE_STRING, F.LABEL_REPEATED)
    add_field(meta, "platform", 3, F.TYPE_STRING)
    add_field(meta, "inputs", 4, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".itest_probe.TensorMetadata")
    add_field(meta, "outputs", 5, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".itest_probe.TensorMetadata")

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("itest_probe.ModelMetadataResponse")
    )


def grpc_metadata_with_parameters(server: Server, name: str, version: str = ""):
    call = grpc_channel(server).unary_unary(
        "/inference.GRPCInferenceService/ModelMetadata",
        request_serializer=service_pb2.ModelMetadataRequest.SerializeToString,
        response_deserializer=_metadata_message_class().FromString,
    )
    return call(service_pb2.ModelMetadataRequest(name=name, version=version),
                timeout=REQUEST_TIMEOUT_S)


def parse_feature_names(value: Any) -> list[str]:
    """feature_names as a JSON list, a JSON-encoded list string, or a comma-joined string."""
    if isinstance(value, list):
        return [str(v) for v in value]
    assert isinstance(value, str), f"feature_names has unexpected type: {value!r}"
    if value.startswith("["):
        return [str(v) for v in json.loads(value)]
    return [v.strip() for v in value.split(",")]
