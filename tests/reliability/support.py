"""Helpers of the reliability suite on top of harness/: how its servers are launched, requests
with a fixed row, bounded closed-loop load over REST and gRPC, readiness probers and bursts.

Like the whole suite this never imports mlserver (the protobuf trap): servers are subprocesses
reached over loopback only. The suite's server-side code (`server_side/`: test doubles of the
runtime) is imported by those subprocesses, never by pytest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from harness.models import REPO_ROOT
from harness.server import Server, served

SLOW_RUNTIME = "tests.reliability.server_side.slow_runtime.SlowRuntime"

HTTP_TIMEOUT_S = 15.0
MAX_REQUESTS_PER_CLIENT = 3000  # every load loop is bounded in count as well as in time

ROW = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.003, 0.02, -0.02]


FAILING_RUNTIME = "tests.reliability.server_side.faulty_runtime.FailingRuntime"
SLEEPING_RUNTIME = "tests.reliability.server_side.faulty_runtime.SleepingRuntime"


def serve(root: Path, env: dict[str, str] | None = None, ready: Iterable[str] = ()) -> Iterator[Server]:
    """A module fixture's body: launch, wait until ready, yield, kill."""
    server = launch(root, env=env, ready=ready)
    yield from served(server)


def launch(root: Path, env: dict[str, str] | None = None, ready: Iterable[str] = ()) -> Server:
    """`mlserver start .` in `root` (harness.repository), ready once the server and the `ready`
    models are; the project on PYTHONPATH for the server-side test double."""
    full_env = {"MLSERVER_METRICS_DIR": str(root / ".metrics"), "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return Server.launch(root / "server.log", root=root, models=[(m, None) for m in ready], env=full_env)


# ------------------------------------------------------------------------------ requests


def rest_infer(
    server: Server,
    model: str,
    rows: list[list[float]] | None = None,
    headers: dict | None = None,
    session: requests.Session | None = None,
    version: str | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> requests.Response:
    rows = rows or [ROW]
    body: dict[str, Any] = {
        "inputs": [
            {"name": "X", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": [v for r in rows for v in r]}
        ]
    }
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return (session or requests).post(server.http_url + path, json=body, headers=headers or {}, timeout=timeout)


def grpc_client(server: Server) -> tgrpc.InferenceServerClient:
    return tgrpc.InferenceServerClient(url=server.grpc_url)


def grpc_infer(
    client: tgrpc.InferenceServerClient,
    model: str,
    rows: list[list[float]] | None = None,
    headers: dict | None = None,
    client_timeout: float | None = None,
    version: str = "",
) -> tgrpc.InferResult:
    x = np.asarray(rows or [ROW], dtype=np.float64)
    tensor = tgrpc.InferInput("X", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor], model_version=version, headers=headers, client_timeout=client_timeout)


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
    value: float | None = None

    def predicted(self) -> float:
        """The prediction answered (only an `ok` outcome has one)."""
        assert self.value is not None, f"{self.kind}: no prediction"
        return self.value


class Load:
    """Closed-loop REST and gRPC clients, each one request at a time, bounded in time and count."""

    def __init__(
        self,
        server: Server,
        model: str,
        rest_clients: int = 4,
        grpc_clients: int = 4,
        pause_after_failure_s: float = 0.02,
    ) -> None:
        self.server, self.model = server, model
        self.n_rest, self.n_grpc = rest_clients, grpc_clients
        self.pause = pause_after_failure_s
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stop_at = 0.0

    def start(self, duration_s: float) -> Load:
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
                r = rest_infer(self.server, self.model, session=session)
                ok = r.status_code == 200
                value = r.json()["outputs"][0]["data"][0] if ok else None
                self._add(
                    Outcome(
                        "rest",
                        i,
                        started,
                        time.monotonic(),
                        ok,
                        "ok" if ok else f"http-{r.status_code}",
                        r.text[:300],
                        value,
                    )
                )
            except requests.RequestException as exc:
                self._add(Outcome("rest", i, started, time.monotonic(), False, "transport", repr(exc)[:300]))
        session.close()

    def _grpc(self, i: int) -> None:
        client = grpc_client(self.server)
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
                    self._add(
                        Outcome(
                            "grpc",
                            i,
                            started,
                            time.monotonic(),
                            False,
                            f"grpc-{grpc_status(exc)}",
                            str(exc.message())[:300],
                        )
                    )
        finally:
            client.close()


class Prober:
    """Readiness and liveness every `period_s` over REST and gRPC, bounded in time and count."""

    def __init__(self, server: Server, model: str, period_s: float = 0.05) -> None:
        self.server, self.model, self.period = server, model, period_s
        self.samples: list[tuple[float, str, str]] = []  # (time, probe, "ok" | "not-ready" | "down")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, duration_s: float) -> Prober:
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
        http = self.server.http_url
        checks: list[tuple[str, Callable[[], bool]]] = [
            ("rest-ready", lambda: requests.get(f"{http}/v2/health/ready", timeout=1).status_code == 200),
            (
                "rest-model-ready",
                lambda: requests.get(f"{http}/v2/models/{self.model}/ready", timeout=1).status_code == 200,
            ),
            ("rest-live", lambda: requests.get(f"{http}/v2/health/live", timeout=1).status_code == 200),
        ]
        client = grpc_client(self.server)
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
