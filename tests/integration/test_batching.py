"""Adaptive batching: one bad request fails alone, the requests batched with it are answered.

Stock MLServer merges concurrent requests before the model validates them, so a single NaN
would fail the whole batch. Here eight requests (six good ones in both layouts, two bad ones)
arrive together at a server whose batcher waits long enough to merge them, with and without
parallel workers. Proof that they really were batched: the runtime's own `ok` counter, which
counts model calls, moves by less than the number of good requests.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import requests

from harness import mixed_model
from harness.models import DIABETES, assert_parity, pipeline, sample_rows
from harness.repository import add_model, make_repository
from harness.server import Server
from tests.integration import support

MODEL, VERSION = DIABETES, "1"
PIPELINE = pipeline(MODEL, VERSION)
GOOD_ROWS = (1, 3, 2, 1, 4, 2)
WORKERS = {"workers-0": 0, "workers-1": 1}


def _launch(request: pytest.FixtureRequest, workers: int) -> Server:
    """The project's settings (JSON logs) with `workers`; diabetes/1 batching with a window far
    longer than it takes to send eight requests, so they merge."""
    root = make_repository(request.getfixturevalue("tmp_path_factory").mktemp("batching") / "repo", workers=workers)
    add_model(
        root,
        MODEL,
        source=f"{MODEL}/{VERSION}",
        version=VERSION,
        subdir=f"{MODEL}/{VERSION}",
        extra={"max_rows": 10000},
        settings={"max_batch_size": 32, "max_batch_time": 0.5},
    )
    return Server.launch(root / "server.log", root=root, models=[(MODEL, VERSION)])


def _launch_mixed(request: pytest.FixtureRequest) -> Server:
    """harness.mixed_model (string columns, gaps) batching as diabetes/1 does."""
    root = make_repository(request.getfixturevalue("tmp_path_factory").mktemp("batching") / "repo", workers=0)
    settings_path = mixed_model.write(root / "models") / "model-settings.json"
    settings = json.loads(settings_path.read_text())
    settings_path.write_text(json.dumps({**settings, "max_batch_size": 32, "max_batch_time": 0.5}))
    return Server.launch(root / "server.log", root=root, models=[(mixed_model.NAME, "1")])


# Launched with the suite's other servers (conftest.fleet).
SERVERS: dict[str, Callable[[pytest.FixtureRequest], Server]] = {
    f"batching-{mode}": functools.partial(_launch, workers=w) for mode, w in WORKERS.items()
}
SERVERS["batching-mixed"] = _launch_mixed


@pytest.fixture(params=list(WORKERS))
def batching_server(request, fleet) -> Server:
    return fleet[f"batching-{request.param}"]


def _bodies() -> list[tuple[str, dict, np.ndarray | None]]:
    names = PIPELINE.feature_names
    cases: list[tuple[str, dict, np.ndarray | None]] = []
    for i, rows in enumerate(GOOD_ROWS):
        x = sample_rows(MODEL, rows, offset=10 * i)
        if i % 2:
            inputs = [
                {"name": n, "shape": [rows], "datatype": "FP64", "data": x[:, j].tolist()} for j, n in enumerate(names)
            ]
        else:
            inputs = [{"name": "X", "shape": [rows, len(names)], "datatype": "FP64", "data": x.tolist()}]
        cases.append((f"good-{i}", {"inputs": inputs}, x))
    nan_rows = sample_rows(MODEL, 2).tolist()
    nan_rows[1][3] = None
    cases.append(("null", {"inputs": [{"name": "X", "shape": [2, 10], "datatype": "FP64", "data": nan_rows}]}, None))
    short = sample_rows(MODEL, 1)[:, :7]
    cases.append(
        ("seven", {"inputs": [{"name": "X", "shape": [1, 7], "datatype": "FP64", "data": short.tolist()}]}, None)
    )
    return cases


def _send_together(server: Server, cases, model: str = MODEL) -> dict[str, requests.Response]:
    """Every case's body at once (a barrier), to `model`'s version 1 as V2 REST."""
    url = f"{server.http_url}/v2/models/{model}/versions/{VERSION}/infer"
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
    """Then the server (this test's own) is stopped: every line it wrote, shutdown included, is
    JSON (the project's logging configuration)."""
    server = batching_server
    ok_calls = {"name": "pipeline_requests_total", "outcome": "ok", "model": MODEL}
    before = server.metric(**ok_calls)
    cases = _bodies()
    responses = _send_together(server, cases)
    assert len(responses) == len(cases)

    for label, _, x in cases:
        response = responses[label]
        support.AUDIT.check(label, response.text)
        if x is None:
            continue
        assert response.status_code == 200, f"{label}: {response.status_code} {response.text}"
        (output,) = response.json()["outputs"]
        assert output["shape"] == [len(x)]
        assert_parity(np.asarray(output["data"]), PIPELINE.predict(x), what=label)

    assert responses["null"].status_code == 400
    support.assert_mentions(responses["null"].json()["error"], ["'X'", "row 1", "column 3", "null"])
    assert responses["seven"].status_code == 400
    support.assert_mentions(responses["seven"].json()["error"], ["'X'", "expected 10", "got 7"])

    model_calls = server.metric(**ok_calls) - before
    assert 1 <= model_calls < len(GOOD_ROWS), f"{model_calls} model calls: the requests were not batched"

    server.stop()
    assert server.proc.returncode is not None
    server.log_records(strict=True)


def _column_tensors(frame: pd.DataFrame, shape: list[int]) -> list[dict]:
    def values(name: str) -> list:
        return [None if v is None or v != v else v for v in frame[name].tolist()]

    strings = set(mixed_model.STRINGS)
    return [
        {"name": n, "shape": shape, "datatype": "BYTES" if n in strings else "FP64", "data": values(n)}
        for n in mixed_model.COLUMNS
    ]


def test_string_columns_batch_one_tensor_per_column_and_a_bad_one_fails_alone(fleet):
    server = fleet["batching-mixed"]
    model = mixed_model.pipeline()
    cases: list[tuple[str, dict, pd.DataFrame | None]] = []
    for i in range(6):
        frame = mixed_model.rows(i % 2 + 1, seed=10 + i)
        shape = [len(frame), 1] if i % 2 else [len(frame)]  # PandasCodec's [N, 1] beside plain [N]
        cases.append((f"good-{i}", {"inputs": _column_tensors(frame, shape)}, frame))
    unseen = mixed_model.rows(1, seed=3, gaps=False).assign(city="lima")
    cases.append(("unseen", {"inputs": _column_tensors(unseen, [1])}, None))
    ok_calls = {"name": "pipeline_requests_total", "outcome": "ok", "model": mixed_model.NAME}
    before = server.metric(**ok_calls)
    responses = _send_together(server, cases, mixed_model.NAME)
    for label, _, frame in cases:
        if frame is None:
            continue
        response = responses[label]
        assert response.status_code == 200, f"{label}: {response.status_code} {response.text}"
        (output,) = response.json()["outputs"]
        assert output["data"] == model.predict(frame).tolist(), label
    assert responses["unseen"].status_code == 400
    support.assert_mentions(responses["unseen"].json()["error"], ["'city'", "row 0", "'lima'", "'oslo'"])
    model_calls = server.metric(**ok_calls) - before
    assert 1 <= model_calls < 6, f"{model_calls} model calls: the requests were not batched"
