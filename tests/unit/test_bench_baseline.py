"""bench.run --baseline: the revision's tree and the before/after verdicts (the measurement itself is
`python -m bench.run --baseline REV`, never a timed test)."""

from __future__ import annotations

import pytest

from bench import baseline, report

BASE = report.BASELINE_PREFIX + "abc1234"


def _run(server: str, load: str, rps: float, p99: float, cpu: float, errors: int = 0) -> dict:
    one_round = {"round": 1, "rps": rps, "p50_ms": 1.0, "p99_ms": p99, "server_cpu_us_per_req": cpu}
    best = {**one_round, "rows_per_s": rps, "p90_ms": p99, "errors": errors, "client_cpu_us_per_req": 10.0}
    return {"server": server, "config": "pw=0", "protocol": "rest", "load": load, **best, "rounds": [one_round]}


def _result(*runs: dict) -> dict:
    about = {"server": BASE, "rev": "abc1234", "commit": "f" * 40, "config": "pw=0", "tolerance": 0.05}
    meta = {
        "stamp": "s",
        "command": "c",
        "duration_s": 1,
        "warmup_s": 0,
        "wall_s": 1,
        "cpus": 2,
        "loadavg_end": (0.0, 0.0, 0.0),
        "max_batch_size": 16,
        "max_batch_time": 0.002,
        "tools": {},
        "baseline": about,
    }
    return {"meta": meta, "floor": {}, "runs": list(runs)}


def test_req_s_and_cpu_within_the_tolerance_pass_and_a_slower_or_costlier_scenario_fails():
    result = _result(
        _run("ours", "1row_c1", 960, 2.0, 104),
        _run(BASE, "1row_c1", 1000, 2.0, 100),
        _run("ours", "1row_c16", 940, 2.0, 100),
        _run(BASE, "1row_c16", 1000, 2.0, 100),
        _run("ours", "100rows_c4", 1000, 2.0, 106),
        _run(BASE, "100rows_c4", 1000, 2.0, 100),
    )
    verdicts = {r["load"]: r["pass"] for r in report.baseline_ratios(result)}
    assert verdicts == {"1row_c1": True, "1row_c16": False, "100rows_c4": False}
    md = report.markdown(result)
    assert "Baseline: 1 of 3 scenarios PASS." in md
    assert "| 1 row, c=16 | REST | **0.940** | 1.000 | 1.000 | **1.000** | 0 / 0 | FAIL |" in md


def test_a_higher_p99_is_flagged_without_failing_and_errors_fail():
    result = _result(
        _run("ours", "1row_c1", 1000, 3.0, 100),
        _run(BASE, "1row_c1", 1000, 2.0, 100),
        _run("ours", "1row_c16", 1000, 2.0, 100, errors=3),
        _run(BASE, "1row_c16", 1000, 2.0, 100),
    )
    rows = {r["load"]: r for r in report.baseline_ratios(result)}
    assert rows["1row_c1"]["pass"] and rows["1row_c1"]["p99_flag"] and rows["1row_c1"]["p99_ms"] == 1.5
    assert not rows["1row_c16"]["pass"]
    assert "| PASS (p99 ↑) |" in report.markdown(result)


def test_a_scenario_the_baseline_did_not_measure_fails():
    failed = {"server": BASE, "config": "pw=0", "protocol": "rest", "load": "1row_c16", "failed": "died"}
    (row,) = report.baseline_ratios(_result(_run("ours", "1row_c16", 1000, 2.0, 100), failed))
    assert row == {
        "protocol": "rest",
        "load": "1row_c16",
        "config": "pw=0",
        "missing": BASE,
        "p99_flag": False,
        "pass": False,
    }


def test_the_revision_is_extracted_unimported_and_removed_on_the_way_out():
    with baseline.extracted("HEAD") as tree:
        assert sorted(p.name for p in tree.root.iterdir()) == ["runtime", "settings.json"]
        assert (tree.runtime / "model.py").is_file() and tree.settings()
        with pytest.raises(RuntimeError, match="did not import"):  # no server has imported it
            tree.check_imported()
    assert not tree.root.exists()


def test_a_name_that_is_no_commit_is_refused():
    with pytest.raises(ValueError, match="names no commit"):
        baseline.resolve("no-such-revision")
