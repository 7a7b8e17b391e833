"""The canary verdict of `rollout analyze`: one window's increases per version (Side, Window), the
thresholds the canary is held to, the statistics, every check, the decision and its exit code, and
the table that shows them. It reads nothing itself: pipeline_tools.rollout.sources fills the window.

The checks: request rate and share, server errors (5xx) and contract refusals (4xx) on their own,
latency quantiles per stage from the runtime's stage histogram, the out-of-distribution share, and
the predictions themselves (PSI and a chi-square test of homogeneity on
`pipeline_prediction_bucket_total`). The decisions and their exit codes:

    0  promote: every check passed          1  roll back: a check failed on enough data
    3  not enough data to judge (yet)       2  no analysis: bad arguments, source unreachable,
                                               prediction buckets that cannot be compared

scipy (a dependency of scikit-learn) is imported only where a chi-square p-value is computed, and
runtime.core.drift (numpy) only inside the prediction check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# --------------------------------------------------------------------------------------- constants

PROMOTE, ROLLBACK, INSUFFICIENT = "promote", "rollback", "insufficient"
EXIT_PROMOTE, EXIT_ROLLBACK, EXIT_ERROR, EXIT_INSUFFICIENT = 0, 1, 2, 3
EXIT_CODES = {PROMOTE: EXIT_PROMOTE, ROLLBACK: EXIT_ROLLBACK, INSUFFICIENT: EXIT_INSUFFICIENT}
PASS, FAIL, INFO = "pass", "fail", "info"  # and INSUFFICIENT: a check that needs more data

# Outcomes of pipeline_requests_total (runtime/observation/metrics.py): answered with a 5xx; every other outcome
# except ok is a 4xx refusal of the input contract.
OK = "ok"
SERVER_ERRORS = frozenset({"internal_error", "feature_store_unavailable"})
STAGES = ("decode", "validate", "predict", "encode")


class AnalysisError(Exception):
    """No analysis can be made (exit 2); the message says why."""


# --------------------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Thresholds:
    """What the canary may do relative to the stable version (docs/rollout.md: why these)."""

    min_requests: int = 200  # per side, before error rates and latency are judged
    min_rows: int = 500  # predicted rows per side, before the prediction distribution is judged
    max_5xx_increase: float = 0.01  # canary 5xx share <= stable's + 1 point
    max_4xx_increase: float = 0.01  # canary 4xx share <= stable's + 1 point
    latency_ratio: float = 1.5  # canary quantile <= max(stable x 1.5, stable + slack)
    latency_slack_s: float = 0.005
    quantiles: tuple[float, ...] = (0.5, 0.99)
    max_ood_increase: float = 0.02  # canary OOD row share <= stable's + 2 points
    max_psi: float = 0.2  # the usual "significant shift" line
    alpha: float = 0.01  # a PSI over max_psi is a shift only if the chi-square test agrees at this level


# --------------------------------------------------------------------------------------- window data


@dataclass
class Side:
    """One version's increases over the window, summed over its series (pods, workers)."""

    outcomes: dict[str, float] = field(default_factory=dict)  # outcome -> requests
    rows: float = 0.0  # rows received (pipeline_request_rows_sum)
    ood_rows: float = 0.0
    stages: dict[str, dict[float, float]] = field(default_factory=dict)  # stage -> {le: cumulative count}
    predictions: dict[str, float] = field(default_factory=dict)  # bucket label -> predicted rows

    @property
    def requests(self) -> float:
        return sum(self.outcomes.values())

    @property
    def server_errors(self) -> float:
        return sum(v for k, v in self.outcomes.items() if k in SERVER_ERRORS)

    @property
    def refusals(self) -> float:
        return sum(v for k, v in self.outcomes.items() if k != OK and k not in SERVER_ERRORS)

    @property
    def predicted(self) -> float:
        return sum(self.predictions.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcomes": {k: _num(v) for k, v in sorted(self.outcomes.items()) if v},
            "rows": _num(self.rows),
            "ood_rows": _num(self.ood_rows),
            "predictions": {k: _num(self.predictions[k]) for k in bucket_order(self.predictions)},
        }


@dataclass
class Window:
    stable: Side
    canary: Side
    seconds: float
    end: float  # Unix time
    source: str


# --------------------------------------------------------------------------------------- statistics


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile on cumulative bucket counts {le: count}: linear
    interpolation inside the bucket holding the rank, the lowest bucket starting at 0, a rank in
    the +Inf bucket answered with the highest finite edge. None without observations."""
    items = sorted(buckets.items())
    if len(items) < 2 or not math.isinf(items[-1][0]):
        return None
    counts, highest = [], 0.0
    for _, count in items:  # as Prometheus: counts that went down (scrape races) are evened out
        highest = max(highest, count)
        counts.append(highest)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next((i for i, count in enumerate(counts[:-1]) if count >= rank), len(items) - 1)
    if index == len(items) - 1:
        return items[-2][0]
    upper = items[index][0]
    lower, below = (items[index - 1][0], counts[index - 1]) if index > 0 else (min(0.0, upper), 0.0)
    if index == 0 and upper <= 0:
        return upper
    inside = counts[index] - below
    return lower + (upper - lower) * ((rank - below) / inside if inside > 0 else 1.0)


def chi_square(first: Sequence[float], second: Sequence[float]) -> tuple[float, int, float]:
    """Pearson's chi-square test of homogeneity on a 2 x K table of counts: (statistic, degrees of
    freedom, p-value). Bins empty on both sides are dropped; p 1.0 with fewer than two bins."""
    columns = [(a, b) for a, b in zip(first, second, strict=False) if a + b > 0]
    n1, n2 = sum(a for a, _ in columns), sum(b for _, b in columns)
    if len(columns) < 2 or n1 <= 0 or n2 <= 0:
        return 0.0, 0, 1.0
    n = n1 + n2
    statistic = 0.0
    for a, b in columns:
        total = a + b
        for observed, row in ((a, n1), (b, n2)):
            expected = row * total / n
            statistic += (observed - expected) ** 2 / expected
    dof = len(columns) - 1
    from scipy.special import chdtrc  # scikit-learn's own dependency; imported only when needed

    return statistic, dof, float(chdtrc(dof, statistic))


def bucket_order(labels: Iterable[str]) -> list[str]:
    """Regressor buckets by their upper edge (+Inf last); classifier classes as text."""
    labels = list(labels)
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


# --------------------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Check:
    name: str
    stable: float | None
    canary: float | None
    threshold: str
    verdict: str
    limit: float | None = None  # the number the canary was held to
    unit: str = ""  # how the table shows the values: "" plain, "n" count, "ms"

    def to_dict(self) -> dict[str, Any]:
        doc = {"stable": _num(self.stable), "canary": _num(self.canary), "verdict": self.verdict}
        if self.limit is not None:
            doc["limit"] = _num(self.limit)
        return doc


@dataclass
class Analysis:
    checks: list[Check]
    window: Window
    thresholds: Thresholds

    @property
    def decision(self) -> str:
        verdicts = {c.verdict for c in self.checks}
        return ROLLBACK if FAIL in verdicts else INSUFFICIENT if INSUFFICIENT in verdicts else PROMOTE

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.decision]

    @property
    def reasons(self) -> list[str]:
        wanted = {ROLLBACK: FAIL, INSUFFICIENT: INSUFFICIENT}.get(self.decision)
        return [c.name for c in self.checks if c.verdict == wanted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "exit_code": self.exit_code,
            "reasons": self.reasons,
            "window_s": round(self.window.seconds, 3),
            "end": _iso(self.window.end),
            "source": self.window.source,
            "checks": {c.name: c.to_dict() for c in self.checks},
            "stable": self.window.stable.to_dict(),
            "canary": self.window.canary.to_dict(),
        }


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def analyze(window: Window, t: Thresholds = Thresholds()) -> Analysis:
    """Every check on one window. A check fails only on enough data; the decision is rollback if
    any check failed, else not enough data if any check lacks data, else promote."""
    s, c = window.stable, window.canary
    checks: list[Check] = []
    enough_requests = min(s.requests, c.requests) >= t.min_requests
    checks.append(
        Check(
            "requests",
            s.requests,
            c.requests,
            f">= {t.min_requests} each",
            PASS if enough_requests else INSUFFICIENT,
            t.min_requests,
            "n",
        )
    )
    seconds = max(window.seconds, 1e-9)
    checks.append(Check("request_rate_per_s", s.requests / seconds, c.requests / seconds, "-", INFO))
    checks.append(Check("canary_share", None, _share(c.requests, s.requests + c.requests), "-", INFO))

    for name, count, allowed in (
        ("error_rate_5xx", lambda side: side.server_errors, t.max_5xx_increase),
        ("refusal_rate_4xx", lambda side: side.refusals, t.max_4xx_increase),
    ):
        stable_rate, canary_rate = _share(count(s), s.requests), _share(count(c), c.requests)
        limit = (stable_rate or 0.0) + allowed
        if not enough_requests or stable_rate is None or canary_rate is None:
            verdict = INSUFFICIENT
        else:
            verdict = PASS if canary_rate <= limit + 1e-12 else FAIL
        checks.append(Check(name, stable_rate, canary_rate, f"canary <= stable + {allowed:g}", verdict, limit))

    present = set(s.stages) | set(c.stages)
    for stage in [x for x in STAGES if x in present] + sorted(present - set(STAGES)):
        for q in t.quantiles:
            checks.append(_latency_check(stage, q, s.stages.get(stage, {}), c.stages.get(stage, {}), t))

    enough_rows = min(s.rows, c.rows) >= t.min_rows
    stable_ood, canary_ood = _share(s.ood_rows, s.rows), _share(c.ood_rows, c.rows)
    limit = (stable_ood or 0.0) + t.max_ood_increase
    verdict = (
        INSUFFICIENT
        if not enough_rows or stable_ood is None or canary_ood is None
        else (PASS if canary_ood <= limit + 1e-12 else FAIL)
    )
    checks.append(
        Check("rows", s.rows, c.rows, f">= {t.min_rows} each", PASS if enough_rows else INSUFFICIENT, t.min_rows, "n")
    )
    checks.append(
        Check("ood_row_rate", stable_ood, canary_ood, f"canary <= stable + {t.max_ood_increase:g}", verdict, limit)
    )
    checks.extend(_prediction_checks(s, c, t))
    return Analysis(checks, window, t)


def _latency_check(
    stage: str, q: float, stable: dict[float, float], canary: dict[float, float], t: Thresholds
) -> Check:
    name = f"latency_p{q * 100:g}_{stage}_ms"
    sq, cq = histogram_quantile(q, stable), histogram_quantile(q, canary)
    counts = [max(h.values()) if h else 0.0 for h in (stable, canary)]
    threshold = f"canary <= max(stable x {t.latency_ratio:g}, stable + {t.latency_slack_s * 1000:g} ms)"
    if sq is None or cq is None or min(counts) < t.min_requests:
        return Check(name, _ms(sq), _ms(cq), threshold, INSUFFICIENT, unit="ms")
    limit = max(sq * t.latency_ratio, sq + t.latency_slack_s)
    return Check(name, _ms(sq), _ms(cq), threshold, PASS if cq <= limit else FAIL, _ms(limit), "ms")


def _prediction_checks(s: Side, c: Side, t: Thresholds) -> list[Check]:
    enough = min(s.predicted, c.predicted) >= t.min_rows
    checks = [
        Check(
            "predicted_rows",
            s.predicted,
            c.predicted,
            f">= {t.min_rows} each",
            PASS if enough else INSUFFICIENT,
            t.min_rows,
            "n",
        )
    ]
    psi_threshold = f"<= {t.max_psi:g}, or chi-square p >= {t.alpha:g}"
    if not enough:
        checks.append(Check("prediction_psi", None, None, psi_threshold, INSUFFICIENT, t.max_psi))
        checks.append(Check("prediction_chi2_p", None, None, "-", INFO))
        return checks
    only_stable = {k for k, v in s.predictions.items() if v > 0} - set(c.predictions)
    only_canary = {k for k, v in c.predictions.items() if v > 0} - set(s.predictions)
    if only_stable or only_canary:
        raise AnalysisError(
            f"the versions count their predictions in different buckets (stable only: {sorted(only_stable)}, "
            f"canary only: {sorted(only_canary)}): give both the same parameters.extra.prediction_buckets "
            "(e.g. the stable version's deciles), see docs/rollout.md"
        )
    labels = bucket_order(set(s.predictions) | set(c.predictions))
    expected = [s.predictions.get(k, 0.0) for k in labels]
    actual = [c.predictions.get(k, 0.0) for k in labels]
    from runtime.core.drift import psi_from_counts  # late: it pulls in numpy

    psi = psi_from_counts(expected, actual)
    statistic, dof, p = chi_square(expected, actual)
    if psi <= t.max_psi:
        verdict = PASS
    else:  # large, but is it more than the noise of a small window?
        verdict = FAIL if p < t.alpha else INSUFFICIENT
    checks.append(Check("prediction_psi", None, psi, psi_threshold, verdict, t.max_psi))
    checks.append(Check("prediction_chi2_p", None, p, f"chi2 {statistic:.1f} on {dof} dof", INFO))
    return checks


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _num(value: float | None) -> float | None:
    if value is None or isinstance(value, int):
        return value
    if math.isnan(value) or math.isinf(value):
        return None
    return round(value, 6) if abs(value) < 1e6 else round(value, 1)


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render(analysis: Analysis, title: str = "") -> str:
    """The table `analyze` prints: every metric, both sides, its threshold and verdict, then the
    decision."""
    w = analysis.window
    lines = [title] if title else []
    lines.append(f"window {w.seconds:.1f}s ending {_iso(w.end)}, from {w.source}")
    lines.append(f"{'metric':<26} {'stable':>12} {'canary':>12}  {'threshold':<44} verdict")
    for check in analysis.checks:
        lines.append(
            f"{check.name:<26} {_cell(check.stable, check.unit):>12} {_cell(check.canary, check.unit):>12}  "
            f"{check.threshold:<44} {check.verdict}"
        )
    reasons = f": {', '.join(analysis.reasons)}" if analysis.reasons else ""
    lines.append(f"decision: {analysis.decision} (exit {analysis.exit_code}){reasons}")
    return "\n".join(lines)


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "n":
        return f"{value:.0f}"
    if unit == "ms":
        return f"{value:.3f}"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
