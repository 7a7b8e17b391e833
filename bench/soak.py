"""Soak: concurrent REST and gRPC clients, good and bad requests, server memory sampled each second.

    python -m bench.soak --seconds 60                  # 8 clients (4 REST, 4 gRPC), ~75 s in all
    python -m bench.soak --seconds 300 --clients 16

Starts its own `mlserver start .` on free loopback ports (client side only: requests and
tritonclient's stubs; the engine is harness/soak.py). A warm-up
(default 5 s) runs the same traffic before the measured window. Every good request must answer
with the pipeline's predictions and every bad one with its 4xx / INVALID_ARGUMENT / NOT_FOUND.
The resident memory (RSS) of the server's process tree (psutil, children included) is sampled
every second; reported: start/peak/end, the growth and the linear slope over the second half.
Prints a table and writes bench/results/soak-<stamp>.json. Exit status 1 if any request got a
wrong answer, the server is not healthy afterwards, or RSS grew by --max-growth-mb or more in the
second half.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, RESULTS
from harness import soak
from harness.server import Server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=60.0, help="measured duration (default 60)")
    p.add_argument(
        "--clients",
        type=int,
        default=soak.DEFAULT_CLIENTS,
        help="concurrent clients, alternately REST and gRPC (default 8)",
    )
    p.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first (default 5)")
    p.add_argument(
        "--good-ratio", type=float, default=soak.DEFAULT_GOOD_RATIO, help="share of good requests (default 0.75)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-growth-mb", type=float, default=10.0, help="RSS growth allowed in the second half (default 10)"
    )
    p.add_argument("--max-requests-per-client", type=int, default=1_000_000)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (0 < args.seconds <= 3600 and 1 <= args.clients <= 64):
        raise SystemExit("--seconds must be in (0, 3600] and --clients in [1, 64]")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = Path(tempfile.mkdtemp(prefix="bench-soak-")) / "mlserver.log"
    print(
        f"soak: {args.seconds:g} s measured after {args.warmup:g} s warm-up, {args.clients} clients, "
        f"{args.good_ratio:.0%} good requests; server log {log_path}",
        flush=True,
    )
    server = Server.start(log_path)
    try:
        result = soak.run_soak(
            server,
            seconds=args.seconds,
            clients=args.clients,
            warmup=args.warmup,
            good_ratio=args.good_ratio,
            seed=args.seed,
            max_requests_per_client=args.max_requests_per_client,
        )
    finally:
        server.stop()
    growth = result["rss_mb"]["second_half_growth"]
    result.update(stamp=stamp, server_log=str(log_path), max_growth_mb=args.max_growth_mb)
    verdict = []
    if result["good_errors"]:
        verdict.append(f"{result['good_errors']} good request(s) failed")
    if result["bad_errors"]:
        verdict.append(f"{result['bad_errors']} bad request(s) without their client error")
    if result["stuck_clients"]:
        verdict.append(f"clients stuck: {result['stuck_clients']}")
    if not result["server_healthy_after"]:
        verdict.append("server unhealthy afterwards")
    if growth >= args.max_growth_mb:
        verdict.append(f"RSS grew {growth} MB in the second half (limit {args.max_growth_mb})")
    result["verdict"] = "PASS" if not verdict else "FAIL: " + "; ".join(verdict)
    print()
    print(soak.table(result))
    print(result["verdict"])
    out = RESULTS / f"soak-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0 if not verdict else 1


if __name__ == "__main__":
    sys.exit(main())
