"""Helpers of the rehearsal: the versions it serves, the bucket edges they share, and bounded load
through the load balancer.

Never imports mlserver (the protobuf trap): servers are `mlserver start .` subprocesses reached
over loopback; the server-side doubles (server_side/doubles.py) are imported by them only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np
import requests

from harness.models import DIABETES, REPO_ROOT, dataset, pipeline
from harness.repository import RUNTIME, add_model, make_repository
from harness.server import Server

MODEL = DIABETES
ERRORING = "tests.rehearsal.server_side.doubles.ErroringRuntime"
SHIFTED = "tests.rehearsal.server_side.doubles.ShiftedRuntime"
ERROR_EVERY = 5  # the erroring canary fails every 5th prediction: 20 % of its requests
SHIFT = 40.0  # the shifted canary's predictions + 40 (the diabetes predictions' std is about 55)

ROWS_PER_REQUEST = 8
HTTP_TIMEOUT_S = 10.0
MAX_REQUESTS_PER_CLIENT = 120_000  # a count bound above what LOAD_MAX_S allows (~500 a second each): the
# time bound ends the load; at 20,000 a quiet machine ran out of requests before the last tests


@cache
def stable_deciles() -> list[float]:
    """The prediction buckets every version of the rehearsal is given: the deciles of the stable
    version's (v1's) predictions on the rows the load sends, so v1 counts about 10 % per bucket
    and any canary is counted in the same buckets (docs/rollout.md)."""
    values = pipeline(MODEL, "1").predict(dataset(MODEL))
    return [round(float(v), 3) for v in np.quantile(values, np.linspace(0.1, 0.9, 9))]


def launch_version(
    base: Path,
    label: str,
    source: str,
    version: str,
    implementation: str = RUNTIME,
    env: dict[str, str] | None = None,
) -> Server:
    """A server of its own serving `source` (e.g. "diabetes/2") as model `diabetes`, version
    `version`, with the shared prediction buckets; launched, not yet waited for."""
    root = make_repository(base / label, workers=0)
    add_model(
        root,
        MODEL,
        source=source,
        version=version,
        implementation=implementation,
        extra={"prediction_buckets": stable_deciles()},
    )
    full_env = {"MLSERVER_METRICS_DIR": str(root / ".metrics"), "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return Server.launch(root / "server.log", root=root, models=[(MODEL, None)], env=full_env)


@cache
def bodies() -> tuple[bytes, ...]:
    """V2 request bodies of ROWS_PER_REQUEST real diabetes rows each, covering the whole dataset."""
    x = dataset(MODEL)
    out = []
    for start in range(0, len(x), ROWS_PER_REQUEST):
        rows = x[np.arange(start, start + ROWS_PER_REQUEST) % len(x)]
        tensor = {"name": "X", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}
        out.append(json.dumps({"inputs": [tensor]}).encode())
    return tuple(out)


@dataclass
class Load:
    """Closed-loop REST clients through `url`, one request at a time each, bounded in time and
    count; status codes counted (0 for a transport error, e.g. a connection closed by a reload)."""

    url: str
    clients: int = 3
    statuses: Counter = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, max_seconds: float) -> Load:
        stop_at = time.monotonic() + max_seconds
        for i in range(self.clients):
            thread = threading.Thread(target=self._run, args=(i, stop_at), daemon=True, name=f"load-{i}")
            self._threads.append(thread)
            thread.start()
        return self

    def _run(self, i: int, stop_at: float) -> None:
        session = requests.Session()
        path = f"{self.url}/v2/models/{MODEL}/infer"
        headers = {"content-type": "application/json"}
        payloads = bodies()
        n = i * 7
        local: Counter = Counter()
        while not self._stop.is_set() and time.monotonic() < stop_at and n < MAX_REQUESTS_PER_CLIENT + i * 7:
            body = payloads[n % len(payloads)]
            n += 1
            try:
                status = session.post(path, data=body, headers=headers, timeout=HTTP_TIMEOUT_S).status_code
            except requests.RequestException:
                status = 0
                session.close()
                session = requests.Session()
            local[status] += 1
            if len(local) and sum(local.values()) % 200 == 0:
                self._merge(local)
        self._merge(local)
        session.close()

    def _merge(self, local: Counter) -> None:
        with self._lock:
            self.statuses.update(local)
        local.clear()

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self.statuses)

    def stop(self, timeout_s: float = 30.0) -> Counter:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "load clients did not stop in time"
        return self.snapshot()


def run_cli(*argv: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    """`python -m pipeline_tools.rollout.auto ...` as a subprocess of its own, from the project root."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline_tools.rollout.auto", *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def decision_lines(stdout: str) -> list[dict]:
    """The JSON decision lines `auto` wrote on stdout, parsed (every line must be one)."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def unix(iso: str) -> float:
    """Unix seconds of the ISO 8601 times the decision lines carry ("...Z")."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
