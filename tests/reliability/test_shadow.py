"""A shadow model on a real server: diabetes v2 behind v1. The primary's answers are unchanged; the
exported differences, PSI and KS equal an offline computation on the same rows; a failing shadow
is only counted."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.models import pipeline, sample_rows
from harness.repository import add_model, make_repository
from scipy.stats import ks_2samp

from runtime.shadow import STATS_EVERY, psi
from tests.reliability.support import FAILING_RUNTIME, rest_infer, serve

ROWS = 200  # a multiple of STATS_EVERY: the last statistics cover exactly these rows


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("shadow")
    flag = base / "always-failing"
    flag.touch()
    root = make_repository(base / "repo", workers=0)
    add_model(root, "candidate", source="diabetes/2")
    add_model(root, "primary", extra={"shadow_model": "candidate", "shadow_window": ROWS})
    add_model(root, "broken", implementation=FAILING_RUNTIME)
    add_model(root, "primary-with-broken-shadow", extra={"shadow_model": "broken"})
    ready = ["candidate", "primary", "broken", "primary-with-broken-shadow"]
    yield from serve(root, env={"FAILING_RUNTIME_FLAG": str(flag)}, ready=ready)


def _metric(server, name: str, **labels: str) -> float:
    return server.scrape().get((name, frozenset(labels.items())), 0.0)


def _wait_for(server, name: str, value: float, **labels: str) -> float:
    deadline = time.monotonic() + 15
    while (got := _metric(server, name, **labels)) < value and time.monotonic() < deadline:
        time.sleep(0.1)
    return got


def test_the_shadows_disagreement_matches_an_offline_computation(server):
    x = sample_rows("diabetes", ROWS)
    assert ROWS % STATS_EVERY == 0
    answers = []
    for chunk in np.split(x, 4):
        response = rest_infer(server, "primary", rows=chunk.tolist())
        assert response.status_code == 200
        answers.extend(response.json()["outputs"][0]["data"])
    v1, v2 = pipeline("diabetes", "1").predict(x), pipeline("diabetes", "2").predict(x)
    np.testing.assert_allclose(answers, v1, rtol=1e-9)  # the primary's answers, not the shadow's
    labels = {"model": "primary", "shadow": "candidate"}
    assert _wait_for(server, "pipeline_shadow_window_rows", ROWS, **labels) == ROWS
    assert _metric(server, "pipeline_shadow_psi", **labels) == pytest.approx(psi(v1, v2), rel=1e-6)
    assert _metric(server, "pipeline_shadow_ks", **labels) == pytest.approx(ks_2samp(v1, v2).statistic, rel=1e-6)
    assert _metric(server, "pipeline_shadow_abs_difference_count", **labels) == ROWS
    assert _metric(server, "pipeline_shadow_abs_difference_sum", **labels) == pytest.approx(np.abs(v2 - v1).sum(), rel=1e-6)
    assert _metric(server, "pipeline_shadow_seconds_count", **labels) == 4  # one per request, batched or not


def test_a_failing_shadow_changes_nothing_for_the_caller(server):
    x = sample_rows("diabetes", 5)
    for _ in range(3):
        response = rest_infer(server, "primary-with-broken-shadow", rows=x.tolist())
        assert response.status_code == 200
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], pipeline("diabetes", "1").predict(x), rtol=1e-9)
    labels = {"model": "primary-with-broken-shadow", "shadow": "broken", "event": "error"}
    assert _wait_for(server, "pipeline_shadow_events_total", 3, **labels) == 3
