"""Out-of-distribution per column and shadows matched on the schema, on a real `mlserver start .`.

Mixed models (tests.ood_models: age and income may be missing, city a string column) packaged at
launch: `mixed` serves unseen cities (counted) and is shadowed by `mixed-tree` (the same schema, another
estimator); `mixed-lax`, the same model, is shadowed by `mixed-strict`, which refuses unseen cities and
so must never be handed `mixed-lax`'s features. Requests go over REST (JSON null for a gap) and gRPC
(tritonclient, NaN in FP64 contents); /metrics is scraped and parsed.
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

import numpy as np
import pytest
import requests

from harness.repository import make_repository
from harness.server import Server, metric_value
from harness.v2 import REQUEST_TIMEOUT_S
from tests.ood_models import write_mixed

MODELS = {  # name -> (the encoder's handle_unknown, a tree, the model's extra parameters)
    "mixed": ("ignore", False, {"shadow_model": "mixed-tree", "shadow_sample_rate": 1.0}),
    "mixed-tree": ("ignore", True, {}),
    "mixed-lax": ("ignore", False, {"shadow_model": "mixed-strict", "shadow_sample_rate": 1.0}),
    "mixed-strict": ("error", False, {}),
}
SHADOW_WAIT_S = 10.0  # ticks are 0.5 s


def _launch(request: pytest.FixtureRequest) -> Server:
    tmp = request.getfixturevalue("tmp_path_factory").mktemp("ood-columns")
    root = make_repository(tmp / "repo", workers=0)
    for name, (unknown, tree, extra) in MODELS.items():
        target = root / "models" / name
        shutil.copytree(write_mixed(tmp / "packaged", name, unknown, tree), target)
        settings = json.loads((target / "model-settings.json").read_text())
        settings["parameters"]["extra"].update(extra)
        (target / "model-settings.json").write_text(json.dumps(settings))
    return Server.launch(root / "server.log", root=root, models=[(name, None) for name in MODELS])


# Launched with the suite's other servers (conftest.fleet).
SERVERS = {"ood-columns": _launch}


@pytest.fixture
def ood_server(fleet) -> Server:
    return fleet["ood-columns"]


def _body(age: list, income: list, city: list, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {"name": "age", "shape": [len(age)], "datatype": "FP64", "data": age},
            {"name": "income", "shape": [len(income)], "datatype": "FP64", "data": income},
            {"name": "city", "shape": [len(city)], "datatype": "BYTES", "data": city},
        ]
    }
    if parameters:
        body["parameters"] = parameters
    return body


def _infer(server: Server, model: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = requests.post(f"{server.http_url}/v2/models/{model}/infer", json=body, timeout=REQUEST_TIMEOUT_S)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _grpc_infer(server: Server, model: str, age: list[float], income: list[float], city: list[str]) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        inputs = []
        for name, values, datatype in (("age", age, "FP64"), ("income", income, "FP64"), ("city", city, "BYTES")):
            array = np.array(values, dtype=object if datatype == "BYTES" else np.float64)
            tensor = grpcclient.InferInput(name, [len(values)], datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(model, inputs)
        assert result.as_numpy("predict") is not None
    finally:
        client.close()


def test_unseen_categories_and_gaps_counted_per_column_and_flagged(ood_server):
    def value(samples: dict, name: str, feature: str) -> float:
        return metric_value(samples, name, model="mixed", version="1", feature=feature)

    before = ood_server.scrape()
    flagged = _infer(
        ood_server,
        "mixed",
        _body([30, None, 40], [None, 50, 60], ["tokyo", "rome", "oslo"], ood_flags=True),
    )
    assert json.loads(flagged["parameters"]["ood_flags"]) == [["missing:income", "city"], ["missing:age"], ["city"]]
    assert len(flagged["outputs"][0]["data"]) == 3 and set(flagged["outputs"][0]["data"]) <= {"yes", "no"}
    _grpc_infer(ood_server, "mixed", [35.0, 45.0], [np.nan, np.nan], ["berlin", "paris"])
    after = ood_server.scrape()
    expected = {
        ("pipeline_ood_unseen_values_total", "city"): 3,  # tokyo, oslo, berlin
        ("pipeline_ood_missing_values_total", "age"): 1,
        ("pipeline_ood_missing_values_total", "income"): 3,
    }
    for (name, feature), count in expected.items():
        assert value(after, name, feature) - value(before, name, feature) == count, (name, feature)
    # No series for the columns a count does not apply to.
    assert not [k for k in after if k[0] == "pipeline_ood_unseen_values_total" and ("feature", "age") in k[1]]
    assert not [k for k in after if k[0] == "pipeline_ood_missing_values_total" and ("feature", "city") in k[1]]
    rows = metric_value(after, "pipeline_ood_rows_total", model="mixed") - metric_value(
        before, "pipeline_ood_rows_total", model="mixed"
    )
    assert rows == 3  # the rows with an unseen city; a gap alone is not out of distribution


def _shadow_event(samples: dict, model: str, shadow: str, event: str) -> float:
    return metric_value(samples, "pipeline_shadow_events_total", model=model, shadow=shadow, event=event)


def _wait_for_event(server: Server, model: str, shadow: str, event: str, count: float) -> dict:
    deadline = time.monotonic() + SHADOW_WAIT_S
    while True:
        samples = server.scrape()
        if _shadow_event(samples, model, shadow, event) >= count or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_a_shadow_is_compared_only_when_its_schema_takes_the_primarys(ood_server):
    body = _body([30, None, 50], [None, 50, 60], ["tokyo", "rome", "paris"])
    for model in ("mixed", "mixed-lax"):
        _infer(ood_server, model, body)
    compatible = _wait_for_event(ood_server, "mixed", "mixed-tree", "compared", 3)
    assert _shadow_event(compatible, "mixed", "mixed-tree", "compared") >= 3
    assert _shadow_event(compatible, "mixed", "mixed-tree", "agreed") >= 1  # string labels compared
    assert _shadow_event(compatible, "mixed", "mixed-tree", "error") == 0
    incompatible = _wait_for_event(ood_server, "mixed-lax", "mixed-strict", "incompatible", 1)
    assert _shadow_event(incompatible, "mixed-lax", "mixed-strict", "incompatible") >= 1
    for event in ("evaluated", "compared", "error"):
        assert _shadow_event(incompatible, "mixed-lax", "mixed-strict", event) == 0, event
    log = ood_server.log_text()
    assert "shadow mixed-strict of mixed-lax cannot take its features" in log
    assert "column 'city' has categories the shadow refuses and the primary takes" in log
    assert "shadow mixed-tree of mixed cannot" not in log
