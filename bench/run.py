"""The benchmark: this runtime vs stock mlserver-sklearn vs KServe's model server, same run, same artifacts.

    python -m bench.run            # full run: 3 rounds x 2 s per scenario, best round kept (~8 min)
    python -m bench.run --quick    # every scenario once, 2 s each (~4 min)
    python -m bench.run --model forest   # a random forest instead of the linear model
    python -m bench.run --model columns  # mixed numeric/string columns, PandasCodec requests
    python -m bench.run --lookup         # also: features looked up by id in a throw-away PostgreSQL
    python -m bench.run --baseline REV   # also: this runtime as it was at git revision REV (ours@REV)

Scenarios: {REST, gRPC} x {1 row @ concurrency 1, 1 row @ 16, 100 rows @ 4}, for this runtime and the
stock runtime under MLServer settings {parallel_workers 0, default} x {adaptive batching off, on}, and for
KServe's ModelServer (one config), plus two floors: in-process (pipeline.predict on 1 and 100 rows) and
transport (bench/floor_server.py: bare uvicorn and grpc.aio answering from a cache, what no server on this
stack can beat). All servers (8 MLServer + KServe + the floor) are started together; each scenario runs on each of
them in turn,
back to back, in several short rounds, and the best round per server and scenario is kept, so drift in
the shared machine's load hits every server and config alike. Only one server is ever under load.
Outputs bench/results/bench[-MODEL]-<stamp>.{json,md,png} and latest[-MODEL].* (no suffix: linear).
This is the command line; the scenarios themselves are bench/scenarios.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import baseline, common, loadgen, report
from bench.common import MLServerConfig
from bench.scenarios import (
    CONFIGS,
    LOADS,
    PROTOCOLS,
    SERVERS,
    Member,
    Payloads,
    close_workdir,
    log,
    ours_available,
    run_group,
    tool_versions,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="one round of 2 s per scenario (default: 3 rounds of 2 s)")
    p.add_argument("--duration", type=int, help="seconds measured per scenario and round (default 2)")
    p.add_argument("--rounds", type=int, help="rounds per scenario, best one kept (default 3, quick 1)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load before a scenario's first round")
    p.add_argument(
        "--model",
        choices=common.BENCH_MODELS,
        default="linear",
        help="linear: the shipped diabetes model (folded fast path); forest: a random forest "
        "on the same data (scikit-learn's own estimator), the same fitted object for every server; columns: "
        "a ColumnTransformer (scaler on 4 numeric, one-hot on 3 string columns) then GradientBoosting, "
        "sent as MLServer's PandasCodec request (one [N, 1] tensor per column)",
    )
    p.add_argument(
        "--shadow",
        type=float,
        default=0.0,
        metavar="RATE",
        help="also run this runtime with diabetes v2 shadowing this share of the requests "
        "(0 < RATE <= 1; linear model only; first config only), beside the same config without and an identical "
        "copy of that (the run's noise): the shadow's cost on the primary, paired by round",
    )
    p.add_argument(
        "--lookup",
        action="store_true",
        help="also run this runtime answering requests by id (1 id, features looked up in a throw-away "
        "PostgreSQL), with its cache warm and with no cache, on the 1row_c16 load (linear model only; "
        "first config only): the lookup's cost over sending the features",
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also run this runtime as it was at git revision REV (its runtime/ and settings.json, same model "
        "directory), as server ours@REV in the first config, and report ours ÷ ours@REV per scenario",
    )
    p.add_argument(
        "--baseline-tolerance",
        type=float,
        default=report.BASELINE_TOLERANCE,
        metavar="SHARE",
        help="--baseline passes where ours's req/s >= (1 - SHARE) x and its server CPU/request <= (1 + SHARE) x "
        "the baseline's (default %(default)s)",
    )
    p.add_argument("--servers", default=",".join(SERVERS), help="subset of ours,stock,kserve,floor")
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
    if a.baseline:
        try:
            baseline.resolve(a.baseline)
        except ValueError as e:
            p.error(str(e))
    return a


def lookup_wanted(args: argparse.Namespace) -> bool:
    """--lookup applies to this runtime serving the linear model, on the load it is measured with."""
    if not args.lookup:
        return False
    if args.model != "linear":
        log("--lookup ignored: linear model only")
    elif "ours" not in args.servers:
        log("--lookup ignored: this runtime (ours) is not in --servers")
    elif report.LOOKUP_LOAD not in args.loads:
        log(f"--lookup ignored: it runs on {report.LOOKUP_LOAD}, which is not in --loads")
    else:
        return True
    return False


def baseline_member(base: baseline.Baseline, cfg: MLServerConfig, workdir: Path, model: str) -> Member:
    """The baseline revision of this runtime in `cfg`, started as this runtime is; its check proves
    the server imported the revision's code, not the working tree's."""
    root = common.prepare_mlserver_dir("ours", workdir, cfg, model, baseline=base)
    log_path = workdir / "logs" / f"ours-{cfg.slug}-{base.slug}.log"
    launch = common.mlserver_launcher(root, log_path, env=baseline.BYTECODE_ON)
    return Member(base.kind, cfg.label, launch, check=base.check_imported)


def lookup_members(store: common.FeatureStore, cfg: MLServerConfig, workdir: Path, pipeline: Any) -> list[Member]:
    """This runtime in `cfg` answering requests by id from `store`, with its cache (the database once
    per TTL) and without (every request queries it); measured on one load only."""
    payloads = Payloads.lookup(workdir, pipeline, store.entity_id)
    members = []
    for name, cache in (("warm", True), ("cold", False)):
        root = common.prepare_mlserver_dir(
            "ours", workdir, cfg, feature_store=store.settings(cache), variant=f"lookup-{name}"
        )
        launch = common.mlserver_launcher(root, workdir / "logs" / f"ours-{cfg.slug}-lookup-{name}.log")
        members.append(
            Member(
                "ours", cfg.label + report.LOOKUP_MARK + name, launch, payloads, (report.LOOKUP_LOAD,), store.processes
            )
        )
    return members


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A kill or a CI timeout unwinds like Ctrl-C: the servers and the throw-away database are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
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
    pipeline = common.bench_pipeline(args.model)
    row_counts = sorted({LOADS[load][0] for load in args.loads})
    payloads = Payloads(workdir, pipeline, row_counts, args.model)

    log("in-process floor (pipeline.predict) ...")
    floor = {str(n): loadgen.floor(pipeline.predict, payloads.items[n].X, 1.0) for n in row_counts}
    for n, f in floor.items():
        log(f"  floor {n:>3} rows: p50 {f['p50_us']:.1f} us/call, {f['rps']:.0f} calls/s")

    runs: list[dict[str, Any]] = []
    baseline_meta: dict[str, Any] | None = None
    # The feature store's database and the baseline's tree live until the group has run.
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(common.feature_store(log)) if lookup_wanted(args) else None
        rev_tree = None
        if args.baseline and "ours" not in args.servers:
            log("--baseline ignored: this runtime (ours) is not in --servers")
        elif args.baseline:
            rev_tree = stack.enter_context(baseline.extracted(args.baseline, keep=args.keep_workdir))
            log(f"{rev_tree.kind}: commit {rev_tree.commit} extracted to {rev_tree.root}")
            baseline_meta = {
                "server": rev_tree.kind,
                "rev": rev_tree.rev,
                "commit": rev_tree.commit,
                "config": CONFIGS[args.configs[0]].label,
                "tolerance": args.baseline_tolerance,
                "server_settings": rev_tree.settings(),
            }
        group = []
        for cslug in args.configs:
            cfg = CONFIGS[cslug]
            cfg = MLServerConfig(cfg.parallel_workers, cfg.batching, args.max_batch_size, args.max_batch_time)
            for kind in ("ours", "stock"):
                if kind in args.servers:
                    root = common.prepare_mlserver_dir(kind, workdir, cfg, args.model)
                    group.append(Member(kind, cfg.label, common.mlserver_launcher(root, logs / f"{kind}-{cslug}.log")))
                    if kind == "ours" and args.shadow and args.model == "linear" and cslug == args.configs[0]:
                        root = common.prepare_mlserver_dir(kind, workdir, cfg, args.model, shadow=args.shadow)
                        group.append(
                            Member(
                                kind,
                                cfg.label + report.SHADOW_MARK + f"{args.shadow:g}",
                                common.mlserver_launcher(root, logs / f"{kind}-{cslug}-shadow.log"),
                            )
                        )
                        # An identical server without the shadow: what the same comparison gives by noise.
                        root = common.prepare_mlserver_dir(kind, workdir, cfg, args.model, copy=True)
                        group.append(
                            Member(
                                kind,
                                cfg.label + report.COPY_MARK,
                                common.mlserver_launcher(root, logs / f"{kind}-{cslug}-copy.log"),
                            )
                        )
                    if kind == "ours" and rev_tree and cslug == args.configs[0]:
                        group.append(baseline_member(rev_tree, cfg, workdir, args.model))
                    if kind == "ours" and store and cslug == args.configs[0]:
                        group += lookup_members(store, cfg, workdir, pipeline)
        if "kserve" in args.servers:
            group.append(
                Member(
                    "kserve",
                    "kserve workers=1",
                    common.kserve_launcher(common.prepare_kserve_dir(workdir, args.model), logs / "kserve.log"),
                )
            )
        if "floor" in args.servers:  # the same joblib'd pipeline KServe loads
            group.append(
                Member(
                    "floor",
                    "bare uvicorn + grpc.aio",
                    common.floor_launcher(common.prepare_kserve_dir(workdir, args.model), logs / "floor.log"),
                )
            )
        if group:
            run_group(group, payloads, args, workdir, runs)

    meta = {
        "stamp": stamp,
        "model": args.model,
        "command": "python -m bench.run "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "max_batch_size": args.max_batch_size,
        "max_batch_time": args.max_batch_time,
        "wall_s": round(time.time() - t_start, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tools": tool_versions(),
        "server_settings": common.base_server_settings(),
        "loadavg_end": os.getloadavg(),
    }
    if store:
        meta["lookup"] = {
            "entity_id": store.entity_id,
            "table": common.FEATURE_TABLE,
            "load": report.LOOKUP_LOAD,
            "postgres": store.pg.bin_dir.parent.name,
            "lookup_timeout_ms": common.LOOKUP_TIMEOUT_MS,
        }
    if baseline_meta:
        meta["baseline"] = baseline_meta
    result = {"meta": meta, "floor": floor, "runs": runs}
    result["targets"] = report.evaluate_targets(result)
    result["baseline"] = report.baseline_ratios(result)
    suffix_model = "" if args.model == "linear" else f"-{args.model}"
    base = args.out / f"bench{suffix_model}-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    md = report.markdown(result)
    base.with_suffix(".md").write_text(md)
    png = report.chart(result, base.with_suffix(".png"))
    for suffix in (".json", ".md", ".png"):
        src = base.with_suffix(suffix)
        if src.exists():
            shutil.copyfile(src, args.out / f"latest{suffix_model}{suffix}")
    print(md)
    log(f"wrote {base}.json/.md" + ("/.png" if png else " (no chart: matplotlib missing)") + f" in {meta['wall_s']} s")
    close_workdir(workdir, args.keep_workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
