"""bench.ladder's report and the staged server's hook into the gRPC fast path (the measurement
itself is `python -m bench.ladder`, never a timed test)."""

from __future__ import annotations

import inspect

from bench import _staged_mlserver, ladder
from bench.scenarios import CONFIGS
from runtime.integration import fast_path_grpc


def _run(config: str, rps: float, cpu: float) -> dict:
    return {"config": config, "rps": rps, "server_cpu_us_per_req": cpu}


def test_the_report_adds_stage_by_stage_and_divides_by_stocks_cheaper_config():
    runs = [
        _run("canned", 10_000, 120),
        _run("decoded", 7_000, 165),
        _run("responded", 6_000, 190),
        _run("full", 3_500, 310),
        _run(CONFIGS["pw0"].label, 1_300, 800),
        _run(CONFIGS["pw0-ab"].label, 2_100, 500),
        _run("bare grpc.aio", 14_000, 90),
    ]
    md = ladder.markdown(runs, {"stamp": "s", "command": "c", "load": "1row_c16", "rounds": 1, "duration_s": 1})
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "| +45 | 0.33 |" in rows["decoded"] and "| +120 | 0.62 |" in rows["full"]
    assert rows["canned"].endswith("|  | 0.24 |")
    assert f"| stock {CONFIGS['pw0'].label} | 1,300 | 800 |  | 1.60 |" in md
    assert "0.4x stock's CPU: 200 µs a request" in md


def test_a_stage_that_failed_is_shown_failed_and_the_next_adds_nothing_to_it():
    runs = [_run("canned", 10, 100), _run("responded", 5, 190)]
    md = ladder.markdown(runs, {"stamp": "s", "command": "c", "load": "l", "rounds": 1, "duration_s": 1})
    assert "| decoded | failed |" in md and "| full | failed |" in md and "0.4x" not in md
    assert "| responded | 5 | 190 |  |  |" in md


def test_the_staged_server_cuts_the_fast_paths_own_inference_short():
    original = fast_path_grpc._infer
    try:
        _staged_mlserver._staged("decoded")
        assert fast_path_grpc._infer is not original and inspect.iscoroutinefunction(fast_path_grpc._infer)
    finally:
        fast_path_grpc._infer = original
    # The stages call the fast path's own steps, which must still be there.
    assert callable(fast_path_grpc._prepared) and callable(fast_path_grpc._answered)
