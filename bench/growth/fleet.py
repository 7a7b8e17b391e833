"""What the growth axes share: the run's settings, model repositories holding any fitted pipeline
under any number of names (this runtime's packaged by pipeline_tools, the stock runtime's as one
joblib each), the servers of a comparison started together and always stopped, pre-flight checks,
one wrk point with the server's CPU, and the time from process start to ready.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

from bench import common, loadgen
from bench.common import MODEL_NAME, MODEL_VERSION, Launcher, MLServerConfig
from bench.large_batch import binary_body, check
from bench.scenarios import CONFIGS, log
from harness.repository import make_repository
from harness.server import Server, stop_all

# Two requests in flight, as bench.large_batch: one in the server, one on its way, on 2 cores.
CONCURRENCY = 2
WRK_TIMEOUT_S = 30.0  # a 10,000-row JSON request to a slow server takes well under a second
READY_POLL_S = 0.01  # the time-to-ready resolution


@dataclass(frozen=True)
class Settings:
    """The run's knobs, the same for every axis."""

    duration: int  # seconds per wrk point and round
    rounds: int  # best round kept
    warmup: int  # seconds of unmeasured load before a point's first round (0: none)
    configs: tuple[str, ...]  # MLServer configs (bench.scenarios.CONFIGS) each MLServer runtime runs in
    workdir: Path
    quick: bool


# ---------------------------------------------------------------- repositories and servers


def fleet_dir(
    kind: str,
    settings: Settings,
    cfg: MLServerConfig,
    fitted: Any,
    names: Sequence[str] = (MODEL_NAME,),
    tag: str = "",
    extra: dict[str, Any] | None = None,
) -> Path:
    """A repository serving `fitted` under each of `names`: kind "ours" packaged by
    pipeline_tools.package.write_model_dir (its own verification at load included) with `extra`
    merged into parameters.extra; kind "stock" one joblib per name for mlserver_sklearn (as
    bench.common.prepare_mlserver_dir builds both)."""
    from pipeline_tools.package import write_model_dir  # MLServer-free

    root = settings.workdir / "-".join(filter(None, (kind, cfg.slug, tag)))
    if kind == "ours":
        make_repository(root, workers=cfg.parallel_workers)
        for name in names:
            target = write_model_dir(fitted, name, MODEL_VERSION, root / "models")
            if extra:
                _merge_extra(target / "model-settings.json", extra)
    elif kind == "stock":
        make_repository(root, workers=cfg.parallel_workers, base=common.stock_server_settings(), link_runtime=False)
        for name in names:
            common.add_stock_model(root, name, fitted, cfg)
    else:
        raise ValueError(kind)
    return root


def _merge_extra(path: Path, extra: dict[str, Any]) -> None:
    doc = json.loads(path.read_text())
    doc["parameters"]["extra"] = {**doc["parameters"].get("extra", {}), **extra}
    path.write_text(json.dumps(doc, indent=2) + "\n")


@dataclass(frozen=True)
class Contender:
    """One server of a comparison and the request encodings it is sent."""

    kind: str  # ours, stock, kserve
    config: str  # the MLServer config's label (KServe: its one)
    launch: Launcher
    encodings: tuple[str, ...] = ("json",)

    @property
    def label(self) -> str:
        return f"{self.kind} [{self.config}]"


KSERVE_CONFIG = "kserve workers=1"


def contenders(settings: Settings, fitted: Any, tag: str, binary: bool = True) -> list[Contender]:
    """This runtime (sent JSON, and V2 binary if `binary`) and the stock runtime (JSON) in each
    config, and KServe's server (JSON) once."""
    out = []
    logs = settings.workdir / "logs"
    for slug in settings.configs:
        cfg = CONFIGS[slug]
        for kind, encodings in (("ours", ("json", "binary") if binary else ("json",)), ("stock", ("json",))):
            root = fleet_dir(kind, settings, cfg, fitted, tag=tag)
            launch = common.mlserver_launcher(root, logs / f"{kind}-{slug}-{tag}.log")
            out.append(Contender(kind, cfg.label, launch, encodings))
    model_dir = common.prepare_kserve_dir(settings.workdir, fitted=fitted, tag=tag)
    out.append(Contender("kserve", KSERVE_CONFIG, common.kserve_launcher(model_dir, logs / f"kserve-{tag}.log")))
    return out


@contextlib.contextmanager
def running(group: Sequence[Contender]) -> Iterator[list[tuple[Contender, Server]]]:
    """Every contender's server, launched side by side and ready; all stopped on the way out (also
    on an error or Ctrl-C)."""
    servers: list[Server] = []
    try:
        for c in group:
            servers.append(c.launch())
        for server in servers:
            server.wait_ready(common.READY_TIMEOUT_S)
        yield list(zip(group, servers, strict=True))
    finally:
        stop_all(servers)


def rotated(items: Sequence[Any], k: int) -> list[Any]:
    """items starting at the k-th (mod len): who goes first changes from round to round."""
    if not items:
        return []
    k %= len(items)
    return [*items[k:], *items[:k]]


# ---------------------------------------------------------------- request bodies and points


@dataclass(frozen=True)
class Body:
    path: Path
    headers: dict[str, str]


@dataclass(frozen=True)
class Point:
    """One request size of one model: its bodies by encoding and what the server must answer."""

    name: str
    rows: int
    bodies: dict[str, Body]
    expected: np.ndarray


def make_point(settings: Settings, name: str, X: np.ndarray, fitted: Any) -> Point:
    """The JSON body (every server) and the V2 binary body (this runtime) of these rows."""
    stem = settings.workdir / "bodies" / name.replace(" ", "_").replace(",", "")
    stem.parent.mkdir(parents=True, exist_ok=True)
    bodies = {}
    for encoding, (content, headers) in {"json": (common.rest_body(X), {}), "binary": binary_body(X)}.items():
        path = stem.with_suffix(f".{encoding}")
        path.write_bytes(content)
        bodies[encoding] = Body(path, headers)
    return Point(name, len(X), bodies, np.asarray(fitted.predict(X), dtype=float))


def preflight(server: Server, c: Contender, point: Point, model: str = MODEL_NAME) -> None:
    """One real request per encoding, its predictions compared with the pipeline's."""
    for encoding in c.encodings:
        body = point.bodies[encoding]
        check(server, body.path.read_bytes(), body.headers, point.expected, f"{c.label} {point.name} {encoding}", model)


def wrk_point(
    server: Server,
    body: Body,
    rows: int,
    seconds: int,
    settings: Settings,
    concurrency: int = CONCURRENCY,
    models: Sequence[str] = (MODEL_NAME,),
) -> dict[str, Any]:
    """wrk for `seconds` (spread round-robin over `models`), with the server's CPU (process tree)."""
    paths = [f"/v2/models/{m}/infer" for m in models] if len(models) > 1 else []
    url = f"{server.http_url}/v2/models/{models[0]}/infer"
    before = common.cpu_snapshot(server)
    res = loadgen.run_wrk(
        url,
        body.path,
        concurrency,
        seconds,
        settings.workdir,
        timeout_s=WRK_TIMEOUT_S,
        headers=body.headers,
        paths=paths,
    )
    cpu = common.cpu_delta(before, common.cpu_snapshot(server))
    done = max(res.completed, 1)
    return {
        "rps": res.rps,
        "rows_per_s": res.rps * rows,
        "p50_ms": res.p50_ms,
        "p99_ms": res.p99_ms,
        "errors": res.errors,
        "cpu_us_per_row": cpu / (done * rows) * 1e6,
        "cpu_us_per_req": cpu / done * 1e6,
    }


def measure_points(
    group: Sequence[Contender], points: Sequence[Point], settings: Settings, axis: str
) -> list[dict[str, Any]]:
    """Every contender on every point and encoding, round after round (who goes first rotating per
    round and point); per run the best round's rows/s and the lowest CPU per row (the least
    disturbed by the shared machine), every round kept."""
    rounds: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    with running(group) as live:
        for point in points:
            for c, server in live:
                preflight(server, c, point)
        runs = [(c, server, e) for c, server in live for e in c.encodings]
        for r in range(settings.rounds):
            for j, point in enumerate(points):
                for c, server, encoding in rotated(runs, r + j):
                    body = point.bodies[encoding]
                    if r == 0 and settings.warmup:
                        wrk_point(server, body, point.rows, settings.warmup, settings)
                    rec = wrk_point(server, body, point.rows, settings.duration, settings)
                    log(
                        f"  {axis} {point.name:>22} {c.label:26} {encoding:6} {rec['rows_per_s']:12,.0f} rows/s "
                        f"{rec['cpu_us_per_row']:9.2f} us/row p99 {rec['p99_ms']:8.2f} ms err {rec['errors']}"
                    )
                    rounds.setdefault((point.name, c.kind, c.config, encoding), []).append(rec)
    return [best_of(axis, key, recs, points) for key, recs in rounds.items()]


def best_of(
    axis: str, key: tuple[str, str, str, str], recs: list[dict[str, Any]], points: Sequence[Point]
) -> dict[str, Any]:
    point, kind, config, encoding = key
    clean = [r for r in recs if r["errors"] == 0] or recs
    best = max(clean, key=lambda r: r["rows_per_s"])
    rows = next(p.rows for p in points if p.name == point)
    return {
        "axis": axis,
        "point": point,
        "rows": rows,
        "server": kind,
        "config": config,
        "encoding": encoding,
        **best,
        "cpu_us_per_row": min(r["cpu_us_per_row"] for r in clean),
        "errors_all_rounds": sum(r["errors"] for r in recs),
        "rounds": recs,
    }


# ---------------------------------------------------------------- start-up and memory


def is_ready(server: Server, names: Sequence[str]) -> bool:
    """/v2/health/ready, and every one of `names` READY in the repository index."""
    try:
        if requests.get(f"{server.http_url}/v2/health/ready", timeout=1).status_code != 200:
            return False
        index = requests.post(f"{server.http_url}/v2/repository/index", json={}, timeout=5)
    except requests.RequestException:
        return False
    if index.status_code != 200:
        return False
    states = {m["name"]: m.get("state") for m in index.json()}
    return all(states.get(name) == "READY" for name in names)


def launch_timed(
    launch: Launcher, names: Sequence[str], timeout_s: float = common.READY_TIMEOUT_S
) -> tuple[Server, dict[str, float]]:
    """The launched server, ready, and the seconds from process start to its first output line
    and to ready. The caller stops it (a failure to become ready stops it here)."""
    started = time.monotonic()
    server = launch()
    first_output: float | None = None
    try:
        while not is_ready(server, names):
            now = time.monotonic() - started
            if first_output is None and server.log_path.stat().st_size > 0:
                first_output = now
            if server.proc.poll() is not None or now > timeout_s:
                raise RuntimeError(f"{server.log_path.name}: not ready after {now:.0f} s:\n{server.log_tail()}")
            time.sleep(READY_POLL_S)
        ready = time.monotonic() - started
        server.wait_ready(timeout_s)  # the harness' own check (gRPC too), after the clock stopped
    except BaseException:
        server.stop()
        raise
    return server, {"ready_s": ready, "first_output_s": ready if first_output is None else first_output}


def memory_mb(server: Server) -> dict[str, float]:
    """RSS and PSS of the server's process tree (PSS shares a worker's pages with its parent)."""
    import psutil

    rss = pss = 0.0
    for p in server.processes():
        try:
            info = p.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return {"rss_mb": rss / 2**20, "pss_mb": pss / 2**20}
