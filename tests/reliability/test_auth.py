"""Bearer-token auth for inference over REST and gRPC; health, readiness and metadata stay open.

One server, tokens configured two ways:
- server-wide: PIPELINE_AUTH_TOKENS holds two tokens (rotation: both valid) for `diabetes`;
- per model: `filed` names its own token file (parameters.extra.auth_token_file), which wins
  over the server-wide tokens and is re-read when it changes.
A model whose token source holds no token refuses to load (fails closed, loudly).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from tritonclient.utils import InferenceServerException

from harness.repository import add_model, make_repository
from harness.server import Server
from tests.reliability import support

OLD, NEW, FILED = "old-token-1b9f", "new-token-77c2", "file-token-3e0a"
ADMIN = "admin-token-90d4"  # the repository API needs its own token where inference has one


def _tokens_file(root: Path) -> Path:
    """The per-model token file, beside the repository (the test rotates it)."""
    return root.parent / "tokens"


def _launch(request: pytest.FixtureRequest) -> Server:
    root = make_repository(request.getfixturevalue("tmp_path_factory").mktemp("auth") / "repo")
    tokens = _tokens_file(root)
    tokens.write_text(f"# rotated by the test\n{FILED}\n")
    add_model(root, "diabetes")
    add_model(root, "filed", extra={"auth_token_file": str(tokens)})
    env = {"PIPELINE_AUTH_TOKENS": f"{OLD}, {NEW}", "PIPELINE_ADMIN_TOKENS": ADMIN, "PIPELINE_DRAIN_DELAY_S": "0"}
    return support.launch(root, env=env, ready=["diabetes", "filed"])


# Launched with the suite's other servers (conftest.fleet).
SERVERS = {"auth": _launch}


@pytest.fixture(scope="module")
def server(fleet) -> Server:
    return fleet["auth"]


@pytest.fixture(scope="module")
def tokens_file(server) -> Path:
    return _tokens_file(server.root)


@pytest.fixture(scope="module")
def grpc(server):
    client = support.grpc_client(server)
    yield client
    client.close()


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), bearer(""), {"Authorization": OLD}, bearer(OLD, "Basic"), bearer(FILED)],
    ids=["none", "wrong", "empty", "no-scheme", "basic", "other-models-token"],
)
def test_rest_inference_without_a_valid_token_is_401(server, headers):
    response = support.rest_infer(server, "diabetes", headers=headers)
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert "bearer token" in error
    assert not any(t in error for t in (OLD, NEW, FILED, "wrong"))  # never echoed


@pytest.mark.parametrize(
    "headers",
    [bearer(OLD), bearer(NEW), bearer(NEW, "bearer"), {"AUTHORIZATION": f"BEARER  {OLD} "}],
    ids=["old", "new", "lower-case-scheme", "upper-case-header"],
)
def test_rest_inference_with_any_valid_token_is_served(server, headers):
    response = support.rest_infer(server, "diabetes", headers=headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "token,code", [(None, "UNAUTHENTICATED"), ("wrong", "UNAUTHENTICATED"), (OLD, None), (NEW, None)]
)
def test_grpc_inference_checks_the_authorization_metadata(grpc, token, code):
    headers = {"authorization": f"Bearer {token}"} if token else None
    if code is None:
        assert support.grpc_infer(grpc, "diabetes", headers=headers).as_numpy("predict").shape == (1,)
        return
    with pytest.raises(InferenceServerException) as error:
        support.grpc_infer(grpc, "diabetes", headers=headers)
    assert support.grpc_status(error.value) == code and "bearer token" in error.value.message()


def test_the_other_inference_routes_are_guarded_too(server):
    body: dict[str, Any] = {"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": support.ROW}]}
    for path in ("/v2/models/diabetes/generate", "/v2/models/diabetes/versions/1/infer"):
        response = requests.post(server.http_url + path, json=body, timeout=10)
        assert response.status_code == 401, (path, response.text)
    ok = requests.post(server.http_url + "/v2/models/diabetes/generate", json=body, headers=bearer(NEW), timeout=10)
    assert ok.status_code == 200, ok.text
    # REST streams: refused from the request head (runtime.edge.guard), before MLServer's stream
    # starts (inside it, MLServer 1.7.1 answers any error with a bare 500).
    stream = "/v2/models/diabetes/infer_stream"
    refused = requests.post(server.http_url + stream, json=body, timeout=10)
    assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
    served = requests.post(server.http_url + stream, json=body, headers=bearer(NEW), timeout=10)
    assert served.status_code == 200 and '"outputs"' in served.text, served.text


def test_health_readiness_and_metadata_need_no_token(server, grpc):
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/diabetes/ready",
        "/v2/models/diabetes/versions/1/ready",
        "/v2/models/diabetes",
        "/v2",
    ):
        assert requests.get(server.http_url + path, timeout=10).status_code == 200, path
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("diabetes")
    assert grpc.get_model_metadata("diabetes").name == "diabetes"
    assert requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).status_code == 200


def test_a_models_own_token_file_wins_and_is_re_read_when_rotated(server, grpc, tokens_file):
    assert support.rest_infer(server, "filed", headers=bearer(FILED)).status_code == 200
    assert support.rest_infer(server, "filed", headers=bearer(OLD)).status_code == 401  # server-wide: not here
    rotated = "rotated-token-5d21"
    tokens_file.write_text(f"{FILED}\n{rotated}\n")  # step 1: both valid
    deadline = time.monotonic() + 10
    while support.rest_infer(server, "filed", headers=bearer(rotated)).status_code != 200:
        assert time.monotonic() < deadline, "the rotated token file was never re-read"
        time.sleep(0.2)
    tokens_file.write_text(f"{rotated}\n")  # step 2: the old token is withdrawn
    deadline = time.monotonic() + 10
    while support.rest_infer(server, "filed", headers=bearer(FILED)).status_code != 401:
        assert time.monotonic() < deadline, "the withdrawn token still works"
        time.sleep(0.2)
    assert support.grpc_infer(grpc, "filed", headers={"authorization": f"Bearer {rotated}"})


def test_a_model_whose_token_source_is_empty_refuses_to_load(server, tmp_path):
    empty = tmp_path / "empty-tokens"
    empty.write_text("\n# nothing yet\n")
    add_model(server.root, "locked", extra={"auth_token_file": str(empty)})
    admin = bearer(ADMIN)
    response = requests.post(f"{server.http_url}/v2/repository/models/locked/load", headers=admin, timeout=60)
    assert response.status_code == 500 and "holds no token" in response.json()["error"], response.text
    index = requests.post(f"{server.http_url}/v2/repository/index", json={}, headers=admin, timeout=10).json()
    assert {m["name"]: m["state"] for m in index}.get("locked") != "READY"
