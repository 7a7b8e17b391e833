"""A bounded soak: concurrent REST and gRPC clients sending a mix of good and bad requests to one
server, while the resident memory of the server's process tree is sampled every second.

Shared by tests/fuzz/test_soak.py (about 10 s) and `python -m bench.soak --seconds 60`. Client side
only (requests + tritonclient's stubs), never mlserver.

Every good request must answer 200/OK with the pipeline's predictions (rtol 1e-9); every bad
one must get its client error (REST 4xx of the listed code, gRPC INVALID_ARGUMENT or NOT_FOUND)
with a message. Each worker stops at the deadline or after `max_requests_per_client`, whichever
comes first.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness import fuzz as fs
from harness import strategies as S
from harness.models import assert_parity, pipeline, sample_rows
from harness.server import Server
from harness.v2 import json_tensor, pb, pb_2d_request, pb_outputs

DEFAULT_CLIENTS = 8
DEFAULT_GOOD_RATIO = 0.75
RSS_INTERVAL_S = 1.0
MB = 1024 * 1024


@dataclass
class Probe:
    protocol: str  # "rest" | "grpc"
    kind: str  # "good" | "bad"
    name: str
    statuses: frozenset[str]  # acceptable answers ("200", "400", "OK", "INVALID_ARGUMENT", ...)
    path: str = ""
    body: bytes = b""
    request: Any = None  # gRPC ModelInferRequest
    expected: dict[str, np.ndarray] = field(default_factory=dict)  # good: output name -> values
    fragment: str = ""  # bad: a piece the error message must contain (case-insensitive)


# (tensor name, datatype, shape, contents field or None, its values or None)
GrpcInput = tuple[str, str, list[int], str | None, list[Any] | None]


def _expected(target: S.Target, x: np.ndarray, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    p = pipeline(target.model, target.resolved_version)
    out = {}
    for o in outputs:
        out[o] = p.output(o, x)
    return out


def good_probes() -> list[Probe]:
    msgs = pb()
    probes = []
    for target in S.served_targets():
        spec = target.spec
        assert spec is not None
        outputs = spec.outputs
        for rows, offset in ((1, 3), (8, 40)):
            x = sample_rows(target.model, rows, offset=offset)
            expected = _expected(target, x, outputs)
            label = f"{target.model}/{target.version or 'default'} {rows} row(s)"
            body = {"inputs": [json_tensor("X", x)], "outputs": [{"name": o} for o in outputs]}
            probes.append(
                Probe(
                    "rest",
                    "good",
                    f"{label} matrix",
                    frozenset({"200"}),
                    path=target.rest_path(),
                    body=json.dumps(body).encode(),
                    expected=expected,
                )
            )
            cols = {"inputs": [json_tensor(f, x[:, j]) for j, f in enumerate(spec.features)]}
            probes.append(
                Probe(
                    "rest",
                    "good",
                    f"{label} columns",
                    frozenset({"200"}),
                    path=target.rest_path(),
                    body=json.dumps(cols).encode(),
                    expected={"predict": expected["predict"]},
                )
            )
            req = pb_2d_request(target.model, x, version=target.version or "", outputs=outputs)
            probes.append(
                Probe("grpc", "good", f"{label} typed FP64", frozenset({"OK"}), request=req, expected=expected)
            )
            raw = msgs.ModelInferRequest(model_name=target.model, model_version=target.version or "")
            for j, f in enumerate(spec.features):
                raw.inputs.add(name=f, datatype="FP64", shape=[rows])
                raw.raw_input_contents.append(np.ascontiguousarray(x[:, j], "<f8").tobytes())
            probes.append(
                Probe(
                    "grpc",
                    "good",
                    f"{label} raw columns",
                    frozenset({"OK"}),
                    request=raw,
                    expected={"predict": expected["predict"]},
                )
            )
    return probes


def bad_probes() -> list[Probe]:
    msgs = pb()
    diabetes = S.Target("diabetes", None)
    path = diabetes.rest_path()
    x = sample_rows("diabetes", 2)
    row = x[0].tolist()

    def rest(
        name: str, body: bytes | dict[str, Any], status: int, fragment: str = "", target_path: str = path
    ) -> Probe:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return Probe("rest", "bad", name, frozenset({str(status)}), path=target_path, body=raw, fragment=fragment)

    def X(data: list[Any], shape: list[int], datatype: str = "FP64") -> dict[str, Any]:
        return {"inputs": [{"name": "X", "shape": shape, "datatype": datatype, "data": data}]}

    probes = [
        rest("wrong feature count", X([row[:7]], [1, 7]), 400, "expected 10 features"),
        rest(
            "NaN literal",
            b'{"inputs":[{"name":"X","shape":[1,10],"datatype":"FP64","data":[NaN,0,0,0,0,0,0,0,0,0]}]}',
            422,
        ),
        rest("null cell", X([[None] + row[1:]], [1, 10]), 400, "null"),
        rest("unknown datatype", X([row], [1, 10], "FP128"), 422),
        rest("INT8 out of range", X([[300] + [0] * 9], [1, 10], "INT8"), 400, "out of range"),
        rest("empty batch", X([], [0, 10]), 400, "empty"),
        rest(
            "predict_proba from a regressor",
            {**X([row], [1, 10]), "outputs": [{"name": "predict_proba"}]},
            400,
            "predict_proba",
        ),
        rest(
            "unknown model",
            X([row], [1, 10]),
            404,
            "not found",
            target_path=S.Target("no-such-model", None).rest_path(),
        ),
        rest("unknown version", X([row], [1, 10]), 404, "not found", target_path=S.Target("diabetes", "3").rest_path()),
        rest("ood_flags not a boolean", {**X([row], [1, 10]), "parameters": {"ood_flags": "yes"}}, 400, "ood_flags"),
        rest("malformed JSON", b'{"inputs": [', 422),
        rest("over the row cap (shape)", X([row], [10_001, 10]), 400, "10001"),
    ]

    def grpc(
        name: str,
        inputs: list[GrpcInput],
        status: str = "INVALID_ARGUMENT",
        fragment: str = "",
        model: str = "diabetes",
        version: str = "",
        outputs: Sequence[str] = (),
        raw: Sequence[bytes] = (),
    ) -> Probe:
        req = msgs.ModelInferRequest(model_name=model, model_version=version)
        for tname, datatype, shape, field_name, values in inputs:
            t = req.inputs.add(name=tname, datatype=datatype, shape=shape)
            if field_name:
                getattr(t.contents, field_name).extend(values)
        for o in outputs:
            req.outputs.add(name=o)
        req.raw_input_contents.extend(raw)
        return Probe("grpc", "bad", name, frozenset({status}), request=req, fragment=fragment)

    flat = x.ravel().tolist()
    nan = list(flat)
    nan[2] = float("nan")
    probes += [
        grpc(
            "wrong feature count",
            [("X", "FP64", [2, 7], "fp64_contents", x[:, :7].ravel().tolist())],
            fragment="expected 10 features",
        ),
        grpc("NaN", [("X", "FP64", [2, 10], "fp64_contents", nan)], fragment="nan"),
        grpc(
            "raw buffer of a wrong length",
            [("X", "FP64", [2, 10], None, None)],
            raw=[np.asarray(flat[:19], "<f8").tobytes()],
            fragment="raw bytes",
        ),
        grpc("BYTES", [("X", "BYTES", [2, 10], "bytes_contents", [b"a"] * 20)], fragment="BYTES"),
        grpc("unknown datatype", [("X", "FP128", [2, 10], "fp64_contents", flat)], fragment="FP128"),
        grpc("unknown output", [("X", "FP64", [2, 10], "fp64_contents", flat)], outputs=["foo"], fragment="foo"),
        grpc(
            "unknown model",
            [("X", "FP64", [2, 10], "fp64_contents", flat)],
            "NOT_FOUND",
            "not found",
            model="no-such-model",
        ),
        grpc("empty batch", [("X", "FP64", [0, 10], "fp64_contents", [])], fragment="empty"),
        grpc("over the row cap (shape)", [("X", "FP64", [10_001, 10], "fp64_contents", flat)], fragment="10001"),
        grpc(
            "two 2-D tensors",
            [("a", "FP64", [2, 10], "fp64_contents", flat), ("b", "FP64", [2, 10], "fp64_contents", flat)],
            fragment="'a'",
        ),
    ]
    return probes


def _check_good(probe: Probe, outcome: fs.Outcome) -> str | None:
    if outcome.status not in probe.statuses:
        return f"status {outcome.status}: {(outcome.message or outcome.text)[:300]}"
    try:
        if probe.protocol == "rest":
            got = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in outcome.json["outputs"]}
        else:
            got = pb_outputs(outcome.response)
        if set(got) != set(probe.expected):
            return f"outputs {sorted(got)} != {sorted(probe.expected)}"
        for name, want in probe.expected.items():
            assert_parity(got[name], want, name)
    except (AssertionError, KeyError, TypeError, ValueError) as exc:
        return f"wrong answer: {exc}"[:500]
    return None


def _check_bad(probe: Probe, outcome: fs.Outcome) -> str | None:
    if outcome.status not in probe.statuses:
        return f"status {outcome.status} (expected {sorted(probe.statuses)}): {(outcome.message or outcome.text)[:300]}"
    if not outcome.message.strip():
        return "error without a message"
    if probe.fragment and probe.fragment.lower() not in outcome.message.lower():
        return f"message lacks {probe.fragment!r}: {outcome.message[:300]}"
    for marker in fs.TRACEBACK_MARKERS:
        if marker in outcome.message or marker in outcome.text:
            return "answer carries a traceback"
    return None


@dataclass
class Tally:
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (protocol, kind) -> requests
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (protocol, kind) -> wrong answers
    error_examples: list[str] = field(default_factory=list)
    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (protocol, kind) -> [seconds]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, probe: Probe, seconds: float, error: str | None) -> None:
        key = (probe.protocol, probe.kind)
        with self.lock:
            self.counts[key] += 1
            self.latencies.setdefault(key, []).append(seconds)
            if error is not None:
                self.errors[key] += 1
                if len(self.error_examples) < 20:
                    self.error_examples.append(f"{probe.protocol} {probe.kind} '{probe.name}': {error}")


def _worker(
    server: Server,
    protocol: str,
    probes: list[Probe],
    good_ratio: float,
    seed: int,
    deadline: float,
    max_requests: int,
    tally: Tally | None,
) -> None:
    rng = random.Random(seed)
    good = [p for p in probes if p.protocol == protocol and p.kind == "good"]
    bad = [p for p in probes if p.protocol == protocol and p.kind == "bad"]
    client = fs.Client(server.http_url, server.grpc_url)
    try:
        for _ in range(max_requests):
            if time.monotonic() >= deadline:
                break
            probe = rng.choice(good) if rng.random() < good_ratio else rng.choice(bad)
            started = time.perf_counter()
            try:
                if protocol == "rest":
                    outcome = client.rest(probe.path, probe.body, "application/json")
                else:
                    outcome = client.grpc(probe.request)
            except fs.ServerDown as exc:
                if tally is not None:
                    tally.add(probe, time.perf_counter() - started, f"server down: {exc}")
                break
            error = (_check_good if probe.kind == "good" else _check_bad)(probe, outcome)
            if tally is not None:
                tally.add(probe, time.perf_counter() - started, error)
    finally:
        client.close()


def tree_rss(server: Server) -> tuple[int, int]:
    """(resident bytes of the server's process and all its descendants, number of processes)."""
    import psutil

    total = alive = 0
    for p in server.processes():
        try:
            total += p.memory_info().rss
            alive += 1
        except psutil.NoSuchProcess:
            pass
    return total, alive


def _run_phase(
    server: Server,
    probes: list[Probe],
    clients: int,
    good_ratio: float,
    seconds: float,
    seed: int,
    tally: Tally | None,
    max_requests: int,
) -> list[str]:
    deadline = time.monotonic() + seconds
    threads = []
    for i in range(clients):
        protocol = "rest" if i % 2 == 0 else "grpc"
        t = threading.Thread(
            target=_worker,
            name=f"soak-{protocol}-{i}",
            daemon=True,
            args=(server, protocol, probes, good_ratio, seed * 1000 + i, deadline, max_requests, tally),
        )
        t.start()
        threads.append(t)
    for t in threads:
        t.join(timeout=seconds + fs.REQUEST_TIMEOUT_S + 30)
    return [t.name for t in threads if t.is_alive()]


def run_soak(
    server: Server,
    seconds: float,
    clients: int = DEFAULT_CLIENTS,
    warmup: float = 2.0,
    good_ratio: float = DEFAULT_GOOD_RATIO,
    seed: int = 0,
    max_requests_per_client: int = 1_000_000,
) -> dict[str, Any]:
    probes = good_probes() + bad_probes()
    samples: list[tuple[float, int, int]] = []  # (seconds since start of measurement, rss, procs)
    stop = threading.Event()
    t0 = {"value": time.monotonic()}

    def sampler() -> None:
        while not stop.is_set():
            rss, procs = tree_rss(server)
            samples.append((time.monotonic() - t0["value"], rss, procs))
            stop.wait(RSS_INTERVAL_S)

    idle_rss, _ = tree_rss(server)
    if warmup > 0:
        _run_phase(server, probes, clients, good_ratio, warmup, seed + 1, None, max_requests_per_client)
    tally = Tally()
    t0["value"] = time.monotonic()
    sampler_thread = threading.Thread(target=sampler, name="soak-rss", daemon=True)
    sampler_thread.start()
    stuck = _run_phase(server, probes, clients, good_ratio, seconds, seed, tally, max_requests_per_client)
    elapsed = time.monotonic() - t0["value"]
    rss_end, _ = tree_rss(server)
    samples.append((elapsed, rss_end, samples[-1][2] if samples else 0))
    stop.set()
    sampler_thread.join(timeout=5)

    healthy = True
    try:
        session = fs.FuzzSession(server)
        session.health("after the soak")
        healthy = not session.stats.health_failures
        health_note = "; ".join(session.stats.health_failures)
        session.close()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        healthy, health_note = False, f"{type(exc).__name__}: {exc}"
    return summarize(
        tally,
        samples,
        elapsed,
        clients,
        good_ratio,
        warmup,
        idle_rss,
        stuck,
        healthy,
        health_note if not healthy else "",
        probes,
    )


def summarize(
    tally: Tally,
    samples: list[tuple[float, int, int]],
    elapsed: float,
    clients: int,
    good_ratio: float,
    warmup: float,
    idle_rss: int,
    stuck: list[str],
    healthy: bool,
    health_note: str,
    probes: list[Probe],
) -> dict[str, Any]:
    t = np.asarray([s[0] for s in samples], dtype=float)
    rss = np.asarray([s[1] for s in samples], dtype=float) / MB
    half = t >= elapsed / 2
    second_t, second_rss = t[half], rss[half]
    if len(second_t) >= 2:
        slope = float(np.polyfit(second_t, second_rss, 1)[0]) * 60.0  # MB per minute
        growth = float(second_rss.max() - second_rss[0])
    else:
        slope, growth = 0.0, 0.0
    rows = []
    for key in sorted(tally.counts):
        lat = np.asarray(tally.latencies.get(key, [0.0])) * 1000
        rows.append(
            {
                "protocol": key[0],
                "kind": key[1],
                "requests": tally.counts[key],
                "errors": tally.errors[key],
                "rps": round(tally.counts[key] / elapsed, 1),
                "p50_ms": round(float(np.percentile(lat, 50)), 2),
                "p99_ms": round(float(np.percentile(lat, 99)), 2),
            }
        )
    return {
        "seconds": round(elapsed, 2),
        "warmup_seconds": warmup,
        "clients": clients,
        "good_ratio": good_ratio,
        "probes": {"good": sum(p.kind == "good" for p in probes), "bad": sum(p.kind == "bad" for p in probes)},
        "rows": rows,
        "requests": sum(tally.counts.values()),
        "good_requests": sum(n for (p, k), n in tally.counts.items() if k == "good"),
        "bad_requests": sum(n for (p, k), n in tally.counts.items() if k == "bad"),
        "good_errors": sum(n for (p, k), n in tally.errors.items() if k == "good"),
        "bad_errors": sum(n for (p, k), n in tally.errors.items() if k == "bad"),
        "error_examples": tally.error_examples,
        "stuck_clients": stuck,
        "server_healthy_after": healthy,
        "health_note": health_note,
        "rss_mb": {
            "idle_before_warmup": round(idle_rss / MB, 1),
            "start": round(float(rss[0]), 1) if len(rss) else None,
            "peak": round(float(rss.max()), 1) if len(rss) else None,
            "end": round(float(rss[-1]), 1) if len(rss) else None,
            "second_half_growth": round(growth, 2),
            "second_half_slope_mb_per_min": round(slope, 2),
            "samples": len(rss),
            "processes": int(samples[-1][2]) if samples else 0,
        },
        "rss_samples": [{"t": round(float(a), 2), "rss_mb": round(float(b), 2)} for a, b in zip(t, rss)],
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'protocol':8} {'kind':5} {'requests':>9} {'errors':>7} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8}"]
    for r in result["rows"]:
        lines.append(
            f"{r['protocol']:8} {r['kind']:5} {r['requests']:>9} {r['errors']:>7} "
            f"{r['rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8}"
        )
    m = result["rss_mb"]
    lines.append(
        f"total {result['requests']} requests in {result['seconds']} s with {result['clients']} "
        f"clients (after {result['warmup_seconds']} s warm-up): good errors "
        f"{result['good_errors']}, bad requests without their 4xx {result['bad_errors']}"
    )
    lines.append(
        f"server RSS (process tree, {m['processes']} process(es)): idle {m['idle_before_warmup']} MB, "
        f"start {m['start']} MB, peak {m['peak']} MB, end {m['end']} MB; second half: "
        f"+{m['second_half_growth']} MB, slope {m['second_half_slope_mb_per_min']} MB/min"
    )
    lines.append(
        f"server healthy afterwards: {result['server_healthy_after']}"
        + (f" ({result['health_note']})" if result["health_note"] else "")
    )
    for e in result["error_examples"]:
        lines.append(f"  error: {e}")
    return "\n".join(lines)
