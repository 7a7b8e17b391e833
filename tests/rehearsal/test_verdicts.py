"""`rollout analyze`'s verdicts on synthetic windows (no servers): each check, its threshold, the
sample-size gates, the decision's precedence, and the statistics against reference implementations
(Prometheus's histogram_quantile rules, runtime.core.drift.psi, scipy's chi-square test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline_tools.rollout.analysis import (
    Analysis,
    AnalysisError,
    Side,
    Thresholds,
    Window,
    analyze,
    bucket_order,
    chi_square,
    histogram_quantile,
    render,
)
from pipeline_tools.rollout.sources import ScrapeSource, parse_matchers, selector
from runtime.observation.buckets import SECONDS_BUCKETS

SECONDS = SECONDS_BUCKETS
EDGES = ["78.923", "99.923", "118.566", "135.019", "152.57", "165.673", "180.017", "200.292", "229.994", "+Inf"]


def histogram(latencies: np.ndarray) -> dict[float, float]:
    """Cumulative counts per upper edge, as a Prometheus histogram's _bucket series hold them."""
    out = {le: float(np.sum(latencies <= le)) for le in SECONDS}
    out[math.inf] = float(len(latencies))
    return out


def side(
    requests: int = 1000,
    errors: int = 0,
    refusals: dict[str, int] | None = None,
    rows_per: int = 8,
    ood_share: float = 0.002,
    predict_s: float = 0.0001,
    buckets: list[float] | None = None,
    seed: int = 0,
) -> Side:
    rng = np.random.default_rng(seed)
    refused = sum((refusals or {}).values())
    outcomes = {
        "ok": float(requests - errors - refused),
        "internal_error": float(errors),
        **{k: float(v) for k, v in (refusals or {}).items()},
    }
    answered = requests - errors - refused
    rows = float((requests - refused) * rows_per)
    shares = np.asarray(buckets or [0.1] * 10, dtype=float)
    predictions = rng.multinomial(answered * rows_per, shares / shares.sum())
    return Side(
        outcomes=outcomes,
        rows=rows,
        ood_rows=round(rows * ood_share),
        stages={
            stage: histogram(rng.exponential(predict_s if stage == "predict" else 0.00003, requests))
            for stage in ("decode", "validate", "predict", "encode")
        },
        predictions={label: float(n) for label, n in zip(EDGES, predictions)},
    )


def window(stable: Side, canary: Side, seconds: float = 60.0) -> Window:
    return Window(stable, canary, seconds, 1_800_000_000.0, "synthetic")


def verdicts(analysis: Analysis) -> dict[str, str]:
    return {c.name: c.verdict for c in analysis.checks}


def canary_value(analysis: Analysis, name: str) -> float:
    """The canary's value of one check, which the check must have computed."""
    value = next(c for c in analysis.checks if c.name == name).canary
    assert value is not None, name
    return value


# ------------------------------------------------------------------------------ decisions


def test_a_healthy_canary_is_promoted_with_every_check_shown() -> None:
    result = analyze(window(side(seed=1), side(seed=2)))
    assert (result.decision, result.exit_code, result.reasons) == ("promote", 0, [])
    assert set(verdicts(result).values()) == {"pass", "info"}
    names = [c.name for c in result.checks]
    assert names == [
        "requests",
        "request_rate_per_s",
        "canary_share",
        "error_rate_5xx",
        "refusal_rate_4xx",
        "latency_p50_decode_ms",
        "latency_p99_decode_ms",
        "latency_p50_validate_ms",
        "latency_p99_validate_ms",
        "latency_p50_predict_ms",
        "latency_p99_predict_ms",
        "latency_p50_encode_ms",
        "latency_p99_encode_ms",
        "rows",
        "ood_row_rate",
        "predicted_rows",
        "prediction_psi",
        "prediction_chi2_p",
    ]
    table = render(result)
    for check in result.checks:  # every metric printed with its threshold and verdict
        assert any(
            line.startswith(check.name) and line.rstrip().endswith(check.verdict) and check.threshold in line
            for line in table.splitlines()
        ), check
    assert table.splitlines()[-1] == "decision: promote (exit 0)"


def test_server_errors_roll_back_past_one_point_over_the_stable_share() -> None:
    stable = side(errors=5)  # 0.5 %
    assert analyze(window(stable, side(errors=15))).decision == "promote"  # 1.5 % = 0.5 % + 1 point: at the line
    failed = analyze(window(stable, side(errors=16)))
    assert (failed.decision, failed.exit_code, failed.reasons) == ("rollback", 1, ["error_rate_5xx"])
    check = next(c for c in failed.checks if c.name == "error_rate_5xx")
    assert (check.stable, check.canary, check.limit) == pytest.approx((0.005, 0.016, 0.015))


def test_a_feature_store_outage_counts_as_a_server_error_not_a_refusal() -> None:
    canary = side()
    canary.outcomes["feature_store_unavailable"] = 50.0
    result = analyze(window(side(), canary))
    assert result.reasons == ["error_rate_5xx"] and verdicts(result)["refusal_rate_4xx"] == "pass"


def test_contract_refusals_are_judged_on_their_own() -> None:
    """A canary that refuses requests the stable version accepts changed its contract: 4xx, not 5xx."""
    result = analyze(window(side(refusals={"feature_count": 2}), side(refusals={"feature_count": 40, "shape": 5})))
    assert result.reasons == ["refusal_rate_4xx"]
    assert verdicts(result)["error_rate_5xx"] == "pass"


def test_latency_fails_only_beyond_both_the_ratio_and_the_slack() -> None:
    base = side(predict_s=0.0001, seed=3)
    assert analyze(window(base, side(predict_s=0.0004, seed=4))).decision == "promote"  # x4, but + 0.3 ms < 5 ms
    slow = analyze(window(base, side(predict_s=0.02, seed=5)))  # 20 ms per prediction
    assert slow.decision == "rollback"
    assert set(slow.reasons) == {"latency_p50_predict_ms", "latency_p99_predict_ms"}
    tight = analyze(window(base, side(predict_s=0.0004, seed=4)), Thresholds(latency_slack_s=0.0))
    assert "latency_p99_predict_ms" in tight.reasons


def test_a_rise_in_out_of_distribution_rows_rolls_back() -> None:
    result = analyze(window(side(ood_share=0.002), side(ood_share=0.05)))
    assert result.reasons == ["ood_row_rate"]


def test_shifted_predictions_roll_back_on_psi_with_a_significant_test() -> None:
    shifted = [0.01, 0.03, 0.06, 0.07, 0.1, 0.1, 0.06, 0.14, 0.18, 0.25]  # the rehearsal's + 40 shape
    result = analyze(window(side(), side(buckets=shifted)))
    assert result.reasons == ["prediction_psi"]
    assert canary_value(result, "prediction_psi") > 0.5 and canary_value(result, "prediction_chi2_p") < 1e-9


def test_a_large_psi_on_few_rows_is_not_enough_data_rather_than_a_rollback() -> None:
    """PSI is noisy on a small window: over the limit without a significant test it asks for more data."""
    thresholds = Thresholds(min_requests=5, min_rows=10)
    stable = Side(outcomes={"ok": 10}, rows=20, predictions={"1": 6.0, "2": 4.0, "+Inf": 0.0})
    canary = Side(outcomes={"ok": 10}, rows=20, predictions={"1": 3.0, "2": 6.0, "+Inf": 1.0})
    result = analyze(window(stable, canary), thresholds)
    assert canary_value(result, "prediction_psi") > thresholds.max_psi
    assert canary_value(result, "prediction_chi2_p") > thresholds.alpha
    assert verdicts(result)["prediction_psi"] == "insufficient"
    assert (result.decision, result.exit_code) == ("insufficient", 3)


def test_a_significant_but_tiny_difference_is_promoted() -> None:
    """On a large window the chi-square test finds any difference; PSI says whether it matters."""
    big = 200_000
    stable = side(requests=big, seed=6)
    canary = side(requests=big, buckets=[0.098, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.102], seed=7)
    result = analyze(window(stable, canary))
    assert canary_value(result, "prediction_chi2_p") < 0.01 and canary_value(result, "prediction_psi") < 0.01
    assert result.decision == "promote"


def test_too_few_requests_is_not_enough_data() -> None:
    result = analyze(window(side(requests=1000), side(requests=150)))
    assert (result.decision, result.exit_code) == ("insufficient", 3)
    assert "requests" in result.reasons and "error_rate_5xx" in result.reasons
    assert render(result).splitlines()[-1].startswith("decision: insufficient (exit 3): requests, error_rate_5xx")


def test_a_failure_on_enough_data_wins_over_missing_data_elsewhere() -> None:
    """A canary failing every request never predicts: its 5xx share decides, not its lack of predictions."""
    canary = side(requests=400, errors=400)
    result = analyze(window(side(), canary))
    assert verdicts(result)["predicted_rows"] == "insufficient"
    assert (result.decision, result.exit_code, result.reasons) == ("rollback", 1, ["error_rate_5xx"])


def test_no_traffic_at_all_is_not_enough_data() -> None:
    result = analyze(window(Side(), Side()))
    assert result.exit_code == 3
    assert verdicts(result)["error_rate_5xx"] == "insufficient"


def test_predictions_counted_in_different_buckets_cannot_be_compared() -> None:
    canary = side()
    canary.predictions = {"100": 4000.0, "200": 3000.0, "+Inf": 1000.0}  # its own deciles, not the stable's
    with pytest.raises(AnalysisError, match="prediction_buckets"):
        analyze(window(side(), canary))


def test_a_bucket_missing_on_one_side_with_nothing_in_it_is_a_zero() -> None:
    canary = side()
    canary.predictions.pop("+Inf")
    stable = side()
    stable.predictions["+Inf"] = 0.0
    assert analyze(window(stable, canary)).decision == "promote"


# ------------------------------------------------------------------------------ statistics


def test_histogram_quantile_follows_prometheus() -> None:
    buckets = {0.1: 10.0, 0.2: 20.0, 0.4: 20.0, math.inf: 20.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)  # rank 10: the top of the first bucket
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)  # the first bucket starts at 0
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.99, {0.1: 5.0, 0.2: 5.0, math.inf: 10.0}) == 0.2  # in +Inf: the highest edge
    assert histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.5, {0.1: 3.0}) is None  # no +Inf bucket
    # Counts that went down (series scraped at slightly different times) are evened out first.
    assert histogram_quantile(0.5, {0.1: 10.0, 0.2: 9.0, math.inf: 20.0}) == histogram_quantile(
        0.5, {0.1: 10.0, 0.2: 10.0, math.inf: 20.0}
    )


def test_psi_from_counts_is_runtime_shadow_psi_on_binned_samples() -> None:
    from runtime.core.drift import PSI_BINS, PSI_EPSILON, psi, psi_from_counts

    assert PSI_EPSILON == 1e-6
    rng = np.random.default_rng(8)
    expected, actual = rng.normal(150, 55, 5000), rng.normal(170, 55, 4000)
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, PSI_BINS + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    counts = np.histogram(expected, edges)[0], np.histogram(actual, edges)[0]
    assert psi_from_counts(*counts) == pytest.approx(psi(expected, actual), rel=1e-12)
    assert psi_from_counts([10, 0], [0, 0]) == 0.0


def test_chi_square_is_scipys_test_of_homogeneity() -> None:
    from scipy.stats import chi2_contingency

    rng = np.random.default_rng(9)
    for _ in range(5):
        a, b = rng.integers(0, 200, 10), rng.integers(0, 200, 10)
        a[3] = b[3] = 0  # an empty bin is dropped, as scipy would refuse it
        statistic, dof, p = chi_square(a.tolist(), b.tolist())
        keep = (a + b) > 0
        ref = chi2_contingency(np.vstack([a[keep], b[keep]]), correction=False)
        assert (statistic, dof, p) == pytest.approx((ref.statistic, ref.dof, ref.pvalue), rel=1e-9)
    assert chi_square([5, 0], [7, 0]) == (0.0, 0, 1.0)


def test_buckets_are_ordered_by_edge_and_classes_as_text() -> None:
    assert bucket_order(["+Inf", "100", "78.9", "1e+03"]) == ["78.9", "100", "1e+03", "+Inf"]
    assert bucket_order(["setosa", "virginica", "versicolor"]) == ["setosa", "versicolor", "virginica"]


# ------------------------------------------------------------------------------ selection and scraping


def test_selectors_and_matchers() -> None:
    assert selector("diabetes", "2", 'job="canary", ') == 'model="diabetes",version="2",job="canary"'
    assert selector("diabetes", None, None) == 'model="diabetes"'
    assert parse_matchers('model="d",pod=~"x-.*", a!="b\\"c"') == [
        ("model", "=", "d"),
        ("pod", "=~", "x-.*"),
        ("a", "!=", 'b"c'),
    ]
    with pytest.raises(AnalysisError):
        parse_matchers("model=diabetes")
    with pytest.raises(AnalysisError, match="only = matchers"):
        ScrapeSource(["http://a"], ["http://b"], 'model="d",pod=~"x.*"', 'model="d"')


def test_scrapes_are_differenced_per_series_and_a_reset_counts_from_zero() -> None:
    def key(url: str, name: str, **labels: str) -> tuple[str, str, frozenset[tuple[str, str]]]:
        return (url, name, frozenset({"model": "diabetes", "version": "2", **labels}.items()))

    other = ("http://a", "pipeline_requests_total", frozenset({"model": "other", "outcome": "ok"}.items()))
    before = {
        key("http://a", "pipeline_requests_total", outcome="ok"): 100.0,
        key("http://b", "pipeline_requests_total", outcome="ok"): 500.0,  # this pod restarts
        key("http://a", "pipeline_requests_total", outcome="internal_error"): 1.0,
        key("http://a", "pipeline_prediction_bucket_total", bucket="+Inf"): 10.0,
        other: 1.0,
    }
    after = {
        key("http://a", "pipeline_requests_total", outcome="ok"): 160.0,
        key("http://b", "pipeline_requests_total", outcome="ok"): 30.0,
        key("http://a", "pipeline_requests_total", outcome="internal_error"): 1.0,
        key("http://a", "pipeline_requests_total", outcome="shape"): 4.0,  # a series born in the window
        key("http://a", "pipeline_prediction_bucket_total", bucket="+Inf"): 18.0,
        key("http://a", "pipeline_stage_seconds_bucket", stage="predict", le="0.001"): 7.0,
        key("http://a", "pipeline_stage_seconds_bucket", stage="predict", le="+Inf"): 9.0,
        other: 99.0,  # another model's series
    }
    got = ScrapeSource._side(before, after, {"model": "diabetes", "version": "2"})
    assert got.outcomes == {"ok": 60.0 + 30.0, "internal_error": 0.0, "shape": 4.0}
    assert got.predictions == {"+Inf": 8.0}
    assert got.stages == {"predict": {0.001: 7.0, math.inf: 9.0}}
