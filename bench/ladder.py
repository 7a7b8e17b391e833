"""What each stage of a gRPC inference costs inside the running server, next to stock's best.

    python -m bench.ladder                  # 1 row, c=16, gRPC, 3 rounds x 3 s (~2 min)
    python -m bench.ladder --load 100rows_c4

Four servers of this runtime (parallel_workers 0), each cut short after one stage of the gRPC fast
path (bench/_staged_mlserver.py: canned, decoded, responded) or whole (full), run side by side with
stock mlserver-sklearn (parallel_workers 0, adaptive batching off and on) and the bare
grpc.aio floor (bench/floor_server.py). Each row is server CPU per request, what it adds to the row
before, and its ratio to stock's in its cheaper configuration for the load (adaptive batching on or
off, both run): the issue's target is 0.4x that, so the 'canned' row is the part of the budget
MLServer's gRPC server takes before this runtime does anything. Writes
bench/results/ladder-<stamp>.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.scenarios import CONFIGS, LOADS, Member, Payloads, close_workdir, log, run_group

STAGES = ("canned", "decoded", "responded", "full")
TARGET = 0.4  # the bound on server CPU per request, x stock's best
STOCK = ("pw0", "pw0-ab")
FLOOR = "bare grpc.aio"


def members(workdir: Path, load: str) -> list[Member]:
    logs = workdir / "logs"
    staged = [sys.executable, "-m", "bench._staged_mlserver", "start", "."]
    out = []
    for stage in STAGES:
        root = common.prepare_mlserver_dir("ours", workdir, CONFIGS["pw0"], variant=stage)
        env = {"PYTHONPATH": str(common.REPO), **({} if stage == "full" else {"BENCH_STAGE": stage})}
        out.append(Member("ours", stage, common.mlserver_launcher(root, logs / f"{stage}.log", argv=staged, env=env)))
    for slug in STOCK:
        stock = common.prepare_mlserver_dir("stock", workdir, CONFIGS[slug])
        out.append(Member("stock", CONFIGS[slug].label, common.mlserver_launcher(stock, logs / f"stock-{slug}.log")))
    floor = common.floor_launcher(common.prepare_kserve_dir(workdir, "linear"), logs / "floor.log")
    out.append(Member("floor", FLOOR, floor))
    return out


def markdown(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    by = {r["config"]: r for r in runs if "failed" not in r}
    stocks = [by[CONFIGS[s].label] for s in STOCK if CONFIGS[s].label in by]
    stock = min(stocks, key=lambda r: r["server_cpu_us_per_req"]) if stocks else None
    lines = [
        f"# gRPC stage ladder {meta['stamp']}",
        "",
        f"Command: `{meta['command']}`; {meta['load']}, "
        f"{meta['rounds']} rounds of {meta['duration_s']} s, best round kept.",
        "",
        "| server | req/s | server CPU µs/req | added by the stage | ÷ stock's CPU |",
        "|---|---:|---:|---:|---:|",
    ]
    previous: float | None = None  # the stage before, when it ran
    for stage in STAGES:
        r = by.get(stage)
        added = r["server_cpu_us_per_req"] - previous if r and previous is not None else None
        lines.append(_row(stage, r, stock, added))
        previous = r["server_cpu_us_per_req"] if r else None
    for slug in STOCK:
        lines.append(_row(f"stock {CONFIGS[slug].label}", by.get(CONFIGS[slug].label), stock, None))
    lines.append(_row(FLOOR, by.get(FLOOR), stock, None))
    if stock:
        lines += ["", f"The target, {TARGET}x stock's CPU: {TARGET * stock['server_cpu_us_per_req']:.0f} µs a request."]
    return "\n".join(lines) + "\n"


def _row(name: str, r: dict[str, Any] | None, stock: dict[str, Any] | None, added: float | None) -> str:
    if r is None:
        return f"| {name} | failed | | | |"
    cpu = r["server_cpu_us_per_req"]
    ratio = f"{cpu / stock['server_cpu_us_per_req']:.2f}" if stock else ""
    return f"| {name} | {r['rps']:,.0f} | {cpu:.0f} | {'' if added is None else f'{added:+.0f}'} | {ratio} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", choices=LOADS, default="1row_c16")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=3)
    p.add_argument("--out", type=Path, default=common.RESULTS)
    p.add_argument("--keep-workdir", action="store_true")
    args = p.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-ladder-"))
    run_args = argparse.Namespace(
        rounds=args.rounds, duration=args.duration, warmup=1, protocols=["grpc"], loads=[args.load]
    )
    payloads = Payloads(workdir, common.bench_pipeline(), [LOADS[args.load][0]])
    runs: list[dict[str, Any]] = []
    try:
        run_group(members(workdir, args.load), payloads, run_args, workdir, runs)
    finally:
        close_workdir(workdir, args.keep_workdir)
    meta = {
        "stamp": stamp,
        "load": args.load,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "command": "python -m bench.ladder " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    md = markdown(runs, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"ladder-{stamp}.md").write_text(md)
    print(md)
    log(f"wrote {args.out / f'ladder-{stamp}.md'}")
    return 0 if all("failed" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
