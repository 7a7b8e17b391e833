"""Large batches over REST: 10,000 rows per request at concurrency 2. This runtime is sent V2's binary
tensor extension (tritonclient.http's default: the input and every output in binary) and JSON; stock
mlserver-sklearn JSON, all it takes. Targets: binary >= 3x stock's best rows/s, JSON >= 1.5x.

    python -m bench.large_batch                       # 3 rounds x 3 s, MLServer configs pw0 and pw=default
    python -m bench.large_batch --rounds 1 --duration 2 --configs pw0

Same servers, model (the shipped diabetes model) and load generator (wrk) as bench.run; each round
runs every server and body back to back, rotating who goes first; the best round per server, config
and body is kept. Writes bench/results/large-batch-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench import common, loadgen
from bench.common import MODEL_NAME, MLServerConfig
from bench.scenarios import CONFIGS, close_workdir, log
from harness.models import assert_parity
from harness.server import Server
from harness.v2 import rest_outputs

ROWS, CONCURRENCY = 10_000, 2
TARGETS = {"binary": 3.0, "json": 1.5}  # this runtime's best rows/s over stock's best (JSON)
HEADER_LENGTH = "Inference-Header-Content-Length"


def binary_body(X: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The request tritonclient.http sends by default: the tensor's bytes after the JSON, and every
    output asked for in binary."""
    values = np.ascontiguousarray(X, dtype="<f8").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(X.shape),
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(values)},
                }
            ],
            "parameters": {"binary_data_output": True},
        },
        separators=(",", ":"),
    ).encode()
    return header + values, {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}


def predictions(body: bytes, header_length: str | None) -> np.ndarray:
    """The one output of an answer, JSON or binary."""
    if header_length is None:
        (values,) = rest_outputs(json.loads(body)).values()
        return np.asarray(values, dtype=float).ravel()
    length = int(header_length)
    (output,) = json.loads(body[:length])["outputs"]
    assert output["datatype"] == "FP64" and output["parameters"]["binary_data_size"] == len(body) - length
    return np.frombuffer(body[length:], dtype="<f8")


def check(
    server: Server, body: bytes, headers: dict[str, str], expected: np.ndarray, what: str, model: str = MODEL_NAME
) -> None:
    request = urllib.request.Request(
        f"{server.http_url}/v2/models/{model}/infer",
        data=body,
        headers={"Content-Type": "application/json"} | headers,
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        got = predictions(answer.read(), answer.headers.get(HEADER_LENGTH))
    assert_parity(got, expected, what)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.large_batch", description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=3, help="seconds measured per server, body and round")
    p.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load before the first round")
    p.add_argument("--configs", default="pw0,pwdef", help="MLServer configs, a subset of " + ",".join(CONFIGS))
    p.add_argument("--out", type=Path, default=common.RESULTS)
    p.add_argument("--keep-workdir", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not loadgen.ensure_tools(log)["wrk"]:
        log("wrk is not available (apt-get install wrk)")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-large-batch-"))
    X = common.bench_rows(ROWS)
    expected = np.asarray(common.bench_pipeline("linear").predict(X), dtype=float)
    bodies: dict[str, tuple[Path, dict[str, str]]] = {}
    for name, (body, headers) in {"json": (common.rest_body(X), {}), "binary": binary_body(X)}.items():
        path = workdir / f"large-{name}.body"
        path.write_bytes(body)
        bodies[name] = (path, headers)
    # (kind, config label, body) for each server and body it is sent; stock takes JSON only.
    servers: dict[tuple[str, str], Server] = {}
    try:
        for slug in args.configs.split(","):
            cfg: MLServerConfig = CONFIGS[slug]
            for kind in ("ours", "stock"):
                root = common.prepare_mlserver_dir(kind, workdir, cfg, "linear")
                servers[(kind, cfg.label)] = common.mlserver_launcher(root, workdir / f"{kind}-{slug}.log")()
        runs = [
            (k, label, name) for (k, label) in servers for name in (("json", "binary") if k == "ours" else ("json",))
        ]
        for kind, label, name in runs:
            server = servers[(kind, label)]
            server.wait_ready(common.READY_TIMEOUT_S)
            path, headers = bodies[name]
            check(server, path.read_bytes(), headers, expected, f"{kind} [{label}] {name}")
        best = measure(servers, runs, bodies, args, workdir)
    finally:
        for server in servers.values():
            server.stop()
        close_workdir(workdir, args.keep_workdir)
    summary = verdict(best)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"large-batch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"rows": ROWS, "concurrency": CONCURRENCY, "best": best, "summary": summary}, indent=1))
    log(f"results: {out}")
    return 0 if all(s["pass"] for s in summary.values()) else 1


def measure(
    servers: dict[tuple[str, str], Server],
    runs: list[tuple[str, str, str]],
    bodies: dict[str, tuple[Path, dict[str, str]]],
    args: argparse.Namespace,
    workdir: Path,
) -> list[dict[str, Any]]:
    """Every run, round after round (rotating who goes first); the best round of each."""
    best: dict[tuple[str, str, str], dict[str, Any]] = {}
    for round_ in range(args.rounds):
        for i in range(len(runs)):
            kind, label, name = runs[(i + round_) % len(runs)]
            path, headers = bodies[name]
            url = f"{servers[(kind, label)].http_url}/v2/models/{MODEL_NAME}/infer"
            if round_ == 0 and args.warmup:
                loadgen.run_wrk(url, path, CONCURRENCY, args.warmup, workdir, timeout_s=30, headers=headers)
            before = common.cpu_snapshot(servers[(kind, label)])
            res = loadgen.run_wrk(url, path, CONCURRENCY, args.duration, workdir, timeout_s=30, headers=headers)
            cpu_s = common.cpu_delta(before, common.cpu_snapshot(servers[(kind, label)]))
            record = {
                "server": kind,
                "config": label,
                "body": name,
                "rows_per_s": res.rps * ROWS,
                "p50_ms": res.p50_ms,
                "server_cpu_ms_per_req": 1e3 * cpu_s / max(res.completed, 1),
                "errors": res.errors,
            }
            log(
                f"  {kind:5} {label:12} {name:6} {record['rows_per_s']:12,.0f} rows/s "
                f"p50 {res.p50_ms:8.1f} ms server CPU {record['server_cpu_ms_per_req']:6.2f} ms/req err {res.errors}"
            )
            key = (kind, label, name)
            if res.errors == 0 and record["rows_per_s"] > best.get(key, {}).get("rows_per_s", -1.0):
                best[key] = record
    return list(best.values())


def verdict(best: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """This runtime's best rows/s per body over stock's best, against the targets (printed)."""
    stock = max((r["rows_per_s"] for r in best if r["server"] == "stock"), default=0.0)
    summary = {}
    for name, target in TARGETS.items():
        ours = max((r["rows_per_s"] for r in best if r["server"] == "ours" and r["body"] == name), default=0.0)
        ratio = ours / stock if stock else 0.0
        summary[name] = {"ours_rows_per_s": ours, "stock_rows_per_s": stock, "ratio": ratio, "target": target}
        summary[name]["pass"] = ratio >= target
        short = "" if ratio >= target else f" (short by {target - ratio:.2f}x, {100 * (1 - ratio / target):.0f}%)"
        log(
            f"{name:6}: ours {ours:12,.0f} rows/s / stock's best (JSON) {stock:12,.0f} = {ratio:.2f}x, "
            f"target >= {target:g}x: {'PASS' if ratio >= target else 'MISS'}{short}"
        )
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
