"""Long property-based fuzz of raw V2 inference requests over REST and gRPC.

    python -m bench.fuzz --examples 10000              # 10,000 per protocol, random seed (~3-4 min)
    python -m bench.fuzz --examples 10000 --seed 7     # reproducible
    python -m bench.fuzz --examples 2000 --derandomize # exactly what `make test` runs

Same strategies and judge as the CI fuzz (harness/strategies.py, harness/fuzz.py; what an answer
may be is documented there). Starts its own `mlserver start .`
on free loopback ports, never imports mlserver or the runtime. Prints a table of answers per
protocol and expectation and any violation with its minimal (shrunk) request; writes
bench/results/fuzz-<stamp>.json. Exit status 1 on a violation or a failed health check.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import REPO, RESULTS
from harness import fuzz as fs
from harness import strategies as S
from harness.server import Server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--examples", type=int, default=10_000, help="examples per protocol (default 10000)")
    p.add_argument("--protocols", default="rest,grpc", help="comma-separated subset of rest,grpc")
    p.add_argument("--seed", type=int, help="hypothesis seed (default: random, printed)")
    p.add_argument("--derandomize", action="store_true", help="the CI profile's fixed examples")
    p.add_argument(
        "--health-every",
        type=int,
        default=fs.HEALTH_EVERY,
        help=f"examples between health checks (default {fs.HEALTH_EVERY})",
    )
    p.add_argument(
        "--max-minutes", type=float, default=30.0, help="stop generating after this long per protocol (default 30)"
    )
    return p.parse_args(argv)


def run_protocol(session: fs.FuzzSession, protocol: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from hypothesis import given, settings
    from hypothesis import seed as hyp_seed

    strategy = S.rest_cases() if protocol == "rest" else S.grpc_cases()
    profile = settings(
        settings.get_profile("fuzz-bench"),
        max_examples=args.examples,
        derandomize=args.derandomize,
    )
    stop_at = time.monotonic() + args.max_minutes * 60
    timed_out = {"value": False}

    @profile
    @given(case=strategy)
    def prop(case: S.AnyCase) -> None:
        if time.monotonic() > stop_at:
            timed_out["value"] = True
            return  # bounded in time: the remaining examples are generated but not sent
        session.run(case)

    if not args.derandomize:
        prop = hyp_seed(seed)(prop)
    started = time.monotonic()
    before = session.stats.examples[protocol]
    failure = None
    try:
        prop()
    except Exception as exc:  # noqa: BLE001 - hypothesis raises the shrunk failure
        failure = "".join(traceback.format_exception_only(type(exc), exc))[-6000:]
    return {
        "protocol": protocol,
        "examples": session.stats.examples[protocol] - before,
        "seconds": round(time.monotonic() - started, 1),
        "failure": failure,
        "stopped_by_time_limit": timed_out["value"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = set(protocols) - {"rest", "grpc"}
    if unknown:
        raise SystemExit(f"unknown protocol(s): {sorted(unknown)}")
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    fs.use_private_hypothesis_dir(work / "hypothesis")
    log_path = work / "mlserver.log"
    print(
        f"fuzz: {args.examples} examples per protocol ({', '.join(protocols)}), "
        f"{'derandomized' if args.derandomize else f'seed {seed}'}; server log {log_path}",
        flush=True,
    )
    server = Server.start(log_path)
    session = fs.FuzzSession(server, health_every=args.health_every)
    runs: list[dict[str, Any]] = []
    try:
        for protocol in protocols:
            run = run_protocol(session, protocol, args, seed)
            runs.append(run)
            print(
                f"{protocol}: {run['examples']} examples in {run['seconds']} s"
                + (" (time limit reached)" if run["stopped_by_time_limit"] else "")
                + (" -- VIOLATION" if run["failure"] else ""),
                flush=True,
            )
        session.health("at the end")
    finally:
        session.close()
        server.stop()
    stats = session.stats
    print()
    print(stats.table())
    for run in runs:
        if run["failure"]:
            print(f"\n{run['protocol']} VIOLATION (minimal example after shrinking):\n{run['failure']}")
    result = {
        "stamp": stamp,
        "seed": None if args.derandomize else seed,
        "derandomize": args.derandomize,
        "examples_requested": args.examples,
        "runs": runs,
        **stats.as_json(),
        "server_log": str(log_path),
    }
    out = RESULTS / f"fuzz-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {out.relative_to(REPO)}")
    ok = not any(r["failure"] for r in runs) and not stats.health_failures
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
