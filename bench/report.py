"""Targets, Markdown table and PNG chart from a bench result (`python -m bench.report results/latest.json`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

LOAD_TITLES = {"1row_c1": "1 row, c=1", "1row_c16": "1 row, c=16", "100rows_c4": "100 rows, c=4"}
PROTO_TITLES = {"rest": "REST", "grpc": "gRPC"}
SHADOW_MARK = " +shadow "  # config label of this runtime with a shadow model (bench.run --shadow)
COPY_MARK = " (A/A copy)"  # an identical server beside it: the noise of the same comparison
SHADOW_MAX_RPS_LOSS = 0.10  # the target: at most 10 % fewer req/s with the shadow on
LOOKUP_MARK = " +lookup "  # this runtime answering requests by id from PostgreSQL (bench.run --lookup)
LOOKUP_LOAD = "1row_c16"  # the one load the lookup servers run (1 id at concurrency 16)
BASELINE_PREFIX = "ours@"  # server name of this runtime at an earlier revision (bench.run --baseline REV)
BASELINE_TOLERANCE = 0.05  # the "within 5 % of today": req/s and server CPU per request
BASELINE_KEYS = ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req")
# Server kinds in the order of the scenario table (the baseline's names all share its prefix).
SERVER_ORDER = ("ours", BASELINE_PREFIX, "stock", "kserve", "floor")

Record = dict[str, Any]  # a bench result, one of its runs or rounds, or a row computed from them (JSON)


def _ok_runs(result: Record) -> list[Record]:
    return [r for r in result["runs"] if "failed" not in r and "rps" in r]


def _variant(run: Record) -> bool:
    """A run of the shadow-cost or lookup-cost comparison, not a configuration competing for "best"."""
    return any(mark in run["config"] for mark in (SHADOW_MARK, COPY_MARK, LOOKUP_MARK))


def _best(runs: list[Record], server: str, proto: str, load: str, key: str, lower: bool = False) -> Record | None:
    cands = [
        r
        for r in runs
        if r["server"] == server
        and r["protocol"] == proto
        and r["load"] == load
        and r.get("errors_all_rounds", r.get("errors", 0)) == 0
        and not _variant(r)
    ]
    if not cands:
        return None
    return (min if lower else max)(cands, key=lambda r: r[key])


def _target(
    name: str,
    o: Record | None,
    s: Record | None,
    key: str,
    threshold: float,
    higher_is_better: bool,
    vs: str = "stock",
) -> list[Record]:
    """One target row, ours against `vs` on `key` (none where either side has no result)."""
    if not o or not s or not s[key]:
        return []
    ratio = o[key] / s[key]
    return [
        {
            "target": name,
            "metric": key,
            "ours": o[key],
            "ours_config": o["config"],
            vs: s[key],
            f"{vs}_config": s["config"],
            "vs": vs,
            "ratio": ratio,
            "threshold": threshold,
            "higher_is_better": higher_is_better,
            "pass": ratio >= threshold if higher_is_better else ratio <= threshold,
        }
    ]


def _linear_targets(runs: list[Record], protos: list[str]) -> list[Record]:
    """The shipped linear model (the folded fast path): against stock and KServe, by protocol."""
    return [t for proto in protos for t in _linear_targets_of(runs, proto)]


def _linear_targets_of(runs: list[Record], proto: str) -> list[Record]:
    P, out = PROTO_TITLES[proto], []
    o, s = _best(runs, "ours", proto, "1row_c16", "rps"), _best(runs, "stock", proto, "1row_c16", "rps")
    out += _target(f"{P} 1 row c=16: req/s >= 2x stock", o, s, "rps", 2.0, True)
    o, s = (_best(runs, k, proto, "1row_c16", "p99_ms", lower=True) for k in ("ours", "stock"))
    out += _target(f"{P} 1 row c=16: p99 <= 0.5x stock", o, s, "p99_ms", 0.5, False)
    o, s = (_best(runs, k, proto, "1row_c1", "p50_ms", lower=True) for k in ("ours", "stock"))
    out += _target(f"{P} 1 row c=1: p50 <= 0.5x stock", o, s, "p50_ms", 0.5, False)
    o, s = (_best(runs, k, proto, "100rows_c4", "rows_per_s") for k in ("ours", "stock"))
    out += _target(f"{P} 100 rows c=4: rows/s >= 2x stock", o, s, "rows_per_s", 2.0, True)
    for load in LOAD_TITLES:
        o, k = _best(runs, "ours", proto, load, "rps"), _best(runs, "kserve", proto, load, "rps")
        out += _target(f"{P} {LOAD_TITLES[load]}: req/s >= 1.5x KServe", o, k, "rps", 1.5, True, vs="kserve")
    for load in LOAD_TITLES:
        o, s = (_best(runs, k, proto, load, "server_cpu_us_per_req", lower=True) for k in ("ours", "stock"))
        out += _target(
            f"{P} {LOAD_TITLES[load]}: server CPU/req <= 0.4x stock", o, s, "server_cpu_us_per_req", 0.4, False
        )
    return out


def _forest_targets(runs: list[Record], protos: list[str]) -> list[Record]:
    """A model the runtime serves with scikit-learn itself: the target is never being slower."""
    out = []
    for proto in protos:
        for load in LOAD_TITLES:
            title = f"{PROTO_TITLES[proto]} {LOAD_TITLES[load]}"
            o, s = _best(runs, "ours", proto, load, "rps"), _best(runs, "stock", proto, load, "rps")
            out += _target(f"{title}: req/s >= 1x stock", o, s, "rps", 1.0, True)
            o, s = (_best(runs, k, proto, load, "p50_ms", lower=True) for k in ("ours", "stock"))
            out += _target(f"{title}: p50 <= 1x stock", o, s, "p50_ms", 1.0, False)
    return out


# Issue 26: this runtime's best req/s over the stock runtime's best (sent PandasCodec requests) per load.
COLUMNS_RPS_TARGETS = {"1row_c1": 2.0, "1row_c16": 2.0, "100rows_c4": 1.5}


def _columns_targets(runs: list[Record], protos: list[str]) -> list[Record]:
    """The mixed-type pipeline (bench.run --model columns): req/s against stock's best config, by
    load with the protocols side by side."""
    out = []
    for load, threshold in COLUMNS_RPS_TARGETS.items():
        for proto in protos:  # REST and gRPC of a load side by side
            o, s = _best(runs, "ours", proto, load, "rps"), _best(runs, "stock", proto, load, "rps")
            out += _target(
                f"{PROTO_TITLES[proto]} {LOAD_TITLES[load]}: req/s >= {threshold:g}x stock",
                o,
                s,
                "rps",
                threshold,
                True,
            )
    return out


# The targets each bench model (bench.run --model) is held to.
MODEL_TARGETS = {"linear": _linear_targets, "forest": _forest_targets, "columns": _columns_targets}


def evaluate_targets(result: Record) -> list[Record]:
    """The model's targets, each comparing each server in the settings it runs best with for that
    metric (max req/s or rows/s, min p50 or p99), in the same run."""
    runs = _ok_runs(result)
    protos = sorted({r["protocol"] for r in runs}, key=lambda p: list(PROTO_TITLES).index(p))
    return MODEL_TARGETS[result["meta"].get("model", "linear")](runs, protos)


def _paired(base: Record, other: Record, key: str) -> list[float]:
    """other / base round by round (the servers of a group run back to back within a round)."""
    by_round = {r["round"]: r for r in base["rounds"]}
    return [
        o[key] / by_round[o["round"]][key]
        for o in other["rounds"]
        if o["round"] in by_round and by_round[o["round"]][key]
    ]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _best_value(run: Record, key: str) -> float:
    """The run's best round for this metric: highest req/s, lowest latency and CPU/request."""
    pick = max if key == "rps" else min
    value: float = pick(r[key] for r in run["rounds"] if r.get(key) is not None)
    return value


def _best_ratio(base: Record, other: Record, key: str) -> float:
    """other's best round over base's best round (highest req/s, lowest p99 and CPU/request)."""
    return _best_value(other, key) / _best_value(base, key)


def _ours(runs: list[Record], config: str, proto: str, load: str) -> Record | None:
    """This runtime's run in that config (label), protocol and load."""
    return next(
        (
            r
            for r in runs
            if r["server"] == "ours" and r["config"] == config and r["protocol"] == proto and r["load"] == load
        ),
        None,
    )


def shadow_costs(result: Record) -> list[Record]:
    """Per protocol and load: the shadowed server and the A/A copy, each against the plain server.
    Req/s is judged on best rounds, like every other comparison of the bench: on this shared machine
    the same server's CPU per request jumps between rounds with where the scheduler puts it, which
    pairing rounds does not cancel. p99 is judged on the median of the per-round ratios: one server's
    p99 varies widely over rounds, and a best round is one lucky round, so best-round p99 ratios of two
    identical servers differ well beyond the target (docs/performance.md, "Noise")."""
    runs, out = _ok_runs(result), []
    for shadowed in (r for r in runs if SHADOW_MARK in r["config"]):
        config, proto, load = shadowed["config"].split(SHADOW_MARK)[0], shadowed["protocol"], shadowed["load"]
        base, copy = _ours(runs, config, proto, load), _ours(runs, config + COPY_MARK, proto, load)
        if base is None:
            continue
        row = {"protocol": shadowed["protocol"], "load": shadowed["load"], "config": shadowed["config"]}
        for name, other in (("shadow", shadowed), ("copy", copy)):
            if other is not None:
                row[name] = {k: _best_ratio(base, other, k) for k in ("rps", "p99_ms", "server_cpu_us_per_req")}
                row[name]["rps_paired_median"] = _median(_paired(base, other, "rps"))
                row[name]["p99_paired_median"] = _median(_paired(base, other, "p99_ms"))
                row[name]["rounds"] = len(other["rounds"])
        noise = abs(row["copy"]["p99_paired_median"] - 1) if "copy" in row else 0.0
        row["p99_limit"] = 1 + max(SHADOW_MAX_RPS_LOSS, noise)
        row["pass"] = (
            row["shadow"]["rps"] >= 1 - SHADOW_MAX_RPS_LOSS and row["shadow"]["p99_paired_median"] <= row["p99_limit"]
        )
        out.append(row)
    return out


def floor_ratios(result: Record) -> list[Record]:
    """Per protocol and load: the transport floor (bench/floor_server.py) and this runtime against
    stock's best config, and this runtime against the floor. What no server on uvicorn and grpc.aio
    can beat here: where the floor itself is under 2x stock's best req/s (or over 0.4x its CPU per
    request), so is every runtime inside MLServer."""
    runs, out = _ok_runs(result), []
    for proto in PROTO_TITLES:
        for load in LOAD_TITLES:
            key = "rows_per_s" if load.startswith("100") else "rps"
            floor, ours, stock = (_best(runs, k, proto, load, key) for k in ("floor", "ours", "stock"))
            # the same candidates as above, so these are None exactly when those are
            floor_cpu, ours_cpu, stock_cpu = (
                _best(runs, k, proto, load, "server_cpu_us_per_req", lower=True) for k in ("floor", "ours", "stock")
            )
            if floor is None or stock is None or ours is None:
                continue
            if floor_cpu is None or ours_cpu is None or stock_cpu is None:
                continue
            out.append(
                {
                    "protocol": proto,
                    "load": load,
                    "key": key,
                    "floor": floor[key] / stock[key],
                    "ours": ours[key] / stock[key],
                    "ours_of_floor": ours[key] / floor[key],
                    "floor_cpu": floor_cpu["server_cpu_us_per_req"] / stock_cpu["server_cpu_us_per_req"],
                    "ours_cpu": ours_cpu["server_cpu_us_per_req"] / stock_cpu["server_cpu_us_per_req"],
                    "floor_cpu_us": floor_cpu["server_cpu_us_per_req"],
                }
            )
    return out


def _floor_lines(result: Record) -> list[str]:
    rows = floor_ratios(result)
    if not rows:
        return []
    lines = [
        "",
        "## Transport floor (bare uvicorn and grpc.aio answering from a cache, bench/floor_server.py)",
        "",
        "Each ÷ stock's best config (req/s or rows/s: its best round; CPU per request: its lowest). The floor "
        "has no routing, validation, middleware, interceptor, metrics or logging: no runtime inside MLServer "
        "or KServe can be faster or cheaper. A floor under 2× (or CPU over 0.4×) puts that target out of "
        "reach of every server on this stack.",
        "",
        "| load | proto | floor ÷ stock best | ours ÷ stock best | ours ÷ floor | floor CPU/req ÷ stock "
        "| ours CPU/req ÷ stock | floor CPU µs/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {LOAD_TITLES[r['load']]} | {PROTO_TITLES[r['protocol']]} | {r['floor']:.2f} | {r['ours']:.2f} "
            f"| {r['ours_of_floor']:.2f} | {r['floor_cpu']:.2f} | {r['ours_cpu']:.2f} | {r['floor_cpu_us']:.0f} |"
        )
    return lines


def _shadow_lines(result: Record) -> list[str]:
    costs = shadow_costs(result)
    if not costs:
        return []
    lines = [
        "",
        "## Shadow cost (this runtime with vs without a shadow model)",
        "",
        "Ratios with ÷ without of the best rounds, and the medians of the per-round ratios (paired); the "
        "A/A row is an identical server without the shadow, the noise of the same comparison. Target: req/s "
        f"(best rounds) ≥ {1 - SHADOW_MAX_RPS_LOSS:.2f} and p99 (paired median) within the larger of 10 % "
        "and the A/A's.",
        "",
        "| load | proto | compared | req/s | p99 | CPU/req | req/s, paired median | p99, paired median | rounds | |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in costs:
        for name, label in (("shadow", c["config"]), ("copy", "A/A copy")):
            if name in c:
                v = c[name]
                verdict = ("PASS" if c["pass"] else "FAIL") if name == "shadow" else "noise"
                lines.append(
                    f"| {LOAD_TITLES[c['load']]} | {PROTO_TITLES[c['protocol']]} | {label} | {v['rps']:.2f} "
                    f"| {v['p99_ms']:.2f} | {v['server_cpu_us_per_req']:.2f} | {v['rps_paired_median']:.2f} "
                    f"| {v['p99_paired_median']:.2f} | {v['rounds']} | {verdict} |"
                )
    return lines


LOOKUP_KEYS = ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_req", "store_cpu_us_per_req")


def lookup_costs(result: Record) -> list[Record]:
    """Per protocol: this runtime sent the features (vector) and, in the same config, sent the id
    with the cache warm and with none (cold). Each metric from the server's best round, as in
    shadow_costs; `added_cpu_us` = lookup − vector server CPU per request."""
    runs, out = _ok_runs(result), []
    for proto in PROTO_TITLES:
        lookups = [r for r in runs if LOOKUP_MARK in r["config"] and r["protocol"] == proto]
        if not lookups:
            continue
        config = lookups[0]["config"].split(LOOKUP_MARK)[0]
        base = _ours(runs, config, proto, LOOKUP_LOAD)
        row = {"protocol": proto, "config": config, "servers": []}
        for name, run in [("vector", base)] + [(r["config"].split(LOOKUP_MARK)[1], r) for r in lookups]:
            if run is None:
                continue
            best = {k: _best_value(run, k) for k in LOOKUP_KEYS if any(k in r for r in run["rounds"])}
            cpus = [r["server_cpu_us_per_req"] for r in run["rounds"] if "server_cpu_us_per_req" in r]
            best.update(
                name=name,
                errors=run.get("errors_all_rounds", run.get("errors", 0)),
                rounds=len(run["rounds"]),
                cpu_spread=max(cpus) - min(cpus),
            )  # the noise the added CPU has to be read against
            if base is not None and name != "vector":
                best["added_cpu_us"] = best["server_cpu_us_per_req"] - _best_value(base, "server_cpu_us_per_req")
                best["p99_vs_vector"] = best["p99_ms"] / _best_value(base, "p99_ms")
            row["servers"].append(best)
        out.append(row)
    return out


def _lookup_lines(result: Record) -> list[str]:
    costs = lookup_costs(result)
    if not costs:
        return []
    about = result["meta"].get("lookup", {})
    lines = [
        "",
        "## Feature lookup (1 id, c=16)",
        "",
        f"This runtime ({costs[0]['config']}) sent the features of one row (vector), or the id "
        f"`{about.get('entity_id', '?')}` (lookup) whose features it reads from PostgreSQL {about.get('postgres', '')} "
        f"(table `{about.get('table', '?')}`, one prepared `= ANY($1)` query through the runtime's pool): warm = the "
        "runtime's TTL cache answers (one query per 30 s), cold = `cache_ttl_s: 0`, every request "
        "queries the database. Each metric from the server's best round (highest req/s, lowest p50, p99 and "
        "CPU/request), as in the shadow table; CPU spread = its highest minus lowest round, the noise to read "
        "the added CPU against. Added = lookup − vector server CPU per request (the runtime's process tree). "
        "PostgreSQL CPU is the database's own (postmaster and its backends): not part of the runtime's process "
        "tree, nor of the bg cores.",
        "",
        "| proto | request | req/s | p50 ms | p99 ms | p99 ÷ vector | srv CPU µs/req | CPU spread over rounds "
        "| added srv CPU µs/req | PostgreSQL CPU µs/req | errors | rounds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary = []
    for c in costs:
        P = PROTO_TITLES[c["protocol"]]
        for v in c["servers"]:
            request = v["name"] if v["name"] == "vector" else "lookup " + v["name"]
            added = f"{v['added_cpu_us']:+,.0f}" if "added_cpu_us" in v else ""
            lines.append(
                f"| {P} | {request} | {_f(v['rps'])} | {_f(v['p50_ms'], 2)} | {_f(v['p99_ms'], 2)} "
                f"| {_f(v.get('p99_vs_vector'), 2)} | {_f(v['server_cpu_us_per_req'], 0)} "
                f"| {_f(v['cpu_spread'], 0)} | {added} | {_f(v.get('store_cpu_us_per_req'), 0)} "
                f"| {v['errors']} | {v['rounds']} |"
            )
        by = {v["name"]: v for v in c["servers"]}
        if {"vector", "warm", "cold"} <= by.keys():
            w, k = by["warm"], by["cold"]
            summary.append(
                f"{P}: a lookup adds {w['added_cpu_us']:+.0f} µs of server CPU per request warm, "
                f"{k['added_cpu_us']:+.0f} µs cold (and {_f(k.get('store_cpu_us_per_req'), 0)} µs in PostgreSQL); "
                f"p99 {w['p99_ms']:.2f} ms warm, {k['p99_ms']:.2f} ms cold, {by['vector']['p99_ms']:.2f} ms "
                "by vector."
            )
    if summary:
        lines += ["", " ".join(summary)]
    return lines


def baseline_ratios(result: Record) -> list[Record]:
    """Per protocol and load: this runtime ÷ its baseline revision (bench.run --baseline) in the
    baseline's config, same run; each metric from each server's best round (highest req/s, lowest p50,
    p99 and CPU/request), as in the shadow and lookup tables. PASS: req/s >= (1 - tolerance) and server
    CPU per request <= (1 + tolerance) times the baseline's, and no errors in any round; p99 above
    1 + tolerance is flagged but does not fail (a best-round p99 is one lucky round). A scenario where
    either server has no result fails."""
    about = result["meta"].get("baseline")
    if not about:
        return []
    tol, config, runs = about["tolerance"], about["config"], _ok_runs(result)
    pairs = [
        (r["protocol"], r["load"])
        for r in result["runs"]
        if r["server"] in ("ours", about["server"]) and r["config"] == config and "load" in r
    ]
    out = []
    for proto, load in sorted(
        set(pairs), key=lambda p: (list(LOAD_TITLES).index(p[1]), list(PROTO_TITLES).index(p[0]))
    ):
        row: Record = {"protocol": proto, "load": load, "config": config}
        ours = _ours(runs, config, proto, load)
        base = next(
            (
                r
                for r in runs
                if r["server"] == about["server"] and (r["config"], r["protocol"], r["load"]) == (config, proto, load)
            ),
            None,
        )
        if ours is None or base is None:
            row.update(missing="ours" if ours is None else about["server"], p99_flag=False)
            row["pass"] = False
        else:
            row.update({k: _best_ratio(base, ours, k) for k in BASELINE_KEYS})
            row["errors"] = ours.get("errors_all_rounds", ours.get("errors", 0))
            row["baseline_errors"] = base.get("errors_all_rounds", base.get("errors", 0))
            row["p99_flag"] = row["p99_ms"] > 1 + tol
            row["pass"] = row["rps"] >= 1 - tol and row["server_cpu_us_per_req"] <= 1 + tol and row["errors"] == 0
        out.append(row)
    return out


def _baseline_lines(result: Record) -> list[str]:
    rows = baseline_ratios(result)
    if not rows:
        return []
    about = result["meta"]["baseline"]
    tol = about["tolerance"]
    lines = [
        "",
        f"## Baseline (ours ÷ {about['server']}, commit {about['commit'][:12]}, {about['config']}, same run)",
        "",
        f"This runtime ÷ its code at `{about['rev']}` (that revision's runtime/ and settings.json, the same "
        "model directory), each from its best round (highest req/s, lowest p50, p99 and CPU/request). PASS: "
        f"req/s ≥ {1 - tol:.2f} and server CPU/request ≤ {1 + tol:.2f}, no errors; a p99 above {1 + tol:.2f} is "
        "flagged (p99 ↑) but does not fail: one round's p99 is too noisy to judge by.",
        "",
        "| load | proto | req/s | p50 | p99 | CPU/req | errors (ours / baseline) | |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        head = f"| {LOAD_TITLES[r['load']]} | {PROTO_TITLES[r['protocol']]} "
        if "missing" in r:
            lines.append(head + f"| | | | | | FAIL: no result from {r['missing']} |")
            continue
        verdict = ("PASS" if r["pass"] else "FAIL") + (" (p99 ↑)" if r["p99_flag"] else "")
        lines.append(
            head
            + f"| **{r['rps']:.3f}** | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | **{r['server_cpu_us_per_req']:.3f}** "
            f"| {r['errors']} / {r['baseline_errors']} | {verdict} |"
        )
    passed = sum(r["pass"] for r in rows)
    lines += ["", f"Baseline: {passed} of {len(rows)} scenarios PASS."]
    return lines


def _server_rank(server: str) -> int:
    return SERVER_ORDER.index(BASELINE_PREFIX if server.startswith(BASELINE_PREFIX) else server)


def _same_config(runs: list[Record], r: Record, server: str = "stock") -> Record | None:
    for s in runs:
        if (
            s["server"] == server
            and s["config"] == r["config"]
            and s["protocol"] == r["protocol"]
            and s["load"] == r["load"]
        ):
            return s
    return None


def _f(v: object, nd: int = 1) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:,.{nd}f}"
    return str(v)


def markdown(result: Record) -> str:
    meta, runs = result["meta"], _ok_runs(result)
    lines = [
        f"# Benchmark {meta['stamp']}",
        "",
        f"Command: `{meta['command'].strip()}` — per scenario {meta.get('rounds', 1)} round(s) "
        f"of {meta['duration_s']} s "
        f"(best round kept; {meta['warmup_s']} s warmup before the first), {meta['wall_s']} s in all, "
        f"{meta['cpus']} CPUs, load average at end {', '.join(f'{x:.2f}' for x in meta['loadavg_end'])}. "
        "Loopback only; one server under load at a time. "
        f"Adaptive batching (+batch): max_batch_size {meta['max_batch_size']}, max_batch_time "
        f"{meta['max_batch_time']} s. pw = MLServer `parallel_workers` (default = 1).",
        f"Tools: {', '.join(f'{k} {v}' for k, v in meta['tools'].items() if v)}.",
        "",
        "## In-process floor (pipeline.predict, same artifacts)",
        "",
        "| rows | p50 µs/call | p99 µs/call | calls/s (1 core) | rows/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, f in result["floor"].items():
        lines.append(f"| {n} | {_f(f['p50_us'])} | {_f(f['p99_us'])} | {_f(f['rps'], 0)} | {_f(f['rows_per_s'], 0)} |")
    lines += [
        "",
        "## Targets (each server in the config it runs best with for that metric, same run)",
        "",
        "| target | ours | config | baseline | config | ratio | needed | |",
        "|---|---:|---|---:|---|---:|---:|---|",
    ]
    for t in result.get("targets", []):
        vs = t["vs"]
        lines.append(
            f"| {t['target']} | {_f(t['ours'], 2)} | {t['ours_config']} | {_f(t[vs], 2)} | {t[vs + '_config']} "
            f"| {t['ratio']:.2f} | {'>=' if t['higher_is_better'] else '<='} {t['threshold']} "
            f"| {'PASS' if t['pass'] else 'FAIL'} |"
        )
    lines += [
        "",
        "## All scenarios",
        "",
        "Ratios are this runtime ÷ stock in the same config (req/s: higher is better; latency: lower is "
        "better). CPU is per completed request: server = the server's process tree, client = wrk/h2load; "
        "bg cores = CPU used meanwhile by everything else on the machine (other sessions' work); "
        "CPU/req ÷ stock is the least noise-sensitive ratio (server CPU per request, lower is better).",
        "",
    ]
    head = (
        "| load | proto | server | config | req/s | rows/s | p50 ms | p90 ms | p99 ms | errors | "
        "srv CPU µs/req | cli CPU µs/req | bg cores | req/s ÷ stock | p50 ÷ stock | p99 ÷ stock | CPU/req ÷ stock |"
    )
    lines += [head, "|" + "---|" * 4 + "---:|" * 13]
    for load in LOAD_TITLES:
        for proto in PROTO_TITLES:
            sel = sorted(
                (r for r in runs if r["load"] == load and r["protocol"] == proto),
                key=lambda r: (
                    r["config"] if r["server"] not in ("kserve", "floor") else "~",
                    _server_rank(r["server"]),
                ),
            )
            for r in sel:
                ratios = ["", "", "", ""]
                s = _same_config(runs, r) if _server_rank(r["server"]) < _server_rank("stock") else None
                if s and s["rps"]:
                    ratios = [
                        f"**{r['rps'] / s['rps']:.2f}**",
                        f"{r['p50_ms'] / s['p50_ms']:.2f}",
                        f"{r['p99_ms'] / s['p99_ms']:.2f}",
                        f"{r['server_cpu_us_per_req'] / s['server_cpu_us_per_req']:.2f}",
                    ]
                lines.append(
                    f"| {LOAD_TITLES[load]} | {PROTO_TITLES[proto]} | {r['server']} | {r['config']} | {_f(r['rps'])} "
                    f"| {_f(r['rows_per_s'], 0)} | {_f(r['p50_ms'], 2)} | {_f(r['p90_ms'], 2)} | {_f(r['p99_ms'], 2)} "
                    f"| {r.get('errors_all_rounds', r['errors'])} | {_f(r['server_cpu_us_per_req'], 0)} "
                    f"| {_f(r['client_cpu_us_per_req'], 0)} "
                    f"| {_f(r.get('other_cpu_cores'), 2)} "
                    f"| {' | '.join(ratios)} |"
                )
    lines += _baseline_lines(result)
    lines += _floor_lines(result)
    lines += _shadow_lines(result)
    lines += _lookup_lines(result)
    failed = [r for r in result["runs"] if "failed" in r]
    if failed:
        lines += ["", "## Failed", ""]
        lines += [
            f"- {r['server']} {r.get('config', '')} {r.get('protocol', '')} {r.get('load', '')}: `{r['failed'][:300]}`"
            for r in failed
        ]
    notes = sorted({r["note"] for r in runs if r.get("note")})
    if notes:
        lines += ["", "Notes: " + "; ".join(notes)]
    return "\n".join(lines) + "\n"


def chart(result: Record, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    # Lookup runs send another request (an id) on one load only: their own table, not bars in every panel.
    runs = [r for r in _ok_runs(result) if LOOKUP_MARK not in r["config"]]
    protos = [p for p in PROTO_TITLES if any(r["protocol"] == p for r in runs)]
    loads = [load for load in LOAD_TITLES if any(r["load"] == load for r in runs)]
    if not protos or not loads:
        return None
    configs = []
    for r in runs:
        if r["server"] in ("ours", "stock") and r["config"] not in configs:
            configs.append(r["config"])
    fig, axes = plt.subplots(len(protos), len(loads), figsize=(5.2 * len(loads), 4.2 * len(protos)), squeeze=False)
    colors = {"ours": "#1f77b4", "stock": "#ff7f0e", "kserve": "#2ca02c"}
    for i, proto in enumerate(protos):
        for j, load in enumerate(loads):
            ax = axes[i][j]
            key = "rows_per_s" if load.startswith("100") else "rps"
            sel = {(r["server"], r["config"]): r for r in runs if r["protocol"] == proto and r["load"] == load}
            w = 0.38
            for x, cfg in enumerate(configs):
                o, s = sel.get(("ours", cfg)), sel.get(("stock", cfg))
                if o:
                    ax.bar(x - w / 2, o[key], w, color=colors["ours"], label="ours" if x == 0 else None)
                if s:
                    ax.bar(x + w / 2, s[key], w, color=colors["stock"], label="stock" if x == 0 else None)
                if o and s and s[key]:
                    ax.annotate(
                        f"{o[key] / s[key]:.2f}x",
                        (x, max(o[key], s[key])),
                        ha="center",
                        va="bottom",
                        fontsize=9,
                        fontweight="bold",
                    )
            ks = [r for (srv, _), r in sel.items() if srv == "kserve"]
            labels = list(configs)
            if ks:
                ax.bar(len(configs), ks[0][key], w, color=colors["kserve"], label="kserve")
                labels.append("kserve")
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(
                [
                    label.replace("pw=", "pw ").replace(" +batch", "\n+batch").replace("kserve workers=1", "kserve")
                    for label in labels
                ],
                fontsize=8,
            )
            ax.set_title(f"{PROTO_TITLES[proto]} — {LOAD_TITLES[load]}", fontsize=10)
            ax.set_ylabel("rows/s" if key == "rows_per_s" else "req/s")
            ax.margins(y=0.15)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.suptitle(f"pipeline-runtime benchmark {result['meta']['stamp']} (labels: ours ÷ stock, same config)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    src = Path(argv[0]) if argv else Path(__file__).parent / "results" / "latest.json"
    result = json.loads(src.read_text())
    result["targets"] = evaluate_targets(result)
    result["baseline"] = baseline_ratios(result)
    md = markdown(result)
    src.with_suffix(".md").write_text(md)
    src.write_text(json.dumps(result, indent=1, default=float) + "\n")
    chart(result, src.with_suffix(".png"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
