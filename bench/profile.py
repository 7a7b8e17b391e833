"""Where the server's time per request goes: MLServer HTTP/gRPC layers vs codecs vs runtime code.

    python -m bench.profile                      # ours + stock, REST + gRPC, 1 row c=16 and 100 rows c=4
    python -m bench.profile --servers ours --loads 1row_c16 --duration 4
    python -m bench.profile --model columns --protocols grpc --loads 1row_c16   # another bench model

For each server (parallel_workers 0, no adaptive batching, so everything runs on the event-loop thread):
1. an unprofiled run of each scenario gives req/s and the server's CPU µs per request (psutil);
2. a second server started under cProfile (bench/_profiled_mlserver.py, switched on only while the
   measured load runs) gives the split of the main thread's Python time by layer: self time grouped by
   package, with C built-ins and stdlib helpers charged to the package that called them; plus the
   inclusive time of key functions (request parse/validate, dataplane, predict, encode, serialize).
cProfile inflates code with many small calls more than code with few, so shares are indicative; the
µs/request column applies each share to the unprofiled CPU time. gRPC C-core threads and uvloop's C
I/O are not visible to cProfile (they show as "not seen by the profiler" when the profiled main-thread
time is below the process CPU time).
Writes bench/results/profile-<stamp>.{md,json} and latest-profile.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import common, loadgen
from bench.common import MLServerConfig
from bench.scenarios import LOADS, Payloads, close_workdir, log, ours_available, preflight, scenario_fn

IDLE_NAMES = re.compile(
    r"run_forever|run_until_complete|<method 'poll' of 'select\.epoll'|<method 'acquire' of '_thread\.lock'"
    r"|time\.sleep|<method 'disable' of '_lsprof|<method 'select' of|<built-in method select\."
)

# (category, regex on the normalised file path); first match wins. Files matching TRANSPARENT and C
# built-ins are charged to their callers' categories instead.
CATEGORIES = [
    (
        "runtime code (ours: runtime/, stock: mlserver_sklearn)",
        r"^(?!.*site-packages).*/runtime/(?:[a-z_]+/)*[a-z_]+\.py$|/mlserver_sklearn/",
    ),
    ("sklearn/numpy internals", r"/(sklearn|numpy|scipy|narwhals|joblib|threadpoolctl)/"),
    ("MLServer codecs", r"/mlserver/codecs/"),
    ("pydantic models (mlserver.types, validation, dumps)", r"/mlserver/types/|/pydantic/|/pydantic_core/"),
    (
        "metrics/tracing (prometheus, starlette_exporter, otel)",
        r"/prometheus_client/|/starlette_exporter/|/opentelemetry/|/mlserver/metrics/|/py_grpc_prometheus/",
    ),
    (
        "HTTP layer (uvicorn, starlette, fastapi, mlserver.rest)",
        r"/uvicorn/|/starlette/|/fastapi/|/httptools/|/h11/|/anyio/|/mlserver/rest/",
    ),
    ("gRPC layer (grpc.aio, protobuf, mlserver.grpc)", r"/grpc/|/google/protobuf/|/mlserver/grpc/|/grpc_interceptor/"),
    ("MLServer batching/parallel", r"/mlserver/batching/|/mlserver/parallel/"),
    ("MLServer dataplane/registry/model base", r"/mlserver/"),
    (
        "event loop (asyncio, uvloop, threads)",
        r"/asyncio/|uvloop|/concurrent/|threading\.py$|selectors\.py$|contextvars",
    ),
    ("logging", r"/logging/"),
]
TRANSPARENT = re.compile(
    r"^~$|/python3\.\d+/(inspect|typing|copy|abc|functools|enum|re/|re\.py|contextlib|dataclasses|collections/"
    r"|json/|types|weakref|_weakrefset|operator|numbers|warnings|uuid|string|base64|gzip|datetime|posixpath"
    r"|genericpath|os|random|traceback|linecache|tokenize)"
)
BUILTIN_CATEGORY = [("pydantic models (mlserver.types, validation, dumps)", re.compile(r"pydantic_core"))]

MARKERS = [
    # (label, file regex, function name); the largest cumtime among matches is used
    (
        "REST: whole request in the ASGI app (uvicorn run_asgi)",
        r"uvicorn/protocols/http/httptools_impl\.py",
        "run_asgi",
    ),
    ("REST: fastapi route (parse + validate + endpoint + serialize)", r"fastapi/routing\.py", "app"),
    ("REST: body read + orjson parse", r"mlserver/rest/requests\.py", "json"),
    (
        "REST: request validation into pydantic InferenceRequest",
        r"fastapi/dependencies/utils\.py",
        "solve_dependencies",
    ),
    ("REST: response_model serialization (fastapi)", r"fastapi/routing\.py", "serialize_response"),
    ("REST: response render (orjson dumps)", r"mlserver/rest/responses\.py", "render"),
    ("gRPC: servicer ModelInfer (decode + dataplane + encode)", r"mlserver/grpc/servicers\.py", "ModelInfer"),
    ("gRPC: protobuf -> InferenceRequest (converters.to_types)", r"mlserver/grpc/converters\.py", "to_types"),
    ("gRPC: InferenceResponse -> protobuf (converters.from_types)", r"mlserver/grpc/converters\.py", "from_types"),
    ("DataPlane.infer (metrics, context, model call)", r"mlserver/handlers/dataplane\.py", "infer"),
    ("model.predict of the runtime", r"(^|/)runtime/model\.py$|mlserver_sklearn/sklearn\.py", "predict"),
    (
        "runtime: the fast path's inference (admission, model metrics, answer)",
        r"runtime/integration/direct\.py",
        "infer",
    ),
    ("runtime: service.answer (lookup, resilience, compute)", r"runtime/service/service\.py", "answer"),
    ("MLServer codec decode (MLModel.decode_request)", r"mlserver/model\.py", "decode_request"),
    ("MLServer codec encode (MLModel.encode/encode_response)", r"mlserver/model\.py", "encode(_response)?"),
    ("sklearn Pipeline.predict", r"sklearn/pipeline\.py", "predict"),
    # This runtime's own per-request work, stage by stage (issue 14: what the common case pays for).
    ("runtime: REST fast path (body read, parse, inference, render)", r"runtime/integration/fast_path\.py", "__call__"),
    ("runtime: gRPC fast path (decode, inference, response)", r"runtime/integration/fast_path_grpc\.py", "ModelInfer"),
    (
        "gRPC: request metrics interceptor (runtime.integration.grpc_metrics)",
        r"runtime/integration/grpc_metrics\.py",
        "measured",
    ),
    ("runtime: admission (auth, rate, deadline, cap)", r"runtime/integration/dataplane\.py", "_admit"),
    ("runtime: input contract (decode + checks)", r"runtime/core/contract\.py", "parse"),
    ("runtime: out-of-distribution check", r"runtime/core/ood\.py", "check"),
    ("runtime: predictor", r"runtime/core/predictor\.py", "predict"),
    ("runtime: encode (outputs + V2 response)", r"runtime/service/service\.py", "_encode"),
    ("runtime: observation, metrics + log line", r"runtime/observation/observer\.py", "record"),
    ("runtime: observation, spans (none without a tracer)", r"runtime/observation/observer\.py", "span"),
    ("runtime: predictions metric", r"runtime/observation/metrics\.py", "record_predictions"),
]


def _norm(path: str) -> str:
    return path.replace("\\", "/")


# pstats' key of a function: (file, line, name)
Func = tuple[str, int, str]
# pstats' value: (primitive calls, calls, own time, cumulative time, callers -> their first four)
FuncStats = tuple[int, int, float, float, dict[Func, tuple[int, int, float, float]]]


def _own_category(func: Func) -> str | None:
    file, _, name = func
    f = _norm(file)
    if f == "~":
        for cat, rx in BUILTIN_CATEGORY:
            if rx.search(name):
                return cat
        return None
    if TRANSPARENT.search(f) and "site-packages" not in f:
        return None
    for cat, pattern in CATEGORIES:
        if re.search(pattern, f):
            return cat
    return "other"


def analyse(prof_path: Path, requests: int) -> dict[str, Any]:
    st = pstats.Stats(str(prof_path))
    # typeshed's Stats leaves out `stats`, the table every Stats holds (the callers are only there)
    stats: dict[Func, FuncStats] = st.stats  # type: ignore[attr-defined]
    memo: dict[Func, dict[str, float]] = {}

    def dist(func: Func, depth: int = 0) -> dict[str, float]:
        if func in memo:
            return memo[func]
        cat = _own_category(func)
        if cat is not None or depth > 40:
            out = {cat or "other": 1.0}
        else:
            memo[func] = {"other": 1.0}  # cycle guard
            callers = stats[func][4] if func in stats else {}
            weights = {c: (e[2] if e[2] > 0 else e[3]) for c, e in callers.items()}
            total = sum(weights.values())
            if not callers or total <= 0:
                out = {"other": 1.0}
            else:
                out = defaultdict(float)
                for c, w in weights.items():
                    for k, v in dist(c, depth + 1).items():
                        out[k] += v * w / total
                out = dict(out)
        memo[func] = out
        return out

    by_cat: dict[str, float] = defaultdict(float)
    idle = 0.0
    for func, (_cc, _nc, tt, _ct, _callers) in stats.items():
        if IDLE_NAMES.search(func[2]):
            idle += tt
            continue
        for cat, share in dist(func).items():
            by_cat[cat] += tt * share
    busy = sum(by_cat.values())
    n = max(requests, 1)
    markers = []
    for label, frx, fname in MARKERS:
        best = None
        for func, (_cc, nc, _tt, ct, _callers) in stats.items():
            if re.search(frx, _norm(func[0])) and re.fullmatch(fname, func[2]):
                if best is None or ct > best[1]:
                    best = (nc, ct)
        if best:
            markers.append(
                {
                    "label": label,
                    "calls_per_req": best[0] / n,
                    "us_per_req": best[1] / n * 1e6,
                    "share": best[1] / busy if busy else 0.0,
                }
            )
    runtime_funcs: list[dict[str, Any]] = []
    for func, (_cc, nc, tt, ct, _callers) in stats.items():
        if re.search(CATEGORIES[0][1], _norm(func[0])):
            runtime_funcs.append(
                {
                    "func": f"{Path(func[0]).parent.name}/{Path(func[0]).name}:{func[1]}({func[2]})",
                    "calls_per_req": nc / n,
                    "self_us_per_req": tt / n * 1e6,
                    "cum_us_per_req": ct / n * 1e6,
                }
            )
    runtime_funcs.sort(key=lambda r: -r["cum_us_per_req"])
    return {
        "busy_s": busy,
        "idle_s": idle,
        "profiled_us_per_req": busy / n * 1e6,
        "categories": sorted(
            (
                {"category": k, "share": v / busy if busy else 0.0, "profiled_us_per_req": v / n * 1e6}
                for k, v in by_cat.items()
            ),
            key=lambda r: -r["share"],
        ),
        "markers": markers,
        "runtime_funcs": runtime_funcs[:30],
    }


def profile_server(kind: str, args: argparse.Namespace, workdir: Path, payloads: Payloads) -> list[dict[str, Any]]:
    cfg = MLServerConfig(parallel_workers=0, batching=False)
    root = common.prepare_mlserver_dir(kind, workdir, cfg, args.model)
    logs = workdir / "logs"
    scenarios = [(p, load) for p in args.protocols for load in args.loads]
    out: dict[tuple[str, str], dict[str, Any]] = {
        sc: {"server": kind, "protocol": sc[0], "load": sc[1]} for sc in scenarios
    }

    log(f"{kind}: unprofiled runs ...")
    with common.serving(common.mlserver_launcher(root, logs / f"{kind}-plain.log")) as srv:
        pre = preflight(srv, f"{kind}-plain", payloads, args.protocols)
        for sc in scenarios:
            go = scenario_fn(srv, pre, payloads, workdir, *sc)
            go(args.warmup)
            before = common.cpu_snapshot(srv)
            res = go(args.duration)
            cpu = common.cpu_delta(before, common.cpu_snapshot(srv))
            out[sc].update(
                plain_rps=res.rps,
                plain_cpu_us_per_req=cpu / max(res.completed, 1) * 1e6,
                plain_p50_ms=res.p50_ms,
                plain_errors=res.errors,
            )
            log(f"  {kind} {sc[0]} {sc[1]}: {res.rps:.0f} req/s, {out[sc]['plain_cpu_us_per_req']:.0f} CPU us/req")

    log(f"{kind}: profiled runs ...")
    pdir = workdir / f"prof-{kind}"
    profiled = common.mlserver_launcher(
        root,
        logs / f"{kind}-prof.log",
        argv=[sys.executable, "-m", "bench._profiled_mlserver", "start", "."],
        env={"BENCH_PROFILE_DIR": str(pdir), "PYTHONPATH": str(common.REPO)},
    )
    with common.serving(profiled) as srv:
        pre = preflight(srv, f"{kind}-prof", payloads, args.protocols)
        for i, sc in enumerate(scenarios, start=1):
            go = scenario_fn(srv, pre, payloads, workdir, *sc)
            go(args.warmup)
            os.kill(srv.proc.pid, signal.SIGUSR1)
            time.sleep(0.2)
            res = go(args.duration)
            os.kill(srv.proc.pid, signal.SIGUSR2)
            path = pdir / f"window-{i}.prof"
            deadline = time.monotonic() + 60
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not path.exists():
                raise RuntimeError(f"no profile written for {sc}: {srv.log_tail()}")
            a = analyse(path, res.completed)
            plain = out[sc]["plain_cpu_us_per_req"]
            for c in a["categories"]:
                c["est_us_per_req"] = c["share"] * plain
            out[sc].update(profiled_rps=res.rps, **a)
            log(f"  {kind} {sc[0]} {sc[1]}: profiled {res.rps:.0f} req/s, {a['profiled_us_per_req']:.0f} us/req")
    return list(out.values())


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# Server profile {meta['stamp']}",
        "",
        f"Command: `{meta['command']}`; model {meta['model']}. parallel_workers 0, no adaptive batching, "
        f"{meta['duration_s']} s per scenario. cProfile on the event-loop thread; 'share' = share of the profiled "
        "Python time; "
        "'µs/req' = share × the unprofiled server CPU µs per request (process tree, psutil). cProfile "
        "inflates call-heavy code, so read shares as indicative.",
        "",
    ]
    for r in results:
        if "categories" not in r:
            continue
        title = f"{r['server']} — {r['protocol'].upper() if r['protocol'] == 'rest' else 'gRPC'} — {r['load']}"
        lines += [
            f"## {title}",
            "",
            f"Unprofiled: {r['plain_rps']:.0f} req/s, server CPU {r['plain_cpu_us_per_req']:.0f} µs/req. "
            f"Profiled: {r['profiled_rps']:.0f} req/s, {r['profiled_us_per_req']:.0f} µs/req of Python time "
            f"(inflation x{r['profiled_us_per_req'] / max(r['plain_cpu_us_per_req'], 1):.1f}).",
            "",
            "| layer (self time) | share | µs/req |",
            "|---|---:|---:|",
        ]
        for c in r["categories"]:
            if c["share"] >= 0.005:
                lines.append(f"| {c['category']} | {c['share'] * 100:.1f}% | {c['est_us_per_req']:.0f} |")
        lines += ["", "| key function (inclusive) | calls/req | share | µs/req |", "|---|---:|---:|---:|"]
        for m in r["markers"]:
            lines.append(
                f"| {m['label']} | {m['calls_per_req']:.2f} | {m['share'] * 100:.1f}% "
                f"| {m['share'] * r['plain_cpu_us_per_req']:.0f} |"
            )
        if r["runtime_funcs"]:
            lines += [
                "",
                "| runtime function | calls/req | self (profiled µs/req) | inclusive (profiled µs/req) |",
                "|---|---:|---:|---:|",
            ]
            for f in r["runtime_funcs"][:15]:
                lines.append(
                    f"| `{f['func']}` | {f['calls_per_req']:.2f} | {f['self_us_per_req']:.1f} "
                    f"| {f['cum_us_per_req']:.1f} |"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=common.BENCH_MODELS, default="linear", help="the bench model (bench.run's)")
    p.add_argument("--servers", default="ours,stock")
    p.add_argument("--protocols", default="rest,grpc")
    p.add_argument("--loads", default="1row_c16,100rows_c4")
    p.add_argument("--duration", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", type=Path, default=common.RESULTS)
    p.add_argument("--keep-workdir", action="store_true", help="keep the .prof files and server logs")
    args = p.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    args.protocols = [s for s in args.protocols.split(",") if s]
    args.loads = [s for s in args.loads.split(",") if s]
    if "ours" in args.servers and not ours_available():
        log("runtime/model.py not found: profiling the stock runtime only")
        args.servers = [s for s in args.servers if s != "ours"]
    tools = loadgen.ensure_tools(log)
    args.protocols = [pr for pr in args.protocols if tools["wrk" if pr == "rest" else "h2load"]]

    workdir = Path(tempfile.mkdtemp(prefix="pipeline-profile-"))
    row_counts = sorted({LOADS[load][0] for load in args.loads})
    payloads = Payloads(workdir, common.bench_pipeline(args.model), row_counts, args.model)
    results: list[dict[str, Any]] = []
    for kind in args.servers:
        try:
            results += profile_server(kind, args, workdir, payloads)
        except Exception as e:  # noqa: BLE001
            log(f"{kind}: FAILED {type(e).__name__}: {e}")
            results.append({"server": kind, "failed": f"{type(e).__name__}: {e}"[:2000]})
    meta = {
        "stamp": time.strftime("%Y%m%d-%H%M%S"),
        "command": "python -m bench.profile " + " ".join(argv if argv is not None else sys.argv[1:]),
        "duration_s": args.duration,
        "model": args.model,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    md = markdown(results, meta)
    base = args.out / f"profile-{meta['stamp']}"
    base.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    base.with_suffix(".md").write_text(md)
    (args.out / "latest-profile.md").write_text(md)
    print(md)
    log(f"wrote {base}.md/.json")
    close_workdir(workdir, args.keep_workdir, "cProfile windows: prof-*/window-N.prof")
    return 0


if __name__ == "__main__":
    sys.exit(main())
