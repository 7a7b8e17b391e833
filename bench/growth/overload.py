"""Axis `overload`: past capacity, 1-row REST requests. Capacity = the best rate of 200s from 64
keep-alive connections each sending its next request once answered (h2load --h1, C, from Debian's
nghttp2-client), per server and config; then, each server in the config with the higher capacity,
1x, 1.5x and 2x its own capacity offered for 20 s at a fixed rate by `h2load --h1 --rps`: the same
64 connections each sending at rate/64, so at most 64 requests are in flight — a fixed-rate
generator bounded in time and connections, where a request that cannot be sent yet waits in the
client (its latency is counted from when it is sent). Goodput (200s a second), p99 of the
answered 200s, counts by status and the requests still in flight at the end (h2load times none
out). This runtime runs twice: as
configured by default (no cap, requests queue) and with `max_in_flight` 8 (the documented 503
past it), offered the uncapped server's rates (the cap is a policy on the same server)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from bench.growth import fleet
from bench.loadgen import _H2_REQS
from bench.scenarios import CONFIGS, log
from harness.server import Server

MULTIPLES = (1.0, 1.5, 2.0)
OVERLOAD_S, QUICK_OVERLOAD_S = 20, 5
CLIENTS = 64
CAP = 8  # max_in_flight of the capped variant
CAPPED = "ours+cap"  # its server name in the records


def run(settings: fleet.Settings) -> list[dict[str, Any]]:
    fitted = common.bench_pipeline("linear")
    point = fleet.make_point(settings, "overload 1 row", common.bench_rows(1), fitted)
    group = []
    for i, slug in enumerate(settings.configs):
        cfg = CONFIGS[slug]
        variants: list[tuple[str, str, dict[str, Any] | None]] = [("ours", "ours", None), ("stock", "stock", None)]
        if i == 0:
            variants.append((CAPPED, "ours", {"max_in_flight": CAP}))
        for name, kind, extra in variants:
            root = fleet.fleet_dir(kind, settings, cfg, fitted, tag=f"overload-{name}", extra=extra)
            launch = common.mlserver_launcher(root, settings.workdir / "logs" / f"{name}-{slug}-overload.log")
            group.append(fleet.Contender(name, cfg.label, launch))
    seconds = QUICK_OVERLOAD_S if settings.quick else OVERLOAD_S
    body = point.bodies["json"]
    out = []
    with fleet.running(group) as live:
        for c, server in live:
            fleet.preflight(server, c, point)
        capacity = measure_capacity([x for x in live if x[0].kind != CAPPED], body, settings)
        for c, _ in live:  # the cap is a policy on the same server: offered the same load
            if c.kind == CAPPED and ("ours", c.config) in capacity:
                capacity[(CAPPED, c.config)] = capacity[("ours", c.config)]
        best = best_configs(live, capacity)
        for m, multiple in enumerate(MULTIPLES):
            for c, server in fleet.rotated(best, m):
                cap = capacity[(c.kind, c.config)]
                rec = fixed_rate(server, body, multiple * cap, seconds, settings.workdir)
                rec.update(axis="overload", point=f"{multiple:g}x", multiple=multiple, server=c.kind, config=c.config)
                rec["capacity_rps"] = cap
                log(
                    f"  overload {multiple:g}x {c.label:30} offered {rec['offered_rps']:8.1f} goodput "
                    f"{rec['goodput_rps']:8.1f} req/s p99 {rec['p99_ms']:8.2f} ms statuses {rec['statuses']} "
                    f"in flight at the end {rec['in_flight_at_end']}"
                )
                out.append(rec)
    return out


def measure_capacity(
    live: list[tuple[fleet.Contender, Server]], body: fleet.Body, settings: fleet.Settings
) -> dict[tuple[str, str], float]:
    """Each server's best goodput over the rounds, from the same CLIENTS connections with no rate
    set (each sends its next request once answered), rounds rotating who goes first."""
    capacity: dict[tuple[str, str], float] = {}
    seconds = 2 * settings.duration + 1  # longer than a wrk point: the estimate sets every offered rate
    for r in range(settings.rounds):
        for c, server in fleet.rotated(live, r):
            if r == 0:  # always: a server's first second under load is far below its capacity
                fixed_rate(server, body, None, max(1, settings.warmup), settings.workdir)
            rec = fixed_rate(server, body, None, seconds, settings.workdir)
            log(f"  overload capacity {c.label:30} {rec['goodput_rps']:9.1f} req/s statuses {rec['statuses']}")
            key = (c.kind, c.config)
            if set(rec["statuses"]) == {"200"}:
                capacity[key] = max(capacity.get(key, 0.0), rec["goodput_rps"])
    return capacity


def best_configs(
    live: list[tuple[fleet.Contender, Server]], capacity: dict[tuple[str, str], float]
) -> list[tuple[fleet.Contender, Server]]:
    """Each server kind once, in the config where it had the higher capacity."""
    best: dict[str, tuple[fleet.Contender, Server]] = {}
    for c, server in live:
        rps = capacity.get((c.kind, c.config))
        if rps and (c.kind not in best or rps > capacity[(c.kind, best[c.kind][0].config)]):
            best[c.kind] = (c, server)
    return list(best.values())


def fixed_rate(server: Server, body: fleet.Body, rate: float | None, seconds: int, workdir: Path) -> dict[str, Any]:
    """`rate` requests a second (None: as fast as answered) for `seconds` from CLIENTS
    connections (h2load, HTTP/1.1)."""
    log_file = workdir / "h2load-overload.log"
    log_file.unlink(missing_ok=True)  # h2load appends
    cmd = [
        "h2load",
        "--h1",
        f"--clients={CLIENTS}",
        "--max-concurrent-streams=1",
        "--threads=1",
        *([f"--rps={rate / CLIENTS:.4f}"] if rate else []),
        f"--duration={seconds}",
        f"--log-file={log_file}",
        f"--data={body.path}",
        "--header=content-type: application/json",
        f"{server.http_url}/v2/models/{common.MODEL_NAME}/infer",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    counts = _H2_REQS.search(proc.stdout)
    if proc.returncode != 0 or not counts:
        raise RuntimeError(f"h2load failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    _, started, done, *_ = map(int, counts.groups())  # h2load times no request out: ends with some in flight
    return summarise(np.loadtxt(log_file, dtype=np.int64, ndmin=2), rate or 0.0, seconds, started - done)


def summarise(log: np.ndarray, rate: float, seconds: int, in_flight: int) -> dict[str, Any]:
    """h2load's per-request log (start µs, status, elapsed µs) as goodput, p99 and status counts."""
    status = log[:, 1] if log.size else np.array([], dtype=np.int64)
    ok = log[status == 200, 2] / 1e3 if log.size else np.array([])
    values, counts = np.unique(status, return_counts=True)
    return {
        "offered_rps": rate,
        "seconds": seconds,
        "sent": int(len(status)) + in_flight,
        "goodput_rps": len(ok) / seconds,
        "p50_ms": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
        "p99_ms": float(np.percentile(ok, 99)) if len(ok) else float("nan"),
        "statuses": {str(int(v)): int(n) for v, n in zip(values, counts, strict=True)},
        "in_flight_at_end": in_flight,
    }
