"""The growth run as Markdown (verdicts first, then every measured record) and one PNG per axis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import _f

Record = dict[str, Any]
TITLES = {
    "rows": "Rows per request (REST, c=2)",
    "sweep": "Pipeline size: trees and features (REST, c=2)",
    "models": "Models per server",
    "cold": "Cold start (process start to ready)",
    "overload": "Overload (1 row, REST, fixed offered rate)",
}
COLORS = {"ours": "#1f77b4", "ours+cap": "#17becf", "stock": "#ff7f0e", "kserve": "#2ca02c"}
# The raw columns each axis' table shows, beside point, server and config.
COLUMNS = {
    "rows": ("encoding", "rows_per_s", "rps", "cpu_us_per_row", "p50_ms", "p99_ms", "errors_all_rounds"),
    "sweep": ("encoding", "rows_per_s", "rps", "cpu_us_per_row", "p50_ms", "p99_ms", "errors_all_rounds"),
    "models": ("ready_s", "rss_mb", "pss_mb", "rps", "errors_all_rounds"),
    "cold": ("ready_s", "first_output_s", "load_s", "load_share", "import_s", "importtime_ready_s", "import_share"),
    "overload": ("capacity_rps", "offered_rps", "goodput_rps", "p50_ms", "p99_ms", "statuses", "in_flight_at_end"),
}


def fails(verdicts: list[Record]) -> list[Record]:
    return [v for v in verdicts if v["pass"] is False]


def _mark(v: Record) -> str:
    return {True: "PASS", False: "**FAIL**", None: "info"}[v["pass"]]


def verdict_line(v: Record) -> str:
    """One verdict as printed at the end of the run."""
    ratio = "" if v["ratio"] is None else f"{v['ratio']:.2f}x "
    target = f" (target {v['target']})" if v["target"] else ""
    return (
        f"{v['axis']:8} {v['point']:>20} {v['metric']:34} {v['subject']} {_f(v['ours'], 2)} [{v['ours_config']}] "
        f"vs {v['vs']} {_f(v['other'], 2)} [{v['other_config']}]: {ratio}{_mark(v)}{target}"
    )


def markdown(result: Record) -> str:
    meta, verdicts = result["meta"], result["verdicts"]
    failed = fails(verdicts)
    lines = [
        f"# Growth {meta['stamp']}",
        "",
        f"Command: `{meta['command']}`; axes {', '.join(meta['axes'])}; MLServer configs {', '.join(meta['configs'])}; "
        f"wrk points {meta['rounds']} round(s) of {meta['duration_s']} s (best kept); {meta['wall_s']} s in all; "
        f"{meta['cpus']} CPUs; load average before {', '.join(f'{x:.2f}' for x in meta['loadavg_start'])}, "
        f"after {', '.join(f'{x:.2f}' for x in meta['loadavg_end'])}. Loopback only, one server under load at a time.",
        "",
        f"**{len(failed)} FAIL** of {sum(v['pass'] is not None for v in verdicts)} judged points"
        + (
            ": " + "; ".join(f"{v['axis']} {v['point']} {v['metric']} {v['ratio'] or v['ours']:.2f}" for v in failed)
            if failed
            else "."
        ),
    ]
    for axis, records in result["axes"].items():
        lines += [
            "",
            f"## {TITLES[axis]}",
            "",
            "| point | metric | value | config | vs | other | config | ratio | target | |",
        ]
        lines.append("|---|---|---:|---|---|---:|---|---:|---|---|")
        for v in (v for v in verdicts if v["axis"] == axis):
            ratio = "" if v["ratio"] is None else f"{v['ratio']:.2f}"
            lines.append(
                f"| {v['point']} | {v['metric']} | {_f(v['ours'], 2)} | {v['ours_config']} | {v['vs']} "
                f"| {_f(v['other'], 2)} | {v['other_config']} | {ratio} | {v['target'] or ''} | {_mark(v)} |"
            )
        cols = COLUMNS[axis]
        lines += ["", "| point | server | config | " + " | ".join(cols) + " |", "|---|---|---|" + "---:|" * len(cols)]
        for r in records:
            cells = [
                _f(r.get(c), 3 if c.endswith("share") else 2) if not isinstance(r.get(c), dict) else str(r[c])
                for c in cols
            ]
            lines.append(f"| {r['point']} | {r['server']} | {r['config']} | " + " | ".join(cells) + " |")
        if result.get("charts", {}).get(axis):
            lines += ["", f"Chart: `{result['charts'][axis]}`"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- charts


def _series(
    records: list[Record], key: str, x: str, lower: bool = False, **match: Any
) -> dict[str, tuple[list[float], list[float]]]:
    """Per server (and encoding), x -> the best `key` over configs."""
    best: dict[str, dict[float, float]] = {}
    for r in records:
        if any(r.get(k) != v for k, v in match.items()) or r.get(key) is None:
            continue
        name = r["server"] + (" binary" if r.get("encoding") == "binary" else "")
        have = best.setdefault(name, {})
        value = r[key]
        if r[x] not in have or (value < have[r[x]] if lower else value > have[r[x]]):
            have[r[x]] = value
    order = sorted(
        best, key=lambda name: (list(COLORS).index(name.split()[0]) if name.split()[0] in COLORS else 9, name)
    )
    return {name: (sorted(best[name]), [best[name][k] for k in sorted(best[name])]) for name in order}


def _lines(
    ax: Any, series: dict[str, tuple[list[float], list[float]]], title: str, ylabel: str, xlabel: str, log: bool = True
) -> None:
    for name, (xs, ys) in series.items():
        color = COLORS.get(name.split()[0], "#7f7f7f")
        ax.plot(xs, ys, marker="o", color=color, linestyle="--" if "binary" in name else "-", label=name)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _rows_chart(records: list[Record], axes: list[Any]) -> None:
    _lines(axes[0], _series(records, "rows_per_s", "rows"), "rows/s (best config)", "rows/s", "rows per request")
    _lines(
        axes[1],
        _series(records, "cpu_us_per_row", "rows", lower=True),
        "server CPU per row",
        "µs/row",
        "rows per request",
    )


def _sweep_chart(records: list[Record], axes: list[Any]) -> None:
    for i, (family, xlabel) in enumerate((("forest", "trees"), ("linear", "features"))):
        for j, rows in enumerate((1, 100)):
            series = _series(records, "rows_per_s", "size", family=family, rows=rows, encoding="json")
            _lines(axes[2 * i + j], series, f"{family}, {rows} row(s), JSON", "rows/s", xlabel)


def _models_chart(records: list[Record], axes: list[Any]) -> None:
    for ax, (key, label, lower) in zip(
        axes,
        (
            ("rss_mb", "RSS MB (process tree)", True),
            ("ready_s", "s to ready", True),
            ("rps", "req/s round-robin", False),
        ),
        strict=True,
    ):
        _lines(ax, _series(records, key, "models", lower=lower), label, label, "models loaded")


def _cold_chart(records: list[Record], axes: list[Any]) -> None:
    ax = axes[0]
    labels = [f"{r['server']}\n{r['config']}" for r in records]
    ax.bar(
        range(len(records)),
        [r["ready_s"] for r in records],
        color=[COLORS.get(r["server"], "#7f7f7f") for r in records],
    )
    for i, r in enumerate(records):
        parts = [f"{r['ready_s']:.2f} s"]
        if r.get("load_s") is not None:
            parts.append(f"load {r['load_s']:.2f}")
        if r.get("import_share") is not None:
            parts.append(f"imports {100 * r['import_share']:.0f} %")
        ax.annotate("\n".join(parts), (i, r["ready_s"]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("median s, process start to ready")
    ax.margins(y=0.3)
    ax.set_title("cold start (median)", fontsize=10)


def _overload_chart(records: list[Record], axes: list[Any]) -> None:
    _lines(
        axes[0],
        _series(records, "goodput_rps", "multiple"),
        "goodput (200/s)",
        "req/s",
        "offered ÷ capacity",
        log=False,
    )
    _lines(
        axes[1],
        _series(records, "p99_ms", "multiple", lower=True),
        "p99 of the 200s",
        "ms",
        "offered ÷ capacity",
        log=False,
    )


CHARTS: dict[str, tuple[int, Callable[[list[Record], list[Any]], None]]] = {
    "rows": (2, _rows_chart),
    "sweep": (4, _sweep_chart),
    "models": (3, _models_chart),
    "cold": (1, _cold_chart),
    "overload": (2, _overload_chart),
}


def chart(axis: str, records: list[Record], stamp: str, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels, draw = CHARTS[axis]
    fig, axes = plt.subplots(1, panels, figsize=(max(8.0, 5.2 * panels), 4.4), squeeze=False)
    draw(records, list(axes[0]))
    fig.suptitle(f"pipeline-runtime growth {stamp}: {TITLES[axis]}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
