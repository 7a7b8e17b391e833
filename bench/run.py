"""The benchmark: this runtime vs stock mlserver-sklearn vs KServe's model server, same run, same artifacts.

    python -m bench.run            # full run: 3 rounds x 2 s per scenario, best round kept (~8 min)
    python -m bench.run --quick    # every scenario once, 2 s each (~4 min)

Scenarios: {REST, gRPC} x {1 row @ concurrency 1, 1 row @ 16, 100 rows @ 4}, for this runtime and the
stock runtime under MLServer settings {parallel_workers 0, default} x {adaptive batching off, on}, and for
KServe's ModelServer (one config), plus the in-process floor (pipeline.predict on 1 and 100 rows).
All servers (8 MLServer + KServe) are started together; each scenario runs on each of them in turn,
back to back, in several short rounds, and the best round per server and scenario is kept, so drift in
the shared machine's load hits every server and config alike. Only one server is ever under load.
Outputs bench/results/bench-<stamp>.{json,md,png} and latest.*.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench import common, loadgen, report
from bench.common import MODEL_NAME, MLServerConfig, Server

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
SERVERS = ("ours", "stock", "kserve")


def log(*a) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one round of 2 s per scenario (default: 3 rounds of 2 s)")
    p.add_argument("--duration", type=int, help="seconds measured per scenario and round (default 2)")
    p.add_argument("--rounds", type=int, help="rounds per scenario, best one kept (default 3, quick 1)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load before a scenario's first round")
    p.add_argument("--servers", default=",".join(SERVERS), help="subset of ours,stock,kserve")
    p.add_argument("--configs", default=",".join(CONFIGS), help="subset of " + ",".join(CONFIGS))
    p.add_argument("--loads", default=",".join(LOADS), help="subset of " + ",".join(LOADS))
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help="subset of rest,grpc")
    p.add_argument("--max-batch-size", type=int, default=16, help="adaptive batching max_batch_size")
    p.add_argument("--max-batch-time", type=float, default=0.002, help="adaptive batching max_batch_time (s)")
    p.add_argument("--out", type=Path, default=common.RESULTS, help="results dir")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temp model dirs and server logs")
    a = p.parse_args(argv)
    a.duration = a.duration or 2
    a.rounds = a.rounds or (1 if a.quick else 3)
    for name, allowed in (("servers", SERVERS), ("configs", CONFIGS), ("loads", LOADS), ("protocols", PROTOCOLS)):
        vals = [v for v in getattr(a, name).split(",") if v]
        bad = [v for v in vals if v not in allowed]
        if bad:
            p.error(f"--{name}: unknown {bad}; choose from {list(allowed)}")
        setattr(a, name, vals)
    return a


# ---------------------------------------------------------------- request bodies and pre-flight checks


class Payloads:
    """Per row count: the JSON body, the gRPC body (framed) and the expected predictions."""

    def __init__(self, workdir: Path, pipeline, row_counts):
        self.items = {}
        for n in row_counts:
            X = common.sample_rows(n)
            rest = workdir / f"body-{n}.json"
            rest.write_bytes(common.rest_body(X))
            req = common.grpc_request(X)
            grpc = workdir / f"body-{n}.grpc"
            grpc.write_bytes(common.grpc_frame(req.SerializeToString()))
            self.items[n] = {"X": X, "rest": rest, "grpc": grpc, "request": req,
                             "expected": np.asarray(pipeline.predict(X), dtype=float)}


def preflight(server: Server, payloads: Payloads, protocols) -> dict:
    """One real client call per protocol and row count: checks values, returns gRPC response sizes."""
    info = {"grpc_response_bytes": {}}
    for n, item in payloads.items.items():
        if "rest" in protocols:
            req = urllib.request.Request(f"{server.base_url}/v2/models/{MODEL_NAME}/infer",
                                         data=item["rest"].read_bytes(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                body = json.loads(r.read())
            got = np.asarray(body["outputs"][0]["data"], dtype=float).ravel()
            _check(server.name, "REST", n, got, item["expected"])
        if "grpc" in protocols:
            import grpc
            from tritonclient.grpc import service_pb2_grpc

            with grpc.insecure_channel(f"{common.HOST}:{server.grpc_port}") as ch:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
                sizes = set()
                for _ in range(3):
                    resp = stub.ModelInfer(item["request"], timeout=30)
                    sizes.add(resp.ByteSize())
            out = resp.outputs[0]
            if resp.raw_output_contents:
                got = np.frombuffer(resp.raw_output_contents[0], dtype="<f8")
            else:
                got = np.asarray(out.contents.fp64_contents, dtype=float)
            _check(server.name, "gRPC", n, got, item["expected"])
            info["grpc_response_bytes"][n] = (sizes.pop() + 5) if len(sizes) == 1 else None
    return info


def _check(name, proto, n, got, expected) -> None:
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-9, atol=1e-9):
        raise AssertionError(f"{name} {proto} {n} rows: predictions differ from the pipeline's "
                             f"(got {got[:3]}..., expected {expected[:3]}...)")


# ---------------------------------------------------------------- one scenario on one server


def _system_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all processes), for the background-load column."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


def scenario_fn(server: Server, pre: dict, payloads: Payloads, workdir: Path, proto: str, load: str):
    """A function(duration_s) -> LoadResult that drives one scenario against one server."""
    rows, conc = LOADS[load]
    item = payloads.items[rows]
    if proto == "rest":
        url = f"{server.base_url}/v2/models/{MODEL_NAME}/infer"
        return lambda d: loadgen.run_wrk(url, item["rest"], conc, d, workdir)
    url = f"http://{common.HOST}:{server.grpc_port}/inference.GRPCInferenceService/ModelInfer"
    rb = pre["grpc_response_bytes"].get(rows)
    return lambda d: loadgen.run_h2load_grpc(url, item["grpc"], conc, d, workdir, rb)


def best_of_rounds(recs: list[dict]) -> dict:
    """The round with the most good responses per second stands for the scenario (the least disturbed
    by the shared machine); every round's numbers stay in `rounds`."""
    ok = [r for r in recs if "failed" not in r]
    best = dict(max(ok, key=lambda r: r["rps"]) if ok else recs[-1])
    best["rounds"] = [{k: r.get(k) for k in ("round", "rps", "p50_ms", "p99_ms", "errors", "server_cpu_us_per_req",
                                             "other_cpu_cores", "failed") if k in r} for r in recs]
    best["errors_all_rounds"] = sum(r.get("errors", 0) for r in recs)
    return best


def measure(server: Server, kind: str, label: str, pre: dict, payloads: Payloads, proto: str, load: str,
            args, workdir: Path, warmup: int) -> dict:
    rows, conc = LOADS[load]
    go = scenario_fn(server, pre, payloads, workdir, proto, load)
    rec = {"server": kind, "config": label, "protocol": proto, "load": load, "rows": rows, "concurrency": conc,
           "loadavg_before": os.getloadavg()[0]}
    try:
        if warmup > 0:
            go(warmup)
        before, sys0 = server.cpu_snapshot(), _system_busy_s()
        res = go(args.duration)
        after, sys1 = server.cpu_snapshot(), _system_busy_s()
        cpu = common.cpu_delta(before, after)
        rec.update(res.to_dict())
        rec["rows_per_s"] = res.rps * rows
        done = max(res.completed, 1)
        rec["server_cpu_us_per_req"] = cpu / done * 1e6
        rec["server_cpu_cores"] = cpu / res.duration_s
        rec["client_cpu_us_per_req"] = res.client_cpu_s / done * 1e6
        rec["client_cpu_cores"] = res.client_cpu_s / res.duration_s
        # Everything else the machine did meanwhile (other sessions' tests, the bench itself).
        rec["other_cpu_cores"] = max(0.0, (sys1 - sys0) - cpu - res.client_cpu_s) / res.duration_s
        log(f"  {kind:6} {label:16} {proto:4} {load:10} {res.rps:9.1f} req/s "
            f"p50 {res.p50_ms:7.2f} ms p99 {res.p99_ms:7.2f} ms err {res.errors} "
            f"srv {rec['server_cpu_us_per_req']:6.0f} us/req cli {rec['client_cpu_us_per_req']:4.0f} us/req "
            f"bg {rec['other_cpu_cores']:.2f} cores")
    except Exception as e:  # noqa: BLE001 - record and go on with the next scenario
        rec["failed"] = f"{type(e).__name__}: {e}"[:500]
        log(f"  {kind} {label} {proto} {load} FAILED: {rec['failed']}")
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.name} died during {proto} {load}:\n{server.log_tail()}")
    return rec


def run_group(group: list[tuple[str, str, Server]], payloads: Payloads, args, workdir: Path,
                     runs: list) -> None:
    """All servers start together (idle ones cost ~0.002 cores); each scenario then runs on each server
    in turn, back to back (rotating who goes first), round after round, so drift in the shared machine's
    background load hits every server and config alike."""
    started = []
    try:
        for kind, label, server in group:
            log(f"{kind} [{label}] starting ...")
            server.start()
            started.append((kind, label, server))
        live = []
        for kind, label, server in started:
            try:
                server.wait_ready()
                live.append((kind, label, server, preflight(server, payloads, args.protocols)))
            except Exception as e:  # noqa: BLE001
                log(f"{kind} [{label}] FAILED: {type(e).__name__}: {e}")
                runs.append({"server": kind, "config": label, "failed": f"{type(e).__name__}: {e}"[:2000]})
        measured: dict[tuple, list[dict]] = {}
        for rnd in range(args.rounds):
            i = 0
            for proto in args.protocols:
                for load in args.loads:
                    order = live[i % len(live):] + live[:i % len(live)] if live else []
                    i += 1
                    for kind, label, server, pre in order:
                        if server.proc.poll() is not None:
                            continue
                        try:
                            rec = measure(server, kind, label, pre, payloads, proto, load, args, workdir,
                                          warmup=args.warmup if rnd == 0 else 0)
                        except RuntimeError as e:
                            log(str(e))
                            runs.append({"server": kind, "config": label, "failed": str(e)[:2000]})
                            continue
                        rec["round"] = rnd + 1
                        measured.setdefault((kind, label, proto, load), []).append(rec)
        runs.extend(best_of_rounds(recs) for recs in measured.values())
    finally:
        for _, _, server in started:
            server.stop()


def ours_available() -> bool:
    return (common.REPO / "runtime" / "model.py").exists()


def main(argv=None) -> int:
    args = parse_args(argv)
    tools = loadgen.ensure_tools(log)
    if not tools["wrk"] and "rest" in args.protocols:
        log("wrk is not available (apt-get install wrk): REST scenarios skipped")
        args.protocols = [p for p in args.protocols if p != "rest"]
    if not tools["h2load"] and "grpc" in args.protocols:
        log("h2load is not available (apt-get install nghttp2-client): gRPC scenarios skipped")
        args.protocols = [p for p in args.protocols if p != "grpc"]
    if "ours" in args.servers and not ours_available():
        log("runtime/model.py not found: this runtime's scenarios are skipped")
        args.servers = [s for s in args.servers if s != "ours"]

    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    logs = workdir / "logs"
    t_start = time.time()
    pipeline = common.load_pipeline()
    row_counts = sorted({LOADS[l][0] for l in args.loads})
    payloads = Payloads(workdir, pipeline, row_counts)

    log("in-process floor (pipeline.predict) ...")
    floor = {str(n): loadgen.floor(pipeline.predict, payloads.items[n]["X"], 1.0) for n in row_counts}
    for n, f in floor.items():
        log(f"  floor {n:>3} rows: p50 {f['p50_us']:.1f} us/call, {f['rps']:.0f} calls/s")

    runs: list[dict] = []
    group = []
    for cslug in args.configs:
        cfg = CONFIGS[cslug]
        cfg = MLServerConfig(cfg.parallel_workers, cfg.batching, args.max_batch_size, args.max_batch_time)
        for kind in ("ours", "stock"):
            if kind in args.servers:
                root = common.prepare_mlserver_dir(kind, workdir, cfg)
                group.append((kind, cfg.label, Server.mlserver(f"{kind}-{cslug}", root, logs / f"{kind}-{cslug}.log")))
    if "kserve" in args.servers:
        group.append(("kserve", "kserve workers=1",
                      Server.kserve("kserve", common.prepare_kserve_dir(workdir), logs / "kserve.log")))
    if group:
        run_group(group, payloads, args, workdir, runs)

    meta = {
        "stamp": stamp,
        "command": "python -m bench.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
        "max_batch_size": args.max_batch_size, "max_batch_time": args.max_batch_time,
        "wall_s": round(time.time() - t_start, 1),
        "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        "tools": _tool_versions(), "server_settings": common.base_server_settings(),
        "loadavg_end": os.getloadavg(),
    }
    result = {"meta": meta, "floor": floor, "runs": runs}
    result["targets"] = report.evaluate_targets(result)
    base = args.out / f"bench-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    md = report.markdown(result)
    base.with_suffix(".md").write_text(md)
    png = report.chart(result, base.with_suffix(".png"))
    for suffix in (".json", ".md", ".png"):
        src = base.with_suffix(suffix)
        if src.exists():
            shutil.copyfile(src, args.out / f"latest{suffix}")
    print(md)
    log(f"wrote {base}.json/.md" + ("/.png" if png else " (no chart: matplotlib missing)")
        + f" in {meta['wall_s']} s")
    if args.keep_workdir:
        log(f"workdir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _tool_versions() -> dict:
    out = {}
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


if __name__ == "__main__":
    sys.exit(main())
