"""Safe artifacts over a real server: what the load refuses, and the two overrides of
parameters.extra (`allow_sklearn_version_mismatch`, `trusted_types`).

Each model directory is added to the running server's repository and loaded through the
repository API, as a deployment would (a model failing at startup would stop the whole server).
The server keeps serving `diabetes` throughout.
"""

from __future__ import annotations

import pytest
import requests
import sklearn
import skops.io as sio
from sklearn.datasets import load_diabetes
from sklearn.tree import DecisionTreeRegressor

from harness.models import DIABETES, pipeline
from harness.repository import add_model, make_repository, read_manifest_json, tamper, write_manifest_json
from harness.server import Server
from runtime.core.artifacts import sha256_hex
from tests.reliability import support

TREE = "sklearn.tree._classes.DecisionTreeRegressor"
# skops trusts scikit-learn's estimators by default, but not the Cython tree structure inside
# a decision tree: a type outside both skops' defaults and the runtime's list.
TREE_STATE = "sklearn.tree._tree.Tree"
OLD_SKLEARN = "0.24.2"


def _launch(request: pytest.FixtureRequest) -> Server:
    root = make_repository(request.getfixturevalue("tmp_path_factory").mktemp("artifacts") / "repo")
    add_model(root, "diabetes")
    return support.launch(root, env={"PIPELINE_DRAIN_DELAY_S": "0"}, ready=["diabetes"])


# Launched with the suite's other servers (conftest.fleet).
SERVERS = {"artifacts": _launch}


@pytest.fixture(scope="module")
def server(fleet) -> Server:
    return fleet["artifacts"]


def load(server: Server, name: str) -> requests.Response:
    return requests.post(f"{server.http_url}/v2/repository/models/{name}/load", timeout=60)


def assert_still_serving(server: Server) -> None:
    assert support.rest_infer(server, "diabetes").status_code == 200
    assert requests.get(f"{server.http_url}/v2/health/ready", timeout=10).status_code == 200


def test_a_tampered_artifact_is_refused_before_it_is_deserialised(server):
    target = add_model(server.root, "tampered")
    tamper(target / "model.skops")
    response = load(server, "tampered")
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert "model.skops: sha256 mismatch" in error and "refusing to load it" in error
    assert requests.get(f"{server.http_url}/v2/models/tampered/ready", timeout=10).status_code != 200
    assert support.rest_infer(server, "tampered").status_code != 200
    assert_still_serving(server)


def _skewed(server: Server, name: str, extra: dict) -> None:
    target = add_model(server.root, name, extra=extra)
    doc = read_manifest_json(target)
    doc["trained_with"]["scikit-learn"] = OLD_SKLEARN  # the manifest is not hashed: a metadata change
    write_manifest_json(target, doc)


def test_a_scikit_learn_version_mismatch_is_refused_naming_both_versions(server):
    _skewed(server, "skewed", {})
    response = load(server, "skewed")
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert f"trained with scikit-learn {OLD_SKLEARN} but {sklearn.__version__} is installed" in error
    assert "allow_sklearn_version_mismatch" in error
    assert_still_serving(server)


def test_the_version_mismatch_override_loads_with_a_warning(server):
    _skewed(server, "skewed-allowed", {"allow_sklearn_version_mismatch": True})
    response = load(server, "skewed-allowed")
    assert response.status_code == 200, response.text
    assert support.rest_infer(server, "skewed-allowed").status_code == 200
    warnings = [
        r
        for r in server.log_records()
        if r.get("level") == "WARNING" and "allow_sklearn_version_mismatch is set" in r.get("message", "")
    ]
    assert warnings, server.log_tail()
    assert OLD_SKLEARN in warnings[-1]["message"] and sklearn.__version__ in warnings[-1]["message"]


def _tree(server: Server, name: str, extra: dict) -> tuple:
    """A decision tree (holding an untrusted type) in place of diabetes/1's model."""
    target = add_model(server.root, name, extra=extra)
    x, y = load_diabetes(return_X_y=True)
    scaler = pipeline(DIABETES, "1").scaler  # the copied scaler, as runtime.core.artifacts loads it
    tree = DecisionTreeRegressor(max_depth=4, random_state=0).fit(scaler.transform(x), y)
    sio.dump(tree, target / "model.skops")
    doc = read_manifest_json(target)
    doc["estimator"] = TREE
    doc["model"]["sha256"] = sha256_hex((target / "model.skops").read_bytes())
    write_manifest_json(target, doc)
    return scaler, tree


def test_a_type_outside_the_trusted_list_is_refused(server):
    _tree(server, "tree", {})
    response = load(server, "tree")
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert f"refusing untrusted types ['{TREE_STATE}']" in error and "trusted_types" in error
    assert_still_serving(server)


def test_trusted_types_admits_it(server):
    scaler, tree = _tree(server, "tree-trusted", {"trusted_types": [TREE_STATE]})
    response = load(server, "tree-trusted")
    assert response.status_code == 200, response.text
    answer = support.rest_infer(server, "tree-trusted")
    assert answer.status_code == 200, answer.text
    expected = tree.predict(scaler.transform([support.ROW]))[0]
    assert answer.json()["outputs"][0]["data"][0] == pytest.approx(expected, rel=1e-9)
