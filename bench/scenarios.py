"""The benchmark's scenario library: request payloads and pre-flight checks, one scenario on one
server (wrk or h2load, server CPU from psutil), and a group of servers measured in turn, round
after round. The command line is bench/run.py; bench/profile.py reuses the scenarios.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from argparse import Namespace
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import common, loadgen
from bench.common import MODEL_NAME, Launcher, MLServerConfig
from harness.models import assert_parity, dataset
from harness.server import Server
from harness.v2 import pb_outputs, rest_outputs

LOADS = {
    "1row_c1": (1, 1),
    "1row_c16": (1, 16),
    "100rows_c4": (100, 4),
}
PROTOCOLS = ("rest", "grpc")
CONFIGS = {
    "pw0": MLServerConfig(parallel_workers=0, batching=False),
    "pw0-ab": MLServerConfig(parallel_workers=0, batching=True),
    "pwdef": MLServerConfig(parallel_workers=None, batching=False),
    "pwdef-ab": MLServerConfig(parallel_workers=None, batching=True),
}
SERVERS = ("ours", "stock", "kserve", "floor")


def log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ---------------------------------------------------------------- request bodies and pre-flight checks


@dataclass(frozen=True)
class Payload:
    """One request: the features, where wrk and h2load read its bodies, the ModelInferRequest, and
    what the server must answer."""

    X: Any  # float64 [N, F], or a DataFrame (the `columns` model)
    rest: Path  # the JSON body
    grpc: Path  # the gRPC body, framed
    request: Any  # the ModelInferRequest
    expected: np.ndarray


class Payloads:
    """Per row count: the JSON body, the gRPC body (framed) and the expected predictions."""

    def __init__(self, workdir: Path, pipeline: Any, row_counts: Iterable[int], model: str = "linear") -> None:
        self.items: dict[int, Payload] = {}
        form = common.BENCH_MODELS[model]
        for n in row_counts:
            X = form.rows(n)
            self.items[n] = _payload(workdir, f"body-{n}", X, pipeline, form.rest_body(X), form.grpc_request(X))

    @classmethod
    def lookup(cls, workdir: Path, pipeline: Any, entity_id: str) -> Payloads:
        """One row by id (for the 1-row loads): the request sends `entity_id` instead of the features,
        and the answer must be the pipeline's on that id's dataset row."""
        payloads = cls(workdir, pipeline, ())
        X = dataset(MODEL_NAME)[common.LOOKUP_ROW : common.LOOKUP_ROW + 1]
        payloads.items[1] = _payload(
            workdir, "lookup-1", X, pipeline, common.lookup_rest_body(entity_id), common.lookup_grpc_request(entity_id)
        )
        return payloads


def _payload(workdir: Path, stem: str, X: Any, pipeline: Any, rest_body: bytes, request: Any) -> Payload:
    """The request bodies written where wrk and h2load read them, and what the server must answer."""
    rest, grpc = workdir / f"{stem}.json", workdir / f"{stem}.grpc"
    rest.write_bytes(rest_body)
    grpc.write_bytes(common.grpc_frame(request.SerializeToString()))
    return Payload(X, rest, grpc, request, np.asarray(pipeline.predict(X), dtype=float))


Preflight = dict[str, dict[int, int | None]]  # "grpc_response_bytes" -> row count -> size (None: varies)


def preflight(server: Server, name: str, payloads: Payloads, protocols: Iterable[str]) -> Preflight:
    """One real client call per protocol and row count: checks values, returns gRPC response sizes."""
    info: Preflight = {"grpc_response_bytes": {}}
    for n, item in payloads.items.items():
        if "rest" in protocols:
            req = urllib.request.Request(
                f"{server.http_url}/v2/models/{MODEL_NAME}/infer",
                data=item.rest.read_bytes(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                (got,) = rest_outputs(json.loads(r.read())).values()
            assert_parity(got.astype(float).ravel(), item.expected, f"{name} REST {n} rows")
        if "grpc" in protocols:
            import grpc
            from tritonclient.grpc import service_pb2_grpc

            with grpc.insecure_channel(server.grpc_url) as ch:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
                sizes: set[int] = set()
                for _ in range(3):
                    resp = stub.ModelInfer(item.request, timeout=30)
                    sizes.add(resp.ByteSize())
            (got,) = pb_outputs(resp).values()
            assert_parity(got.astype(float).ravel(), item.expected, f"{name} gRPC {n} rows")
            info["grpc_response_bytes"][n] = (sizes.pop() + 5) if len(sizes) == 1 else None
    return info


# ---------------------------------------------------------------- one scenario on one server


def _system_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all processes), for the background-load column."""
    import psutil

    t = psutil.cpu_times()
    busy: float = (
        t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)
    )
    return busy


def scenario_fn(
    server: Server, pre: Preflight, payloads: Payloads, workdir: Path, proto: str, load: str
) -> Callable[[float], loadgen.LoadResult]:
    """A function(duration_s) -> LoadResult that drives one scenario against one server."""
    rows, conc = LOADS[load]
    item = payloads.items[rows]
    if proto == "rest":
        url = f"{server.http_url}/v2/models/{MODEL_NAME}/infer"
        return lambda d: loadgen.run_wrk(url, item.rest, conc, d, workdir)
    url = f"http://{server.grpc_url}/inference.GRPCInferenceService/ModelInfer"
    rb = pre["grpc_response_bytes"].get(rows)
    return lambda d: loadgen.run_h2load_grpc(url, item.grpc, conc, d, workdir, rb)


def best_of_rounds(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the most good responses per second stands for the scenario (the least disturbed
    by the shared machine); every round's numbers stay in `rounds`."""
    ok = [r for r in recs if "failed" not in r]
    best = dict(max(ok, key=lambda r: r["rps"]) if ok else recs[-1])
    best["rounds"] = [
        {
            k: r.get(k)
            for k in (
                "round",
                "rps",
                "p50_ms",
                "p99_ms",
                "errors",
                "server_cpu_us_per_req",
                "store_cpu_us_per_req",
                "other_cpu_cores",
                "failed",
            )
            if k in r
        }
        for r in recs
    ]
    best["errors_all_rounds"] = sum(r.get("errors", 0) for r in recs)
    return best


def measure(
    server: Server,
    kind: str,
    label: str,
    pre: Preflight,
    payloads: Payloads,
    proto: str,
    load: str,
    args: Namespace,
    workdir: Path,
    warmup: int,
    store: Callable[[], list[Any]] | None = None,
) -> dict[str, Any]:
    """One scenario on one server; `store` gives the processes of a database the server queries,
    whose CPU is recorded apart from the server's (store_cpu_us_per_req)."""
    rows, conc = LOADS[load]
    go = scenario_fn(server, pre, payloads, workdir, proto, load)
    rec: dict[str, Any] = {
        "server": kind,
        "config": label,
        "protocol": proto,
        "load": load,
        "rows": rows,
        "concurrency": conc,
        "loadavg_before": os.getloadavg()[0],
    }
    try:
        if warmup > 0:
            go(warmup)
        before, sys0 = common.cpu_snapshot(server), _system_busy_s()
        store0 = common.processes_cpu(store()) if store else {}
        res = go(args.duration)
        store_cpu = common.cpu_delta(store0, common.processes_cpu(store())) if store else 0.0
        after, sys1 = common.cpu_snapshot(server), _system_busy_s()
        cpu = common.cpu_delta(before, after)
        rec.update(res.to_dict())
        rec["rows_per_s"] = res.rps * rows
        done = max(res.completed, 1)
        rec["server_cpu_us_per_req"] = cpu / done * 1e6
        rec["server_cpu_cores"] = cpu / res.duration_s
        rec["client_cpu_us_per_req"] = res.client_cpu_s / done * 1e6
        rec["client_cpu_cores"] = res.client_cpu_s / res.duration_s
        if store:
            rec["store_cpu_us_per_req"] = store_cpu / done * 1e6
        # Everything else the machine did meanwhile (other sessions' tests, the bench itself).
        rec["other_cpu_cores"] = max(0.0, (sys1 - sys0) - cpu - store_cpu - res.client_cpu_s) / res.duration_s
        log(
            f"  {kind:6} {label:16} {proto:4} {load:10} {res.rps:9.1f} req/s "
            f"p50 {res.p50_ms:7.2f} ms p99 {res.p99_ms:7.2f} ms err {res.errors} "
            f"srv {rec['server_cpu_us_per_req']:6.0f} us/req cli {rec['client_cpu_us_per_req']:4.0f} us/req "
            + (f"db {rec['store_cpu_us_per_req']:4.0f} us/req " if store else "")
            + f"bg {rec['other_cpu_cores']:.2f} cores"
        )
    except Exception as e:  # noqa: BLE001 - record and go on with the next scenario
        rec["failed"] = f"{type(e).__name__}: {e}"[:500]
        log(f"  {kind} {label} {proto} {load} FAILED: {rec['failed']}")
    if server.proc.poll() is not None:
        raise RuntimeError(f"{kind} [{label}] died during {proto} {load}:\n{server.log_tail()}")
    return rec


@dataclass(frozen=True)
class Member:
    """One server of a group. By default it gets the group's payloads on every load; a lookup server
    gets its own requests (by id), on the loads they are meant for, and the database it queries.
    `check` runs once the pre-flight passed: it raises if the server is not what it claims to be (the
    baseline's code), else returns what it verified."""

    kind: str
    label: str
    launch: Launcher
    payloads: Payloads | None = None  # None: the group's
    loads: tuple[str, ...] | None = None  # None: every load of the run
    store: Callable[[], list[Any]] | None = None  # the database's processes (measure's `store`)
    check: Callable[[], str] | None = None

    def runs(self, load: str) -> bool:
        return self.loads is None or load in self.loads


def run_group(
    group: list[Member], payloads: Payloads, args: Namespace, workdir: Path, runs: list[dict[str, Any]]
) -> None:
    """All servers start together (idle ones cost ~0.002 cores); each scenario then runs on each server
    in turn, back to back (rotating who goes first), round after round, so drift in the shared machine's
    background load hits every server and config alike."""
    started: list[tuple[Member, Server]] = []
    try:
        for m in group:
            log(f"{m.kind} [{m.label}] starting ...")
            started.append((m, m.launch()))
        live: list[tuple[Member, Server, Preflight]] = []
        for m, server in started:
            try:
                server.wait_ready(common.READY_TIMEOUT_S)
                pre = preflight(server, f"{m.kind} [{m.label}]", m.payloads or payloads, args.protocols)
                if m.check:
                    log(f"{m.kind} [{m.label}] {m.check()}")
                live.append((m, server, pre))
            except Exception as e:  # noqa: BLE001
                log(f"{m.kind} [{m.label}] FAILED: {type(e).__name__}: {e}")
                runs.append({"server": m.kind, "config": m.label, "failed": f"{type(e).__name__}: {e}"[:2000]})
        measured: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
        for rnd in range(args.rounds):
            i = 0
            for proto in args.protocols:
                for load in args.loads:
                    these = [x for x in live if x[0].runs(load)]
                    order = these[i % len(these) :] + these[: i % len(these)] if these else []
                    i += 1
                    for m, server, pre in order:
                        if server.proc.poll() is not None:
                            continue
                        try:
                            rec = measure(
                                server,
                                m.kind,
                                m.label,
                                pre,
                                m.payloads or payloads,
                                proto,
                                load,
                                args,
                                workdir,
                                warmup=args.warmup if rnd == 0 else 0,
                                store=m.store,
                            )
                        except RuntimeError as e:
                            log(str(e))
                            runs.append({"server": m.kind, "config": m.label, "failed": str(e)[:2000]})
                            continue
                        rec["round"] = rnd + 1
                        measured.setdefault((m.kind, m.label, proto, load), []).append(rec)
        runs.extend(best_of_rounds(recs) for recs in measured.values())
    finally:
        for _, server in started:
            server.stop()


def close_workdir(workdir: Path, keep: bool, what: str = "") -> None:
    """Remove the run's temporary directory, unless asked to keep it (then say where it is)."""
    if keep:
        log(f"workdir kept{f' ({what})' if what else ''}: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def ours_available() -> bool:
    return (common.REPO / "runtime" / "model.py").exists()


def tool_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, cmd in (("wrk", ["wrk", "-v"]), ("h2load", ["h2load", "--version"])):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            out[name] = (p.stdout or p.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            out[name] = None
    try:
        from importlib.metadata import version

        for pkg in ("mlserver", "mlserver-sklearn", "kserve", "scikit-learn", "numpy"):
            out[pkg] = version(pkg)
    except Exception:  # noqa: BLE001
        pass
    return out
