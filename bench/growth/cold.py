"""Axis `cold`: process start to ready (/v2/health/ready and the model READY, polled every 10 ms),
the shipped linear model as bench.run serves it (this runtime: models/diabetes/1 with its
verification at load; stock: the same pipeline as one joblib), median of 5 starts, servers
alternating. For each: the time to its first output line, and for this runtime its own load timer
(`pipeline_model_load_seconds`: loading and verifying the model). One more start of each, in the
first config, under `-X importtime` (PYTHONPROFILEIMPORTTIME=1): the top-level imports' cumulative
time, the share importing takes (of that instrumented start). Each server starts once unmeasured first
(the page cache warm for all alike)."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

from bench import common
from bench.common import MODEL_NAME
from bench.growth import fleet
from bench.scenarios import CONFIGS, log
from harness.server import Server

STARTS, QUICK_STARTS = 5, 2
LOAD_METRIC = "pipeline_model_load_seconds"
# `import time: self [us] | cumulative | name`, nesting shown as two more spaces before the name;
# a top-level import has one space after the last bar.
_TOP_LEVEL_IMPORT = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| (?! )\S", re.M)


def top_level_import_s(text: str) -> float:
    """Seconds of top-level imports in `-X importtime` output (each counted once, with its children)."""
    return sum(int(us) for us in _TOP_LEVEL_IMPORT.findall(text)) / 1e6


def run(settings: fleet.Settings) -> list[dict[str, Any]]:
    group = []
    for slug in settings.configs:
        cfg = CONFIGS[slug]
        for kind in ("ours", "stock"):
            root = common.prepare_mlserver_dir(kind, settings.workdir, cfg, "linear", variant="cold")
            group.append(fleet.Contender(kind, cfg.label, common.mlserver_launcher(root, _log(settings, kind, slug))))
    for c in group:  # unmeasured: the first start of each also reads its files into the page cache
        fleet.launch_timed(c.launch, [MODEL_NAME])[0].stop()
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    for i in range(QUICK_STARTS if settings.quick else STARTS):
        for c in fleet.rotated(group, i):
            server, timing = fleet.launch_timed(c.launch, [MODEL_NAME])
            try:
                if c.kind == "ours":
                    timing["load_s"] = server.metric(LOAD_METRIC)
            finally:
                server.stop()
            log(f"  cold {c.label:26} ready {timing['ready_s']:5.2f} s first output {timing['first_output_s']:5.2f} s")
            samples.setdefault((c.kind, c.config), []).append(timing)
    imports = {kind: importtime(settings, kind) for kind in ("ours", "stock")}
    out = []
    for (kind, config), recs in samples.items():
        rec: dict[str, Any] = {"axis": "cold", "point": "cold start", "server": kind, "config": config, "starts": recs}
        for key in recs[0]:
            rec[key] = statistics.median(r[key] for r in recs)
        if "load_s" in rec:
            rec["load_share"] = rec["load_s"] / rec["ready_s"]
        if config == CONFIGS[settings.configs[0]].label:
            rec.update(imports[kind])
        out.append(rec)
    return out


def _log(settings: fleet.Settings, kind: str, slug: str, what: str = "cold") -> Path:
    return settings.workdir / "logs" / f"{kind}-{slug}-{what}.log"


def importtime(settings: fleet.Settings, kind: str) -> dict[str, float]:
    """One start under `-X importtime`: top-level import seconds and their share of that start."""
    slug = settings.configs[0]
    root = common.prepare_mlserver_dir(kind, settings.workdir, CONFIGS[slug], "linear", variant="importtime")
    launch = common.mlserver_launcher(
        root, _log(settings, kind, slug, "importtime"), env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
    server: Server
    server, timing = fleet.launch_timed(launch, [MODEL_NAME])
    try:
        text = server.log_text()
    finally:
        server.stop()
    seconds = top_level_import_s(text)
    log(f"  cold {kind} -X importtime: imports {seconds:.2f} s of {timing['ready_s']:.2f} s to ready")
    return {"import_s": seconds, "importtime_ready_s": timing["ready_s"], "import_share": seconds / timing["ready_s"]}
