"""Performance as the work grows (issue 28): this runtime vs stock mlserver-sklearn (and KServe's
server on rows and sweep), same run, every point as ours ÷ stock with PASS/FAIL.

    python -m bench.growth                         # every axis (~20 min on 2 cores)
    python -m bench.growth --quick                 # each axis shortened, pw0 only (~6 min)
    python -m bench.growth --axes rows,cold        # a subset of rows,sweep,models,cold,overload
    python -m bench.growth --report bench/results/growth-<stamp>.json   # re-judge and redraw a saved run

Writes bench/results/growth-<stamp>.{json,md} and growth-<stamp>-<axis>.png; exits 1 when a point FAILs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common, loadgen
from bench.growth import cold, fleet, models, overload, report, rows, sweep, targets
from bench.scenarios import CONFIGS, close_workdir, log, tool_versions

AXES: dict[str, Callable[[fleet.Settings], list[dict[str, Any]]]] = {
    "rows": rows.run,
    "sweep": sweep.run,
    "models": models.run,
    "cold": cold.run,
    "overload": overload.run,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.growth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="1 round of 1 s per point, pw0 only, 2 cold starts, 5 s overload"
    )
    p.add_argument("--axes", default=",".join(AXES), help="subset of " + ",".join(AXES))
    p.add_argument("--configs", help="MLServer configs, a subset of pw0,pwdef (default both; quick pw0)")
    p.add_argument("--duration", type=int, help="seconds per wrk point and round (default 2, quick 1)")
    p.add_argument("--rounds", type=int, help="rounds per wrk point, best kept (default 2, quick 1)")
    p.add_argument("--out", type=Path, default=common.RESULTS)
    p.add_argument("--report", type=Path, metavar="JSON", help="measure nothing: re-judge and redraw this saved run")
    p.add_argument("--keep-workdir", action="store_true", help="keep the model repositories and server logs")
    a = p.parse_args(argv)
    a.axes = [x for x in a.axes.split(",") if x]
    a.configs = [x for x in (a.configs or ("pw0" if a.quick else "pw0,pwdef")).split(",") if x]
    for name, allowed in (("axes", AXES), ("configs", ("pw0", "pwdef"))):
        bad = [v for v in getattr(a, name) if v not in allowed]
        if bad:
            p.error(f"--{name}: unknown {bad}; choose from {list(allowed)}")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:  # a saved run judged and drawn again (after a change to the targets or charts)
        return publish(json.loads(args.report.read_text()), args.report.with_suffix(""))
    # A kill unwinds like Ctrl-C: every server started is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tools = loadgen.ensure_tools(log)
    if not all(tools.values()):
        log(f"missing load generators {tools} (apt-get install wrk nghttp2-client)")
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-growth-"))
    settings = fleet.Settings(
        duration=args.duration or (1 if args.quick else 2),
        rounds=args.rounds or (1 if args.quick else 2),
        warmup=0 if args.quick else 1,
        configs=tuple(args.configs),
        workdir=workdir,
        quick=args.quick,
    )
    meta: dict[str, Any] = {
        "stamp": stamp,
        "command": "python -m bench.growth "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "axes": args.axes,
        "configs": [CONFIGS[c].label for c in args.configs],
        "duration_s": settings.duration,
        "rounds": settings.rounds,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "tools": tool_versions(),
    }
    started, results = time.time(), {}
    try:
        for axis in args.axes:
            log(f"axis {axis} ...")
            results[axis] = AXES[axis](settings)
    finally:
        close_workdir(workdir, args.keep_workdir)
    meta.update(wall_s=round(time.time() - started), loadavg_end=os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    return publish({"meta": meta, "axes": results}, args.out / f"growth-{stamp}")


def publish(result: dict[str, Any], base: Path) -> int:
    """Verdicts, JSON, Markdown and charts at `base` (.json, .md, -<axis>.png); the verdicts printed."""
    stamp = result["meta"]["stamp"]
    if "models" in result["axes"]:
        result["axes"]["models"] = [models.resummarise(r) for r in result["axes"]["models"]]
    result["verdicts"] = targets.evaluate(result["axes"])
    result["charts"] = {
        axis: str(path)
        for axis, records in result["axes"].items()
        if (path := report.chart(axis, records, stamp, Path(f"{base}-{axis}.png")))
    }
    base.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    base.with_suffix(".md").write_text(report.markdown(result))
    for v in result["verdicts"]:
        print(report.verdict_line(v))
    failed = report.fails(result["verdicts"])
    log(f"{len(failed)} FAIL; wrote {base}.json/.md and {len(result['charts'])} chart(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
