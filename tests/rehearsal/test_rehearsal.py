"""The rehearsal: `rollout auto` moves real traffic through a real nginx, step by step, judging each
step with `rollout analyze` on a real Prometheus's numbers; it must promote the good canary (v2)
and roll back the one that fails 20 % of its requests and the one whose predictions are shifted.
Then `rollout analyze` alone, on the very windows `auto` judged (`--end`), must reach the same
decisions, and without Prometheus (two scrapes of the servers) too.

The module takes about 65 s on the 2-core development machine: about 14 s to start the servers,
nginx and Prometheus, 20 s for the good canary's two steps, 10 s for each bad one, 10 s for the
scrape analyses.
"""

from __future__ import annotations

import time

import pytest

from harness.nginx import Nginx
from harness.prometheus import Prometheus
from harness.server import Server
from pipeline_tools.rollout.analysis import histogram_quantile
from tests.rehearsal import support

SETTLE = "1s"
WINDOW = "8s"
STEPS = "25,50,100"


def _auto(prometheus: Prometheus, nginx: Nginx, fleet: dict[str, Server], canary: str):
    done = support.run_cli(
        "auto",
        "--target",
        "nginx",
        "--nginx-conf",
        str(nginx.conf),
        "--nginx-prefix",
        str(nginx.base),
        "--nginx-error-log",
        str(nginx.base / "error.log"),
        "--nginx-bin",
        nginx.binary,
        "--stable-server",
        fleet["stable"].http_hostport,
        "--canary-server",
        fleet[canary].http_hostport,
        "--prometheus",
        prometheus.url,
        "--stable-selector",
        'job="stable"',
        "--canary-selector",
        f'job="{canary}"',
        "--steps",
        STEPS,
        "--settle",
        SETTLE,
        "--window",
        WINDOW,
        "--max-inconclusive",
        "3",
    )
    lines = support.decision_lines(done.stdout)
    return done, lines


def _analyze_again(prometheus: Prometheus, canary: str, analysis: dict):
    """`rollout analyze` alone on the window an `auto` analysis judged."""
    return support.run_cli(
        "analyze",
        "--prometheus",
        prometheus.url,
        "--stable-selector",
        'job="stable"',
        "--canary-selector",
        f'job="{canary}"',
        "--end",
        analysis["end"],
        "--window",
        f"{analysis['window_s']}s",
    )


def _upstream(nginx: Nginx) -> str:
    text = nginx.conf.read_text()
    start = text.index("upstream pipeline")
    return text[start : text.index("}", start) + 1]


def test_the_good_canary_is_promoted_step_by_step(prometheus, nginx, fleet, load, split):
    split("good", None)
    started = time.monotonic()
    done, lines = _auto(prometheus, nginx, fleet, "good")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    events = [(line["event"], line.get("percent")) for line in lines]
    assert events == [
        ("start", None),
        ("step", 25),
        ("analysis", 25),
        ("step", 50),
        ("analysis", 50),
        ("step", None),
        ("promote", None),
    ], events
    assert lines[-2]["action"] == "promote" and lines[-1]["decision"] == "promote"
    good, stable = fleet["good"].http_hostport, fleet["stable"].http_hostport
    for analysis, percent in ((lines[2], 25), (lines[4], 50)):
        assert analysis["decision"] == "promote", analysis
        checks = analysis["checks"]
        # Prometheus saw the weights nginx was given, and so did nginx's own access log.
        assert abs(checks["canary_share"]["canary"] - percent / 100) < 0.05, checks["canary_share"]
        end = support.unix(analysis["end"])
        routed = nginx.upstream_counts(since=end - analysis["window_s"], until=end)
        share = sum(v for (addr, _), v in routed.items() if addr == good) / sum(routed.values())
        assert abs(share - percent / 100) < 0.02, routed
        assert checks["prediction_psi"]["canary"] < 0.05 and checks["error_rate_5xx"]["canary"] == 0.0
        assert checks["predicted_rows"]["canary"] >= 500
    assert f"server {stable} down;" in _upstream(nginx) and f"server {good} weight=100;" in _upstream(nginx)
    time.sleep(1.0)  # nginx flushes its access log every 200 ms
    after = nginx.upstream_counts(since=support.unix(lines[-1]["time"]) + 0.3)
    assert after and {addr for addr, _ in after} == {good}, after

    again = _analyze_again(prometheus, "good", lines[4])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "decision: promote (exit 0)" in again.stdout
    print(f"good canary promoted in {elapsed:.1f}s; at 50%: {_summary(lines[4])}")


def _rolled_back(prometheus, nginx, fleet, split, canary: str, reason: str) -> dict:
    """`rollout auto` on a bad canary: one step, an analysis, a rollback for `reason` alone, the
    canary out of nginx's upstream and the stable back at full weight; `analyze` alone agrees."""
    split(canary, None)
    done, lines = _auto(prometheus, nginx, fleet, canary)
    assert done.returncode == 1, f"{done.stdout}\n{done.stderr}"
    assert [line["event"] for line in lines] == ["start", "step", "analysis", "rollback"], lines
    analysis = lines[2]
    assert analysis["decision"] == "rollback" and analysis["reasons"] == [reason], analysis["reasons"]
    stable, bad = fleet["stable"].http_hostport, fleet[canary].http_hostport
    assert f"server {stable} weight=100;" in _upstream(nginx) and f"server {bad} down;" in _upstream(nginx)
    again = _analyze_again(prometheus, canary, analysis)
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"decision: rollback (exit 1): {reason}" in again.stdout
    print(f"{canary} canary rolled back: {_summary(analysis)}")
    return analysis


def test_the_erroring_canary_is_rolled_back(prometheus, nginx, fleet, load, split):
    analysis = _rolled_back(prometheus, nginx, fleet, split, "erroring", "error_rate_5xx")
    five = analysis["checks"]["error_rate_5xx"]
    assert five["stable"] == 0.0 and 0.17 < five["canary"] < 0.23, five  # every 5th prediction fails
    assert analysis["checks"]["refusal_rate_4xx"]["verdict"] == "pass"  # 5xx and 4xx are told apart
    assert analysis["canary"]["outcomes"]["internal_error"] > 0
    assert load.snapshot()[500] > 0  # the clients saw the 500s: nginx did not retry them elsewhere


def test_the_shifted_canary_is_rolled_back(prometheus, nginx, fleet, load, split):
    checks = _rolled_back(prometheus, nginx, fleet, split, "shifted", "prediction_psi")["checks"]
    assert checks["prediction_psi"]["canary"] > 0.5 and checks["prediction_chi2_p"]["canary"] < 1e-6, checks
    assert checks["error_rate_5xx"]["verdict"] == "pass" and checks["ood_row_rate"]["verdict"] == "pass"


@pytest.mark.parametrize("canary,code", [("good", 0), ("erroring", 1)])
def test_analyze_without_prometheus_scrapes_both_servers(fleet, load, split, canary, code):
    split(canary, 50)
    time.sleep(0.5)
    done = support.run_cli(
        "analyze",
        "--stable-metrics",
        fleet["stable"].metrics_url,
        "--canary-metrics",
        fleet[canary].metrics_url,
        "--window",
        "4s",
    )
    assert done.returncode == code, done.stdout + done.stderr
    assert f"(exit {code})" in done.stdout and "scrapes of" in done.stdout


def test_quantiles_agree_with_prometheus_histogram_quantile(prometheus: Prometheus, load: support.Load) -> None:
    """The latency checks compute histogram_quantile themselves, from bucket increases: the same
    numbers as Prometheus's own function on the same data."""
    at = time.time() - 2
    selector = 'job="stable",stage="predict"'
    buckets = {
        float(labels["le"]): value
        for labels, value in prometheus.query(
            f"sum by (le) (increase(pipeline_stage_seconds_bucket{{{selector}}}[20s]))", at
        )
    }
    for q in (0.5, 0.9, 0.99):
        ((_, expected),) = prometheus.query(
            f"histogram_quantile({q}, sum by (le) (increase(pipeline_stage_seconds_bucket{{{selector}}}[20s])))", at
        )
        assert histogram_quantile(q, buckets) == pytest.approx(expected, rel=1e-9), (q, buckets)


def _summary(analysis: dict) -> str:
    c = analysis["checks"]
    return (
        f"requests {c['requests']['stable']:.0f}/{c['requests']['canary']:.0f}, "
        f"5xx {c['error_rate_5xx']['canary']:.3f}, psi {c['prediction_psi']['canary']:.3f}, "
        f"chi2 p {c['prediction_chi2_p']['canary']:.2g}, p99 predict {c['latency_p99_predict_ms']['stable']:.3f}/"
        f"{c['latency_p99_predict_ms']['canary']:.3f} ms"
    )
