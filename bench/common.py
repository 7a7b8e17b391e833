"""Shared pieces of the benchmark: artifacts, request bodies, model dirs, server subprocesses.

Never imports mlserver, runtime or kserve (each server runs in its own process); the gRPC request
protobuf comes from tritonclient, imported lazily.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
MODEL_NAME = "diabetes"
MODEL_VERSION_DIR = REPO / "models" / MODEL_NAME / "1"
HOST = "127.0.0.1"


# ---------------------------------------------------------------- artifacts and request bodies


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def load_pipeline(model_dir: Path = MODEL_VERSION_DIR):
    """The scaler (if any) + model of a version dir as one sklearn Pipeline (the stock runtime's model).

    Read from the manifest's artifact refs (skops or joblib), else from scaler/model.joblib.
    """
    from sklearn.pipeline import Pipeline

    scaler, model = _load_artifacts(model_dir)
    steps = ([("scaler", scaler)] if scaler is not None else []) + [("model", model)]
    return Pipeline(steps)


def _load_artifacts(model_dir: Path):
    # Not runtime.artifacts: runtime.errors imports mlserver, whose protobuf registrations clash with
    # the tritonclient gRPC stubs this process uses. The project's own artifacts are trusted here.
    import joblib

    manifest_path = model_dir / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())

        def load(ref):
            if ref is None:
                return None
            path = model_dir / ref["file"]
            if ref.get("format", "joblib") == "skops":
                import skops.io

                return skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
            return joblib.load(path)

        return load(manifest.get("scaler")), load(manifest["model"])
    scaler_path = model_dir / "scaler.joblib"
    scaler = joblib.load(scaler_path) if scaler_path.exists() else None
    return scaler, joblib.load(model_dir / "model.joblib")


def sample_rows(n: int) -> np.ndarray:
    """n real rows of the diabetes data set (bundled with sklearn), float64 [n, 10]."""
    from sklearn.datasets import load_diabetes

    X = load_diabetes().data
    reps = -(-n // len(X))
    return np.ascontiguousarray(np.tile(X, (reps, 1))[:n], dtype=np.float64)


def rest_body(X: np.ndarray) -> bytes:
    """The V2 JSON request: one FP64 [N, F] tensor (accepted by all three servers)."""
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(X.shape),
                "datatype": "FP64",
                "data": [float(v) for v in X.ravel()],
            }
        ]
    }
    return json.dumps(body, separators=(",", ":")).encode()


def grpc_request(X: np.ndarray):
    """The same request as a ModelInferRequest (typed fp64_contents)."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=MODEL_NAME)
    t = req.inputs.add()
    t.name = "input-0"
    t.datatype = "FP64"
    t.shape.extend(X.shape)
    t.contents.fp64_contents.extend(float(v) for v in X.ravel())
    return req


def grpc_frame(message: bytes) -> bytes:
    """gRPC length-prefixed message (uncompressed), as sent in the HTTP/2 DATA frames."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


# ---------------------------------------------------------------- model dirs for each server


def base_server_settings() -> dict[str, Any]:
    """The project's settings.json (if present) minus anything that pins addresses/ports."""
    path = REPO / "settings.json"
    settings: dict[str, Any] = {"debug": False}
    if path.exists():
        settings.update(json.loads(path.read_text()))
    for key in ("host", "http_port", "grpc_port", "metrics_port", "parallel_workers"):
        settings.pop(key, None)
    return settings


@dataclass(frozen=True)
class MLServerConfig:
    """parallel_workers: None = MLServer's default (1). batching: adaptive batching on/off."""

    parallel_workers: int | None = None
    batching: bool = False
    max_batch_size: int = 16
    max_batch_time: float = 0.002

    @property
    def label(self) -> str:
        pw = "pw=default" if self.parallel_workers is None else f"pw={self.parallel_workers}"
        return pw + (" +batch" if self.batching else "")

    @property
    def slug(self) -> str:
        pw = "pwdef" if self.parallel_workers is None else f"pw{self.parallel_workers}"
        return pw + ("-ab" if self.batching else "")


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def prepare_mlserver_dir(kind: str, workdir: Path, cfg: MLServerConfig) -> Path:
    """A model repository dir for `mlserver start` with settings.json + one model `diabetes`.

    kind "ours": a symlink to the project's runtime/ package + a copy of models/diabetes/1 (its own
    model-settings.json, with the batching fields added).
    kind "stock": the same scaler + model dumped as one sklearn Pipeline served by mlserver_sklearn.
    """
    import joblib

    root = workdir / f"{kind}-{cfg.slug}"
    if root.exists():
        shutil.rmtree(root)
    model_dir = root / MODEL_NAME
    root.mkdir(parents=True)
    settings = base_server_settings()
    if kind == "stock":
        # The stock server runs without this project's code: its log config (runtime.logs) and
        # repository class go; neither server writes a line per request (debug false).
        for key in [k for k, v in settings.items() if "runtime" in str(v)]:
            settings.pop(key)
    if cfg.parallel_workers is not None:
        settings["parallel_workers"] = cfg.parallel_workers
    _write_json(root / "settings.json", settings)

    if kind == "ours":
        (root / "runtime").symlink_to(REPO / "runtime", target_is_directory=True)
        shutil.copytree(MODEL_VERSION_DIR, model_dir)
        ms = json.loads((model_dir / "model-settings.json").read_text())
    elif kind == "stock":
        model_dir.mkdir()
        joblib.dump(load_pipeline(), model_dir / "model.joblib")
        ms = {
            "name": MODEL_NAME,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "1"},
        }
    else:
        raise ValueError(kind)
    if cfg.batching:
        ms["max_batch_size"] = cfg.max_batch_size
        ms["max_batch_time"] = cfg.max_batch_time
    else:
        ms.pop("max_batch_size", None)
        ms.pop("max_batch_time", None)
    _write_json(model_dir / "model-settings.json", ms)
    return root


def prepare_kserve_dir(workdir: Path) -> Path:
    import joblib

    root = workdir / "kserve-model"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    joblib.dump(load_pipeline(), root / "model.joblib")
    return root


# ---------------------------------------------------------------- server subprocesses


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSERVER_", "KSERVE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    # One BLAS thread per process: the box has 2 cores and the load generator needs one.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


@dataclass
class Server:
    name: str
    cmd: list[str]
    cwd: Path
    http_port: int
    grpc_port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @classmethod
    def mlserver(cls, name: str, model_root: Path, log_path: Path, extra_cmd: list[str] | None = None) -> "Server":
        http, grpc, metrics = free_port(), free_port(), free_port()
        env = _clean_env()
        env.update(
            MLSERVER_HOST=HOST,
            MLSERVER_HTTP_PORT=str(http),
            MLSERVER_GRPC_PORT=str(grpc),
            MLSERVER_METRICS_PORT=str(metrics),
        )
        cmd = extra_cmd or [sys.executable, "-m", "mlserver.cli.main"]
        return cls(name, cmd + ["start", str(model_root)], model_root, http, grpc, log_path, env)

    @classmethod
    def kserve(cls, name: str, model_dir: Path, log_path: Path) -> "Server":
        http, grpc = free_port(), free_port()
        cmd = [
            sys.executable, "-m", "bench.kserve_server",
            "--model_dir", str(model_dir), "--model_name", MODEL_NAME,
            "--http_port", str(http), "--grpc_port", str(grpc),
            "--enable_latency_logging", "false",
        ]
        env = _clean_env()
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        return cls(name, cmd, REPO, http, grpc, log_path, env)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}/v2/models/{MODEL_NAME}/ready"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log: {self.log_path}\n"
                                   + self.log_tail())
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200 and _port_open(self.grpc_port):
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready after {timeout}s; log: {self.log_path}\n" + self.log_tail())

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def cpu_snapshot(self) -> dict[int, float]:
        """CPU seconds (user+system) of the server process and all its descendants, by pid."""
        import psutil

        out: dict[int, float] = {}
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return out
        for p in procs:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # Whatever is left of the process group this bench started (e.g. orphaned parallel workers).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> "Server":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False
