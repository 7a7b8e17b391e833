"""Helpers of the reliability suite: model repositories built in a temporary directory, real
`mlserver start .` processes, bounded closed-loop load over REST and gRPC, readiness probers and
expected predictions computed from the artifacts.

Like the whole suite this never imports `mlserver` or `runtime` (protobuf trap): servers are
subprocesses reached over loopback only. The only server-side code of the suite is
`server_side/slow_runtime.py`, imported by those subprocesses, never by pytest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import requests
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests" / "integration") not in sys.path:  # the suites' shared server helpers
    sys.path.insert(0, str(REPO / "tests" / "integration"))

import itest_support as its  # noqa: E402
from itest_support import free_ports  # noqa: E402

MODELS = REPO / "models"
SERVER_SIDE = Path(__file__).resolve().parent / "server_side"
RUNTIME = "runtime.PipelineRuntime"
SLOW_RUNTIME = "slow_runtime.SlowRuntime"

STARTUP_TIMEOUT_S = 90.0
HTTP_TIMEOUT_S = 15.0
MAX_REQUESTS_PER_CLIENT = 3000  # every load loop is bounded in count as well as in time

ROW = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.003, 0.02, -0.02]


# ------------------------------------------------------------------------------ repositories


def make_repository(root: Path, workers: int = 0) -> Path:
    """An empty model repository with the project's settings.json (workers overridden)."""
    root.mkdir(parents=True, exist_ok=True)
    settings = json.loads((REPO / "settings.json").read_text())
    settings["parallel_workers"] = workers
    if "logging_settings" in settings:
        settings["logging_settings"] = str((REPO / settings["logging_settings"]).resolve())
    (root / "settings.json").write_text(json.dumps(settings))
    return root


def add_model(
    root: Path,
    name: str,
    *,
    source: str = "diabetes/1",
    implementation: str = RUNTIME,
    extra: Optional[dict[str, Any]] = None,
    version: str = "1",
    subdir: Optional[str] = None,
) -> Path:
    """Copy a shipped model version into the repository under a new name, with its own settings."""
    target = root / "models" / (subdir or name)
    shutil.copytree(MODELS / source, target)
    settings = {
        "name": name,
        "implementation": implementation,
        "parameters": {"version": version, "uri": ".", "extra": extra or {}},
    }
    (target / "model-settings.json").write_text(json.dumps(settings))
    return target


def manifest(model_dir: Path) -> dict:
    return json.loads((model_dir / "manifest.json").read_text())


def write_manifest(model_dir: Path, doc: dict) -> None:
    (model_dir / "manifest.json").write_text(json.dumps(doc, indent=2))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replace_artifacts(target: Path, source: Path) -> None:
    """Put another version's manifest and artifacts in place (model-settings.json stays)."""
    for name in ("manifest.json", "model.skops", "scaler.skops"):
        if (source / name).exists():
            tmp = target / f".{name}.new"
            shutil.copyfile(source / name, tmp)
            os.replace(tmp, target / name)


def tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------ expectations


def _load_skops(path: Path) -> Any:
    import skops.io as sio

    # The test trusts its own, hash-checked copies; what the server trusts is the server's call.
    return sio.load(path, trusted=sio.get_untrusted_types(file=path))


def predict_locally(model_dir: Path, x: np.ndarray) -> np.ndarray:
    doc = manifest(model_dir)
    for entry in (doc["model"], doc.get("scaler")):
        if entry:
            assert sha256_file(model_dir / entry["file"]) == entry["sha256"]
    model = _load_skops(model_dir / doc["model"]["file"])
    if doc.get("scaler"):
        x = _load_skops(model_dir / doc["scaler"]["file"]).transform(x)
    return np.asarray(model.predict(x), dtype=np.float64)


# ------------------------------------------------------------------------------ the server


class Server(its.Server):
    """The suites' server (itest_support.Server) plus signals, logs and requests for these tests."""

    @property
    def http(self) -> str:
        return self.http_url

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)  # the main process only, as the kubelet does

    # -------------------------------------------------------------- requests

    def rest_infer(
        self, model: str, rows: Optional[list[list[float]]] = None, headers: Optional[dict] = None,
        session: Optional[requests.Session] = None, version: Optional[str] = None,
        timeout: float = HTTP_TIMEOUT_S,
    ) -> requests.Response:
        rows = rows or [ROW]
        body = {"inputs": [{"name": "X", "shape": [len(rows), len(rows[0])], "datatype": "FP64",
                            "data": [v for r in rows for v in r]}]}  # fmt: skip
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        return (session or requests).post(self.http + path, json=body, headers=headers or {}, timeout=timeout)

    def grpc_client(self) -> tgrpc.InferenceServerClient:
        return tgrpc.InferenceServerClient(url=self.grpc_url)

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(self.metrics_url, timeout=10).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


def start_server(root: Path, env: Optional[dict[str, str]] = None, ready: Iterable[str] = ()) -> Server:
    """`mlserver start .` in `root`, ready once the server and the `ready` models are."""
    # Nothing from the developer's shell that configures MLServer or the runtime leaks in.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "MLSERVER_"))}
    clean.update(
        MLSERVER_METRICS_DIR=str(root / ".metrics"),
        PYTHONPATH=os.pathsep.join([str(REPO), str(SERVER_SIDE)]),
        **(env or {}),
    )
    server = Server.launch(root / "server.log", root=root, models=[(m, None) for m in ready],
                           env=clean, base_env={})  # fmt: skip
    try:
        server.wait_ready(STARTUP_TIMEOUT_S)
    except BaseException:
        server.kill()
        raise
    return server


def grpc_infer(
    client: tgrpc.InferenceServerClient, model: str, rows: Optional[list[list[float]]] = None,
    headers: Optional[dict] = None, client_timeout: Optional[float] = None, version: str = "",
) -> tgrpc.InferResult:
    x = np.asarray(rows or [ROW], dtype=np.float64)
    tensor = tgrpc.InferInput("X", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor], model_version=version, headers=headers,
                        client_timeout=client_timeout)  # fmt: skip


def grpc_status(error: InferenceServerException) -> str:
    """'UNAVAILABLE' from tritonclient's 'StatusCode.UNAVAILABLE'."""
    return str(error.status() or "").removeprefix("StatusCode.")


# ------------------------------------------------------------------------------ load


@dataclass(frozen=True)
class Outcome:
    protocol: str
    client: int
    started: float  # time.monotonic() in this process
    ended: float
    ok: bool
    kind: str  # "ok", "http-<status>", "grpc-<CODE>", "transport"
    detail: str = ""
    value: Optional[float] = None


class Load:
    """Closed-loop REST and gRPC clients, each one request at a time, bounded in time and count."""

    def __init__(self, server: Server, model: str, rest_clients: int = 4, grpc_clients: int = 4,
                 pause_after_failure_s: float = 0.02) -> None:  # fmt: skip
        self.server, self.model = server, model
        self.n_rest, self.n_grpc = rest_clients, grpc_clients
        self.pause = pause_after_failure_s
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stop_at = 0.0

    def start(self, duration_s: float) -> "Load":
        self._stop_at = time.monotonic() + duration_s
        for i in range(self.n_rest):
            self._threads.append(threading.Thread(target=self._rest, args=(i,), daemon=True))
        for i in range(self.n_grpc):
            self._threads.append(threading.Thread(target=self._grpc, args=(i,), daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float = 60.0) -> list[Outcome]:
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "load clients did not finish in time"
        return sorted(self.outcomes, key=lambda o: o.started)

    def _running(self, n: int) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._stop_at and n < MAX_REQUESTS_PER_CLIENT

    def _add(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)
        if not outcome.ok:
            time.sleep(self.pause)

    def _rest(self, i: int) -> None:
        session = requests.Session()
        n = 0
        while self._running(n):
            n += 1
            started = time.monotonic()
            try:
                r = self.server.rest_infer(self.model, session=session)
                ok = r.status_code == 200
                value = r.json()["outputs"][0]["data"][0] if ok else None
                self._add(Outcome("rest", i, started, time.monotonic(), ok,
                                  "ok" if ok else f"http-{r.status_code}", r.text[:300], value))  # fmt: skip
            except requests.RequestException as exc:
                self._add(Outcome("rest", i, started, time.monotonic(), False, "transport", repr(exc)[:300]))
        session.close()

    def _grpc(self, i: int) -> None:
        client = self.server.grpc_client()
        n = 0
        try:
            while self._running(n):
                n += 1
                started = time.monotonic()
                try:
                    result = grpc_infer(client, self.model, client_timeout=HTTP_TIMEOUT_S)
                    value = float(result.as_numpy("predict")[0])
                    self._add(Outcome("grpc", i, started, time.monotonic(), True, "ok", "", value))
                except InferenceServerException as exc:
                    self._add(Outcome("grpc", i, started, time.monotonic(), False,
                                      f"grpc-{grpc_status(exc)}", str(exc.message())[:300]))  # fmt: skip
        finally:
            client.close()


class Prober:
    """Readiness and liveness every `period_s` over REST and gRPC, bounded in time and count."""

    def __init__(self, server: Server, model: str, period_s: float = 0.05) -> None:
        self.server, self.model, self.period = server, model, period_s
        self.samples: list[tuple[float, str, str]] = []  # (time, probe, "ok" | "not-ready" | "down")
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self, duration_s: float) -> "Prober":
        stop_at = time.monotonic() + duration_s
        self._thread = threading.Thread(target=self._run, args=(stop_at,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, str, str]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        return list(self.samples)

    def _run(self, stop_at: float) -> None:
        http = self.server.http
        checks: list[tuple[str, Callable[[], bool]]] = [
            ("rest-ready", lambda: requests.get(f"{http}/v2/health/ready", timeout=1).status_code == 200),
            ("rest-model-ready",
             lambda: requests.get(f"{http}/v2/models/{self.model}/ready", timeout=1).status_code == 200),
            ("rest-live", lambda: requests.get(f"{http}/v2/health/live", timeout=1).status_code == 200),
        ]  # fmt: skip
        client = self.server.grpc_client()
        checks += [
            ("grpc-ready", lambda: client.is_server_ready(client_timeout=1)),
            ("grpc-model-ready", lambda: client.is_model_ready(self.model, client_timeout=1)),
        ]
        n = 0
        try:
            while not self._stop.is_set() and time.monotonic() < stop_at and n < 2000:
                n += 1
                for name, check in checks:
                    now = time.monotonic()
                    try:
                        state = "ok" if check() else "not-ready"
                    except (requests.RequestException, InferenceServerException):
                        state = "down"
                    self.samples.append((now, name, state))
                time.sleep(self.period)
        finally:
            client.close()


def summarize(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        key = f"{o.protocol}:{o.kind}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def burst(n: int, fn: Callable[[int], Any], timeout_s: float = 30.0) -> list[Any]:
    """Call fn(i) for i < n from n threads released together; results (or exceptions) in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait(timeout_s)
        started = time.monotonic()
        try:
            value = fn(i)
        except Exception as exc:  # returned, not raised: the caller classifies
            value = exc
        results[i] = (value, time.monotonic() - started)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert not any(t.is_alive() for t in threads), "burst requests did not finish in time"
    return results
