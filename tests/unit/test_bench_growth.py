"""bench.growth's verdicts: each issue-28 target judged on the right side of its threshold, with
each server in its best config, and the importtime parse counting top-level imports once."""

from __future__ import annotations

from typing import Any

from bench.growth import targets
from bench.growth.cold import top_level_import_s


def wire(point: str, server: str, config: str, rows_per_s: float, cpu: float, **extra: Any) -> dict[str, Any]:
    rec = {"axis": "rows", "point": point, "rows": 1000, "server": server, "config": config, "encoding": "json"}
    return rec | {"rows_per_s": rows_per_s, "cpu_us_per_row": cpu, "errors_all_rounds": 0} | extra


def by_metric(rows: list[dict[str, Any]], metric: str, vs: str = "stock") -> dict[str, Any]:
    (row,) = [r for r in rows if r["metric"] == metric and r["vs"] == vs]
    return row


def test_rows_compares_best_configs_and_skips_errored_runs() -> None:
    records = [
        wire("1,000 rows", "ours", "pw=0", 300.0, 2.0),
        wire("1,000 rows", "ours", "pw=default", 900.0, 3.0, errors_all_rounds=4),  # errors: not a candidate
        wire("1,000 rows", "stock", "pw=0", 100.0, 2.5),
        wire("1,000 rows", "stock", "pw=default", 200.0, 1.0),
    ]
    rows = targets.rows_targets(records)
    rps = by_metric(rows, "rows/s JSON")
    assert (rps["ours"], rps["other"], rps["other_config"]) == (300.0, 200.0, "pw=default")
    assert rps["ratio"] == 1.5 and rps["pass"] is True  # exactly the target passes
    cpu = by_metric(rows, "CPU/row JSON")  # lowest CPU per row of each: 2.0 / 1.0
    assert cpu["ratio"] == 2.0 and cpu["pass"] is False


def test_sweep_needs_twice_stock_at_one_row_and_par_beyond() -> None:
    records = [
        wire("forest-10 1 row", "ours", "pw=0", 190.0, 1.0, rows=1),
        wire("forest-10 1 row", "stock", "pw=0", 100.0, 1.0, rows=1),
        wire("forest-10 100 rows", "ours", "pw=0", 1000.0, 1.0, rows=100),
        wire("forest-10 100 rows", "stock", "pw=0", 1000.0, 1.0, rows=100),
    ]
    verdicts = {r["point"]: r["pass"] for r in targets.sweep_targets(records) if r["metric"] == "rows/s JSON"}
    assert verdicts == {"forest-10 1 row": False, "forest-10 100 rows": True}


def test_models_judges_the_memory_a_model_adds_at_100() -> None:
    def rec(server: str, models: int, rss: float, ready: float) -> dict[str, Any]:
        return {"server": server, "config": "pw=0", "models": models, "rss_mb": rss, "ready_s": ready, "rps": 1.0}

    records = [rec("ours", 1, 250.0, 3.0), rec("ours", 100, 349.0, 3.0)]  # 1 MB a model
    records += [rec("stock", 1, 200.0, 3.0), rec("stock", 100, 249.5, 4.0)]  # 0.5 MB a model
    rows = [r for r in targets.models_targets(records) if r["point"] == "100 models"]
    rss, ready = by_metric(rows, "RSS/model MB"), by_metric(rows, "time to ready")
    assert (rss["ours"], rss["other"], rss["pass"]) == (1.0, 0.5, False)
    assert ready["pass"] is True
    assert all(r["pass"] is None for r in targets.models_targets(records) if r["point"] == "1 model")


def test_overload_at_twice_capacity() -> None:
    def rec(server: str, multiple: float, goodput: float, p99: float, statuses: dict[str, int]) -> dict[str, Any]:
        return {
            "server": server,
            "config": "pw=0",
            "multiple": multiple,
            "capacity_rps": 1000.0,
            "goodput_rps": goodput,
            "p99_ms": p99,
            "statuses": statuses,
        }

    records = [rec("ours", 1.0, 1000.0, 10.0, {"200": 1}), rec("ours", 2.0, 899.0, 31.0, {"200": 1, "503": 5})]
    records += [rec("stock", 1.0, 500.0, 10.0, {"200": 1}), rec("stock", 2.0, 100.0, 90.0, {"200": 1, "500": 3})]
    rows = targets.overload_targets(records)
    (good,) = [r for r in rows if r["point"] == "ours at 2x" and r["metric"] == "goodput / capacity"]
    assert good["other"] == 1000.0  # the estimate: no goodput above it
    ours = {r["metric"]: r["pass"] for r in rows if r["point"] == "ours at 2x"}
    assert ours == {"goodput / capacity": False, "p99 / p99 at 1x": False, "5xx other than 503": True}
    stock = {r["metric"]: r["pass"] for r in rows if r["point"] == "stock at 2x"}
    assert set(stock.values()) == {None}  # stock's own numbers are shown, not judged
    assert [r["ours"] for r in rows if r["point"] == "stock at 2x" and r["metric"] == "5xx other than 503"] == [3]


def test_overload_judges_against_the_best_goodput_seen_when_above_the_estimate() -> None:
    records = [
        {"server": "ours", "config": "pw=0", "multiple": m, "capacity_rps": 1000.0, "goodput_rps": g}
        | {"p99_ms": 10.0, "statuses": {"200": 1}}
        for m, g in ((1.0, 1000.0), (1.5, 1500.0), (2.0, 1300.0))
    ]
    (good,) = [r for r in targets.overload_targets(records) if r["metric"] == "goodput / capacity"]
    assert good["other"] == 1500.0 and good["pass"] is False  # 1300 / 1500 < 0.9


def test_top_level_imports_are_summed_once() -> None:
    text = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       100 |        100 |   encodings.utf_8",
            "import time:       200 |        300 | encodings",
            "import time:       400 |     500000 | numpy",
            "a log line",
        ]
    )
    assert top_level_import_s(text) == 0.5003
