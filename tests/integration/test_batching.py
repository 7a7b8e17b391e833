"""Adaptive batching: one bad request fails alone, the requests batched with it are answered.

Stock MLServer merges concurrent requests before the model validates them, so a single NaN
would fail the whole batch. Here eight requests (six good ones in both layouts, two bad ones)
arrive together at a server whose batcher waits long enough to merge them, with and without
parallel workers. Proof that they really were batched: the runtime's own `ok` counter, which
counts model calls, moves by less than the number of good requests.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import requests

import itest_support as its
from obs_support import ObsServer, scrape, start_server, value

MODEL, VERSION = its.DIABETES, "1"
PIPELINE = its.pipeline(MODEL, VERSION)
GOOD_ROWS = (1, 3, 2, 1, 4, 2)


def _prepare(root: Path, workers: int) -> None:
    root.mkdir(parents=True)
    (root / "runtime").symlink_to(its.REPO_ROOT / "runtime", target_is_directory=True)
    target = root / "models" / MODEL / VERSION
    shutil.copytree(its.MODELS_DIR / MODEL / VERSION, target)
    settings_path = target / "model-settings.json"
    model_settings = json.loads(settings_path.read_text())
    # A batch window far longer than it takes to send eight requests, so they merge.
    model_settings.update(max_batch_size=32, max_batch_time=0.5)
    settings_path.write_text(json.dumps(model_settings))
    (root / "settings.json").write_text(json.dumps({"debug": False, "parallel_workers": workers}))


@pytest.fixture(scope="module", params=[0, 1], ids=["workers-0", "workers-1"])
def batching_server(request, tmp_path_factory) -> ObsServer:
    root = tmp_path_factory.mktemp(f"batching-{request.param}") / "root"
    _prepare(root, request.param)
    server = start_server(root, [(MODEL, VERSION)], env={})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _bodies() -> list[tuple[str, dict, np.ndarray | None]]:
    names = PIPELINE.feature_names
    cases: list[tuple[str, dict, np.ndarray | None]] = []
    for i, rows in enumerate(GOOD_ROWS):
        x = its.sample_rows(MODEL, rows, offset=10 * i)
        if i % 2:
            inputs = [{"name": n, "shape": [rows], "datatype": "FP64", "data": x[:, j].tolist()}
                      for j, n in enumerate(names)]
        else:
            inputs = [{"name": "X", "shape": [rows, len(names)], "datatype": "FP64", "data": x.tolist()}]
        cases.append((f"good-{i}", {"inputs": inputs}, x))
    nan_rows = its.sample_rows(MODEL, 2).tolist()
    nan_rows[1][3] = None
    cases.append(("null", {"inputs": [{"name": "X", "shape": [2, 10], "datatype": "FP64", "data": nan_rows}]}, None))
    short = its.sample_rows(MODEL, 1)[:, :7]
    cases.append(("seven", {"inputs": [{"name": "X", "shape": [1, 7], "datatype": "FP64", "data": short.tolist()}]}, None))
    return cases


def _send_together(server: ObsServer, cases) -> dict[str, requests.Response]:
    url = f"{server.http_url}/v2/models/{MODEL}/versions/{VERSION}/infer"
    start = threading.Barrier(len(cases))
    responses: dict[str, requests.Response] = {}

    def send(label: str, body: dict) -> None:
        start.wait(timeout=30)
        responses[label] = requests.post(url, json=body, timeout=30)

    threads = [threading.Thread(target=send, args=(label, body)) for label, body, _ in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return responses


def test_a_bad_request_fails_alone_in_a_batch(batching_server):
    before = value(scrape(batching_server), "pipeline_requests_total", outcome="ok")
    cases = _bodies()
    responses = _send_together(batching_server, cases)
    assert len(responses) == len(cases)

    for label, _, x in cases:
        response = responses[label]
        its.AUDIT.check(label, response.text)
        if x is None:
            continue
        assert response.status_code == 200, f"{label}: {response.status_code} {response.text}"
        (output,) = response.json()["outputs"]
        assert output["shape"] == [len(x)]
        its.assert_parity(np.asarray(output["data"]), PIPELINE.predict(x), what=label)

    assert responses["null"].status_code == 400
    its.assert_mentions(responses["null"].json()["error"], ["'X'", "row 1", "column 3", "null"])
    assert responses["seven"].status_code == 400
    its.assert_mentions(responses["seven"].json()["error"], ["'X'", "expected 10", "got 7"])

    model_calls = value(scrape(batching_server), "pipeline_requests_total", outcome="ok") - before
    assert 1 <= model_calls < len(GOOD_ROWS), f"{model_calls} model calls: the requests were not batched"
