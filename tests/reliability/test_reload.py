"""Reloading a model through the repository API under load fails no request; a reload whose new
artifact was tampered with is refused and the version loaded before keeps answering.

Under 2 REST + 2 gRPC closed-loop clients: version 1's artifacts are replaced on disk by version
2's (Ridge) and reloaded (200), then version 2's model.skops is tampered with and reloaded again
(refused: sha256 mismatch). Every answer must come from version 1 or version 2 (compared with
predictions computed here from the artifacts), from version 2 only once its reload returned,
and nothing may fail, in both worker modes.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests

import rel_support as rs

LOAD_S = 4.0
RELOAD_AT_S = 0.8
TAMPERED_RELOAD_AT_S = 2.0


@pytest.mark.parametrize("workers", [0, 1], ids=["workers-0", "workers-1"])
def test_reload_under_load_fails_nothing_and_keeps_the_old_version_on_a_bad_artifact(
    workers, tmp_path, start_server
):
    root = rs.make_repository(tmp_path / "repo", workers=workers)
    target = rs.add_model(root, "diabetes")
    x = np.asarray([rs.ROW])
    v1 = float(rs.predict_locally(rs.MODELS / "diabetes" / "1", x)[0])
    v2 = float(rs.predict_locally(rs.MODELS / "diabetes" / "2", x)[0])
    assert abs(v1 - v2) > 1e-6
    server = start_server(root, env={"PIPELINE_DRAIN_DELAY_S": "0"}, ready=["diabetes"])

    load = rs.Load(server, "diabetes", rest_clients=2, grpc_clients=2).start(LOAD_S)
    started = time.monotonic()
    time.sleep(RELOAD_AT_S)
    rs.replace_artifacts(target, rs.MODELS / "diabetes" / "2")
    good = requests.post(f"{server.http}/v2/repository/models/diabetes/load", timeout=60)
    reloaded = time.monotonic()

    time.sleep(max(0.0, started + TAMPERED_RELOAD_AT_S - time.monotonic()))
    rs.tamper(target / "model.skops")
    bad = requests.post(f"{server.http}/v2/repository/models/diabetes/load", timeout=60)
    refused = time.monotonic()
    ready_after = requests.get(f"{server.http}/v2/models/diabetes/ready", timeout=10).status_code
    index = requests.post(f"{server.http}/v2/repository/index", json={}, timeout=10).json()
    outcomes = load.join()

    summary = rs.summarize(outcomes)
    print(f"workers {workers}: {summary}; reload {good.status_code} in "
          f"{reloaded - started - RELOAD_AT_S:.3f}s, tampered reload {bad.status_code}")  # fmt: skip
    assert good.status_code == 200, good.text
    assert bad.status_code == 500 and "sha256 mismatch" in bad.json()["error"], bad.text
    assert "refusing to load it" in bad.json()["error"]

    assert [o for o in outcomes if not o.ok] == [], summary
    assert len(outcomes) > 50
    values = [(o.started, o.ended, o.value) for o in outcomes]
    assert all(np.isclose(v, v1, rtol=1e-9) or np.isclose(v, v2, rtol=1e-9) for _, _, v in values)
    assert any(np.isclose(v, v1, rtol=1e-9) for _, _, v in values)
    # Sent after the good reload answered: version 2, also after the refused reload.
    after = [v for s, _, v in values if s > reloaded]
    assert after and all(np.isclose(v, v2, rtol=1e-9) for v in after)
    assert [v for s, _, v in values if s > refused], "no request after the refused reload"

    assert ready_after == 200
    assert [m["state"] for m in index if m["name"] == "diabetes"] == ["READY"]
    # And it still answers with version 2 once the load is over.
    final = server.rest_infer("diabetes")
    assert final.status_code == 200 and np.isclose(final.json()["outputs"][0]["data"][0], v2, rtol=1e-9)
