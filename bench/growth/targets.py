"""Issue 28's targets on the growth records: each point as this runtime ÷ the other side, PASS or
FAIL (None: shown for information, the issue sets no target there). Each server is taken in the
config it does best in, for each metric (highest rows/s or req/s, lowest CPU, memory or time)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

Record = dict[str, Any]

ROWS_RPS_TARGET = 1.5  # every batch size: rows/s >= 1.5x stock's over JSON
ROWS_CPU_TARGET = 1.0  # and CPU per row <= stock's
SWEEP_ONE_ROW_TARGET = 2.0  # forest and feature sweeps: >= 2x stock at 1 row
SWEEP_TARGET = 1.0  # >= stock everywhere else
MODELS_JUDGED = 100  # RSS per model and time to ready <= stock's, with 100 models loaded
COLD_TARGET = 1.0  # cold start <= stock's
OVERLOAD_JUDGED = 2.0  # at 2x capacity:
GOODPUT_SHARE = 0.9  # goodput >= 90 % of capacity,
P99_GROWTH = 3.0  # p99 of the answered <= 3x its value at 1x,
ALLOWED_5XX = {503}  # no 5xx other than the documented 503


def _best(records: Iterable[Record], key: str, *, lower: bool = False, **match: Any) -> tuple[float, str] | None:
    """The best value of `key` (and its config) among error-free records matching `match`."""
    cands = [
        r
        for r in records
        if all(r.get(k) == v for k, v in match.items()) and not r.get("errors_all_rounds") and r.get(key) is not None
    ]
    if not cands:
        return None
    pick = (min if lower else max)(cands, key=lambda r: r[key])
    return float(pick[key]), str(pick["config"])


def verdict(
    axis: str,
    point: str,
    metric: str,
    ours: tuple[float, str] | None,
    other: tuple[float, str] | None,
    vs: str,
    target: float | None,
    higher_is_better: bool,
    subject: str = "ours",
) -> list[Record]:
    """One row (none when either side is missing): ours (or `subject`'s value) / other, judged
    against `target` if any."""
    if ours is None or other is None or not other[0]:
        return []
    ratio = ours[0] / other[0]
    judged = None if target is None else (ratio >= target if higher_is_better else ratio <= target)
    return [
        {
            "axis": axis,
            "point": point,
            "metric": metric,
            "subject": subject,
            "ours": ours[0],
            "ours_config": ours[1],
            "other": other[0],
            "other_config": other[1],
            "vs": vs,
            "ratio": ratio,
            "target": None if target is None else f"{'>=' if higher_is_better else '<='} {target:g}",
            "pass": judged,
        }
    ]


def _points(records: list[Record]) -> list[str]:
    return list(dict.fromkeys(r["point"] for r in records))


def wire_targets(records: list[Record], axis: str, rps_target: Callable[[Record], float]) -> list[Record]:
    """rows and sweep: rows/s over JSON against stock (the target by point), CPU per row (rows only),
    V2 binary and KServe for information."""
    out: list[Record] = []
    for point in _points(records):
        here = [r for r in records if r["point"] == point]
        json_: dict[str, Any] = {"point": point, "encoding": "json"}
        ours, stock = (
            _best(here, "rows_per_s", server="ours", **json_),
            _best(here, "rows_per_s", server="stock", **json_),
        )
        out += verdict(axis, point, "rows/s JSON", ours, stock, "stock", rps_target(here[0]), True)
        if axis == "rows":
            o, s = (_best(here, "cpu_us_per_row", lower=True, server=k, **json_) for k in ("ours", "stock"))
            out += verdict(axis, point, "CPU/row JSON", o, s, "stock", ROWS_CPU_TARGET, False)
        binary = _best(here, "rows_per_s", server="ours", point=point, encoding="binary")
        out += verdict(axis, point, "rows/s binary vs JSON", binary, stock, "stock", None, True)
        out += verdict(
            axis, point, "rows/s JSON", ours, _best(here, "rows_per_s", server="kserve", **json_), "kserve", None, True
        )
    return out


def rows_targets(records: list[Record]) -> list[Record]:
    return wire_targets(records, "rows", lambda r: ROWS_RPS_TARGET)


def sweep_targets(records: list[Record]) -> list[Record]:
    return wire_targets(records, "sweep", lambda r: SWEEP_ONE_ROW_TARGET if r["rows"] == 1 else SWEEP_TARGET)


def per_model_rss(records: list[Record], server: str, count: int) -> tuple[float, str] | None:
    """RSS a model adds, (RSS with `count` models - RSS with 1) / (count - 1), in the config where it
    is lowest; with 1 model, the server's whole RSS."""
    one = _best(records, "rss_mb", lower=True, server=server, models=1)
    here = [r for r in records if r["server"] == server and r["models"] == count]
    if one is None or not here:
        return None
    if count == 1:
        return one
    per = [((r["rss_mb"] - one[0]) / (count - 1), r["config"]) for r in here]
    return min(per)


def models_targets(records: list[Record]) -> list[Record]:
    out: list[Record] = []
    for count in sorted({r["models"] for r in records}):
        point = f"{count} model" + ("s" if count > 1 else "")
        judged = count == MODELS_JUDGED
        o, s = (per_model_rss(records, k, count) for k in ("ours", "stock"))
        out += verdict("models", point, "RSS/model MB", o, s, "stock", 1.0 if judged else None, False)
        o, s = (_best(records, "ready_s", lower=True, server=k, models=count) for k in ("ours", "stock"))
        out += verdict("models", point, "time to ready", o, s, "stock", 1.0 if judged else None, False)
        o, s = (_best(records, "rps", server=k, models=count) for k in ("ours", "stock"))
        out += verdict("models", point, "req/s round-robin", o, s, "stock", None, True)
    return out


def cold_targets(records: list[Record]) -> list[Record]:
    o, s = (_best(records, "ready_s", lower=True, server=k) for k in ("ours", "stock"))
    out = verdict("cold", "cold start", "median start to ready", o, s, "stock", COLD_TARGET, False)
    o, s = (_best(records, "first_output_s", lower=True, server=k) for k in ("ours", "stock"))
    out += verdict("cold", "cold start", "start to first output", o, s, "stock", None, False)
    o, s = (_best(records, "import_s", lower=True, server=k) for k in ("ours", "stock"))
    out += verdict("cold", "cold start", "top-level imports (-X importtime)", o, s, "stock", None, False)
    return out


def other_5xx(statuses: dict[str, int]) -> int:
    return sum(n for code, n in statuses.items() if int(code) >= 500 and int(code) not in ALLOWED_5XX)


def best_seen(records: list[Record], server: str) -> float:
    """A server's capacity as judged: the closed-loop estimate the offered rates were derived from,
    or the highest goodput it showed at any offered rate if that was higher (on a shared machine
    the estimate can come out low; the larger one makes the target no easier)."""
    mine = [r for r in records if r["server"] == server]
    return max([r["capacity_rps"] for r in mine] + [r["goodput_rps"] for r in mine])


def overload_targets(records: list[Record]) -> list[Record]:
    """Per server at 2x: goodput / capacity (best_seen), p99 at 2x / p99 at 1x, 5xx other than 503 (this
    runtime's judged, stock's for information); ours ÷ stock goodput at every multiple."""
    out: list[Record] = []
    at = {(r["server"], r["multiple"]): r for r in records}
    for server in dict.fromkeys(r["server"] for r in records):
        judged = server != "stock"
        two, one = at.get((server, OVERLOAD_JUDGED)), at.get((server, 1.0))
        if two is None:
            continue
        point = f"{server} at {OVERLOAD_JUDGED:g}x"
        good = (two["goodput_rps"], two["config"])
        out += verdict(
            "overload",
            point,
            "goodput / capacity",
            good,
            (best_seen(records, server), two["config"]),
            "capacity",
            GOODPUT_SHARE if judged else None,
            True,
            server,
        )
        if one is not None and not math.isnan(two["p99_ms"]) and not math.isnan(one["p99_ms"]):
            out += verdict(
                "overload",
                point,
                "p99 / p99 at 1x",
                (two["p99_ms"], two["config"]),
                (one["p99_ms"], one["config"]),
                "1x",
                P99_GROWTH if judged else None,
                False,
                server,
            )
        bad = other_5xx(two["statuses"])
        out.append(
            {
                "axis": "overload",
                "point": point,
                "metric": "5xx other than 503",
                "subject": server,
                "ours": bad,
                "ours_config": two["config"],
                "other": 0,
                "other_config": "",
                "vs": "none allowed",
                "ratio": None,
                "target": "= 0",
                "pass": (bad == 0) if judged else None,
            }
        )
    for multiple in sorted({r["multiple"] for r in records}):
        o, s = at.get(("ours", multiple)), at.get(("stock", multiple))
        if o and s:
            out += verdict(
                "overload",
                f"{multiple:g}x",
                "goodput",
                (o["goodput_rps"], o["config"]),
                (s["goodput_rps"], s["config"]),
                "stock",
                None,
                True,
            )
    return out


AXIS_TARGETS: dict[str, Callable[[list[Record]], list[Record]]] = {
    "rows": rows_targets,
    "sweep": sweep_targets,
    "models": models_targets,
    "cold": cold_targets,
    "overload": overload_targets,
}


def evaluate(results: dict[str, list[Record]]) -> list[Record]:
    """Every axis' rows, in axis order."""
    return [row for axis, records in results.items() for row in AXIS_TARGETS[axis](records)]
