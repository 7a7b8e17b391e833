"""Load generators: wrk (REST, HTTP/1.1 keep-alive) and h2load (gRPC over h2c), plus the in-process floor.

Both are C programs on loopback; their own CPU time is measured (getrusage of the reaped child) and
reported per request so that it can be checked that the client is not the bottleneck.

h2load sees gRPC calls as HTTP/2 requests: a call that fails with a grpc-status still has HTTP status
200 and counts as "succeeded". Failed calls are trailers-only responses (no DATA frame), so the number
of good responses is recovered from the DATA bytes received: good = data_bytes / bytes_per_response,
where bytes_per_response is measured by a real gRPC client in the pre-flight check (see run.py).
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

WRK_LUA = r"""
local f = assert(io.open("%(body)s", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
%(headers)s
%(request)s

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%%d,"duration_us":%%d,"err_connect":%%d,"err_read":%%d,"err_write":%%d,' ..
    '"err_status":%%d,"err_timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"mean_us":%%.1f,"max_us":%%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""
# Each request to the next of these paths in turn (per wrk thread): one load spread over many models.
WRK_ROUND_ROBIN = r"""
local paths = {%(paths)s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format(nil, paths[i])
end
"""


@dataclass
class LoadResult:
    tool: str
    concurrency: int
    duration_s: float
    completed: int  # responses received (good or not)
    ok: int
    errors: int
    rps: float  # good responses per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    client_cpu_s: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_tools(log: Callable[[str], None] = print) -> dict[str, bool]:
    """wrk and h2load (Debian: wrk, nghttp2-client); installs them with apt-get if missing (root)."""
    have = {t: shutil.which(t) is not None for t in ("wrk", "h2load")}
    if all(have.values()):
        return have
    if shutil.which("apt-get"):
        log("installing wrk/nghttp2-client with apt-get ...")
        pkgs = [p for t, p in (("wrk", "wrk"), ("h2load", "nghttp2-client")) if not have[t]]
        cmd = ["apt-get", "install", "-y", "-qq", *pkgs]
        if subprocess.run(cmd, capture_output=True, timeout=300).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
            subprocess.run(cmd, capture_output=True, timeout=300)
    return {t: shutil.which(t) is not None for t in ("wrk", "h2load")}


def _run_child(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a load generator; return its output and the CPU seconds it used (user+system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, cpu


def run_wrk(
    url: str,
    body_path: Path,
    concurrency: int,
    duration: float,
    workdir: Path,
    timeout_s: float = 5.0,
    headers: dict[str, str] | None = None,
    paths: Sequence[str] = (),
) -> LoadResult:
    """`headers` are set after (over) the JSON content type: a binary body's, say. `paths`: each
    request goes to the next of them in turn (instead of the url's path)."""
    script = workdir / f"wrk-{body_path.stem}.lua"
    lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items())
    request = WRK_ROUND_ROBIN % {"paths": ",".join(json.dumps(p) for p in paths)} if paths else ""
    script.write_text(WRK_LUA % {"body": str(body_path), "headers": lines, "request": request})
    threads = min(2, concurrency)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(script),
        url,
    ]
    proc, cpu = _run_child(cmd, timeout=duration + 60)
    m = re.search(r"^BENCHJSON (.*)$", proc.stdout, re.M)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    r = json.loads(m.group(1))
    dur = r["duration_us"] / 1e6
    errors = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"]
    ok = r["requests"] - r["err_status"]
    return LoadResult(
        tool="wrk",
        concurrency=concurrency,
        duration_s=dur,
        completed=r["requests"],
        ok=ok,
        errors=errors,
        rps=ok / dur,
        p50_ms=r["p50_us"] / 1e3,
        p90_ms=r["p90_us"] / 1e3,
        p99_ms=r["p99_us"] / 1e3,
        mean_ms=r["mean_us"] / 1e3,
        client_cpu_s=cpu,
    )


_H2_REQS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_H2_DATA = re.compile(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?, .*?\((\d+)\) data")
_H2_FIN = re.compile(r"finished in ([\d.]+)(m?s)")


def run_h2load_grpc(
    url: str, body_path: Path, concurrency: int, duration: float, workdir: Path, response_bytes: int | None
) -> LoadResult:
    """gRPC unary calls with h2load: one connection per client, one stream at a time per connection."""
    log = workdir / f"h2load-{body_path.stem}.log"
    log.unlink(missing_ok=True)  # h2load does not truncate its log file
    cmd = [
        "h2load",
        "-c",
        str(concurrency),
        "-m",
        "1",
        "-t",
        "1",
        "-D",
        f"{max(1, round(duration))}",
        "-N",
        "10",
        "--log-file",
        str(log),
        "-d",
        str(body_path),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        url,
    ]
    proc, cpu = _run_child(cmd, timeout=duration + 60)
    out = proc.stdout
    mr, md, mf = _H2_REQS.search(out), _H2_DATA.search(out), _H2_FIN.search(out)
    if proc.returncode != 0 or not (mr and md and mf):
        raise RuntimeError(f"h2load failed ({proc.returncode}): {out[-2000:]} {proc.stderr[-2000:]}")
    total, started, done, succeeded, failed, errored, timeouts = map(int, mr.groups())
    data_bytes = int(md.group(3))
    dur = float(mf.group(1)) / (1000.0 if mf.group(2) == "ms" else 1.0)
    note = ""
    ok = succeeded
    if response_bytes:
        good = data_bytes / response_bytes
        if abs(good - round(good)) > 1e-9:
            note = f"gRPC DATA bytes not a multiple of {response_bytes}: good-call count approximate"
        ok = min(succeeded, int(round(good)))
    else:
        note = "gRPC status not checked (no reference response size)"
    errors = (done - ok) + errored + timeouts
    lat = _h2load_latencies(log)
    p50, p90, p99 = (np.percentile(lat, [50, 90, 99]) / 1e3) if len(lat) else (float("nan"),) * 3
    return LoadResult(
        tool="h2load",
        concurrency=concurrency,
        duration_s=dur,
        completed=done,
        ok=ok,
        errors=errors,
        rps=ok / dur,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(lat.mean() / 1e3) if len(lat) else float("nan"),
        client_cpu_s=cpu,
        note=note,
    )


def _h2load_latencies(log: Path) -> np.ndarray:
    """Per-request elapsed µs from h2load's log (start µs, HTTP status, elapsed µs)."""
    try:
        arr = np.loadtxt(log, dtype=np.int64, ndmin=2)
    except (OSError, ValueError):
        return np.array([], dtype=float)
    if arr.size == 0:
        return np.array([], dtype=float)
    return arr[:, 2].astype(float)


def floor(predict: Callable[[np.ndarray], object], X: np.ndarray, seconds: float = 1.0) -> dict[str, float]:
    """In-process floor: `predict(X)` timed call by call for ~seconds (after a short warmup)."""
    for _ in range(50):
        predict(X)
    times: list[int] = []
    deadline = time.perf_counter() + seconds
    pc = time.perf_counter_ns
    while time.perf_counter() < deadline and len(times) < 200_000:
        t0 = pc()
        predict(X)
        times.append(pc() - t0)
    t = np.asarray(times, dtype=float) / 1e3
    mean = float(t.mean())
    return {
        "calls": len(times),
        "p50_us": float(np.percentile(t, 50)),
        "p99_us": float(np.percentile(t, 99)),
        "mean_us": mean,
        "rps": 1e6 / mean,
        "rows_per_s": 1e6 / mean * len(X),
    }
