"""Reloading a model through the repository API under load fails no request; a reload whose new
artifact was tampered with is refused and the version loaded before keeps answering.

Under 2 REST + 2 gRPC closed-loop clients: version 1's artifacts are replaced on disk by version
2's (Ridge) and reloaded (200), then version 2's model.skops is tampered with and reloaded again
(refused: sha256 mismatch). Every answer must come from version 1 or version 2 (compared with
predictions computed here from the artifacts), from version 2 only once its reload returned,
and nothing may fail, in both worker modes.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import requests

from harness.models import DIABETES, MODELS_DIR, pipeline
from harness.repository import add_model, make_repository, replace_artifacts, tamper
from harness.server import Server
from tests.reliability import support

LOAD_S = 4.0
RELOAD_AT_S = 0.8
TAMPERED_RELOAD_AT_S = 2.0


def _launch(request: pytest.FixtureRequest, workers: int) -> Server:
    root = make_repository(
        request.getfixturevalue("tmp_path_factory").mktemp(f"reload-{workers}") / "repo", workers=workers
    )
    add_model(root, "diabetes")
    return support.launch(root, env={"PIPELINE_DRAIN_DELAY_S": "0"}, ready=["diabetes"])


# Launched with the suite's other servers (conftest.fleet); each test changes its own server's model.
SERVERS = {f"reload-workers-{w}": functools.partial(_launch, workers=w) for w in (0, 1)}


@pytest.fixture
def server(workers, fleet) -> Server:
    return fleet[f"reload-workers-{workers}"]


@pytest.mark.parametrize("workers", [0, 1], ids=["workers-0", "workers-1"])
def test_reload_under_load_fails_nothing_and_keeps_the_old_version_on_a_bad_artifact(workers, server):
    target = server.root / "models" / "diabetes"
    x = np.asarray([support.ROW])
    v1 = float(pipeline(DIABETES, "1").predict(x)[0])
    v2 = float(pipeline(DIABETES, "2").predict(x)[0])
    assert abs(v1 - v2) > 1e-6

    load = support.Load(server, "diabetes", rest_clients=2, grpc_clients=2).start(LOAD_S)
    started = time.monotonic()
    time.sleep(RELOAD_AT_S)
    replace_artifacts(target, MODELS_DIR / "diabetes" / "2")
    good = requests.post(f"{server.http_url}/v2/repository/models/diabetes/load", timeout=60)
    reloaded = time.monotonic()

    time.sleep(max(0.0, started + TAMPERED_RELOAD_AT_S - time.monotonic()))
    tamper(target / "model.skops")
    bad = requests.post(f"{server.http_url}/v2/repository/models/diabetes/load", timeout=60)
    refused = time.monotonic()
    ready_after = requests.get(f"{server.http_url}/v2/models/diabetes/ready", timeout=10).status_code
    index = requests.post(f"{server.http_url}/v2/repository/index", json={}, timeout=10).json()
    outcomes = load.join()

    summary = support.summarize(outcomes)
    print(
        f"workers {workers}: {summary}; reload {good.status_code} in "
        f"{reloaded - started - RELOAD_AT_S:.3f}s, tampered reload {bad.status_code}"
    )
    assert good.status_code == 200, good.text
    assert bad.status_code == 500 and "sha256 mismatch" in bad.json()["error"], bad.text
    assert "refusing to load it" in bad.json()["error"]

    assert [o for o in outcomes if not o.ok] == [], summary
    assert len(outcomes) > 50
    values = [(o.started, o.ended, o.predicted()) for o in outcomes]
    assert all(np.isclose(v, v1, rtol=1e-9) or np.isclose(v, v2, rtol=1e-9) for _, _, v in values)
    assert any(np.isclose(v, v1, rtol=1e-9) for _, _, v in values)
    # Sent after the good reload answered: version 2, also after the refused reload.
    after = [v for s, _, v in values if s > reloaded]
    assert after and all(np.isclose(v, v2, rtol=1e-9) for v in after)
    assert [v for s, _, v in values if s > refused], "no request after the refused reload"

    assert ready_after == 200
    assert [m["state"] for m in index if m["name"] == "diabetes"] == ["READY"]
    # And it still answers with version 2 once the load is over.
    final = support.rest_infer(server, "diabetes")
    assert final.status_code == 200 and np.isclose(final.json()["outputs"][0]["data"][0], v2, rtol=1e-9)
