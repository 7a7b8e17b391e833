"""Axis `rows`: rows per request 1 to 10,000 over REST at concurrency 2, on the shipped linear
model's pipeline — this runtime sent JSON and V2 binary, the stock runtime and KServe JSON; rows/s
and the server's CPU per row."""

from __future__ import annotations

from typing import Any

from bench import common
from bench.growth import fleet

SIZES = (1, 10, 100, 1_000, 10_000)


def point_name(rows: int) -> str:
    return f"{rows:,} row" + ("s" if rows > 1 else "")


def run(settings: fleet.Settings) -> list[dict[str, Any]]:
    fitted = common.bench_pipeline("linear")
    points = [fleet.make_point(settings, point_name(n), common.bench_rows(n), fitted) for n in SIZES]
    return fleet.measure_points(fleet.contenders(settings, fitted, "rows"), points, settings, "rows")
