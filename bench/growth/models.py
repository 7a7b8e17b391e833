"""Axis `models`: 1, 10 and 100 copies of the linear pipeline loaded in one server — memory (RSS
and PSS of the process tree, once ready), the time from process start to every model READY, and
req/s of 1-row requests sent round-robin to all of them (wrk, concurrency 2). One server at a
time, started fresh for each count and round, in rotating order; the best of the rounds kept."""

from __future__ import annotations

import time
from typing import Any

from bench import common
from bench.growth import fleet
from bench.scenarios import CONFIGS, log

COUNTS = (1, 10, 100)
SETTLE_S = 1.0  # after ready, before memory is read: lazily started threads and workers are up


def names(count: int) -> list[str]:
    return [f"m{i:03d}" for i in range(count)]


def run(settings: fleet.Settings) -> list[dict[str, Any]]:
    fitted = common.bench_pipeline("linear")
    point = fleet.make_point(settings, "fleet 1 row", common.bench_rows(1), fitted)
    out = []
    for count in COUNTS:
        served = names(count)
        group = []
        for slug in settings.configs:
            cfg = CONFIGS[slug]
            for kind in ("ours", "stock"):
                root = fleet.fleet_dir(kind, settings, cfg, fitted, served, f"models{count}")
                log_path = settings.workdir / "logs" / f"{kind}-{slug}-models{count}.log"
                group.append(fleet.Contender(kind, cfg.label, common.mlserver_launcher(root, log_path, models=served)))
        samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in range(settings.rounds):
            for c in fleet.rotated(group, r):
                samples.setdefault((c.kind, c.config), []).append(one(c, served, point, settings))
        out += [summary(count, kind, config, recs) for (kind, config), recs in samples.items()]
    return out


def resummarise(record: dict[str, Any]) -> dict[str, Any]:
    """A saved record summarised again from its rounds (bench.growth --report)."""
    return summary(record["models"], record["server"], record["config"], record["rounds"])


def one(c: fleet.Contender, served: list[str], point: fleet.Point, settings: fleet.Settings) -> dict[str, Any]:
    server, timing = fleet.launch_timed(c.launch, served)
    try:
        time.sleep(SETTLE_S)
        memory = fleet.memory_mb(server)
        for name in {served[0], served[-1]}:
            fleet.preflight(server, c, point, name)
        load = fleet.wrk_point(server, point.bodies["json"], 1, settings.duration, settings, models=served)
    finally:
        server.stop()
    rec = {**timing, **memory, "rps": load["rps"], "p99_ms": load["p99_ms"], "errors": load["errors"]}
    log(
        f"  models {len(served):>3} {c.label:26} ready {rec['ready_s']:6.2f} s RSS {rec['rss_mb']:8.1f} MB "
        f"PSS {rec['pss_mb']:8.1f} MB {rec['rps']:8.1f} req/s err {rec['errors']}"
    )
    return rec


def summary(count: int, kind: str, config: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds' shortest time to ready, lowest memory and best req/s: on a shared machine one
    start in a few takes several times as long (the cold axis gives medians of 5)."""
    return {
        "axis": "models",
        "point": f"{count} model" + ("s" if count > 1 else ""),
        "models": count,
        "server": kind,
        "config": config,
        "ready_s": min(r["ready_s"] for r in recs),
        "rss_mb": min(r["rss_mb"] for r in recs),
        "pss_mb": min(r["pss_mb"] for r in recs),
        "rps": max(r["rps"] for r in recs),
        "errors_all_rounds": sum(r["errors"] for r in recs),
        "rounds": recs,
    }
