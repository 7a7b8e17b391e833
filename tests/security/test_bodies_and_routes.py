"""The request guard against hostile requests, on real servers (issue 24, items 1, 2, 3 and 6):
compressed bodies are refused from the head when unauthenticated and inflated under the limit when
not; a chunked body counts whatever the spelling of its Transfer-Encoding; the repository API is
locked on the path Starlette routes, with a root path and every path trick; deep JSON is a 400 on
every JSON entry. Raw sockets where a client library would tidy the request up."""

from __future__ import annotations

import gzip
import json
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from harness.repository import add_model, make_repository
from harness.server import Server, served
from tests.reliability.support import launch, rest_infer
from tests.security import support

LIMIT = 1_000_000
TOKEN = "edge-inference-7c1d"
ADMIN = "edge-admin-2b9e"
ROOT_PATH = "/serving"
ROW: dict[str, Any] = {"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": [0.01] * 10}]}
V1_PREDICT = "/v1/models/diabetes:predict"
# The same row as each inference entry takes it.
BODIES: dict[str, Any] = {
    "/v2/models/diabetes/infer": ROW,
    "/predict/diabetes": {"features": [[0.01] * 10]},
    V1_PREDICT: {"instances": [[0.01] * 10]},
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("edge")
    common = {"PIPELINE_MAX_REQUEST_BYTES": str(LIMIT), "PIPELINE_ADMIN_TOKENS": ADMIN}
    specs = {
        "authed": {**common, "PIPELINE_AUTH_TOKENS": TOKEN},
        "rooted": {**common, "MLSERVER_ROOT_PATH": ROOT_PATH},
        "open": {"PIPELINE_MAX_REQUEST_BYTES": str(LIMIT)},  # no token at all, loopback
    }
    launched = {}
    for name, env in specs.items():
        root = make_repository(base / name, workers=0)
        add_model(root, "diabetes")
        launched[name] = launch(root, env=env, ready=["diabetes"])
    yield from served(launched)


def _rss(server: Server) -> int:
    return sum(p.memory_info().rss for p in server.processes())


def _exchange(server: Server, request_head: bytes, pieces=()) -> tuple[int, dict, float]:
    """(status, the JSON body or {}, seconds to the answer)."""
    response = support.exchange(server.http_port, request_head, timeout_s=20, pieces=pieces)
    try:
        body = response.json() if response.body else {}
    except ValueError:
        body = {}
    return response.status, body, response.seconds


def _head(server: Server, path: str, headers: dict[str, str], method: str = "POST") -> bytes:
    return support.request_head(path, headers, method)


_chunked = support.chunked


# Gzip bombs: 256 MiB of zeros is ~255 KiB on the wire, 1 GiB ~1 MiB (above the limit as declared,
# so sent chunked).
BOMB = gzip.compress(b"0" * (256 * 1024 * 1024), compresslevel=9)
BIG_BOMB = gzip.compress(b"0" * (1024 * 1024 * 1024), compresslevel=9)


# --- 1. compressed bodies -------------------------------------------------------------------------


def test_an_unauthenticated_compressed_bomb_is_refused_from_the_head(servers):
    server = servers["authed"]
    before = _rss(server)
    head = _head(
        server,
        "/v2/models/diabetes/infer",
        {"Content-Type": "application/json", "Content-Encoding": "gzip", "Content-Length": str(len(BOMB))},
    )
    status, answer, took = _exchange(server, head, [BOMB])
    assert status == 401 and "bearer token" in answer["error"]
    assert took < 1.0, f"the 401 took {took:.2f} s"
    assert _rss(server) - before < 16 * 2**20


@pytest.mark.parametrize("framed", ["length", "chunked"])
def test_an_authenticated_compressed_bomb_is_a_413_once_it_inflates_past_the_limit(servers, framed):
    server = servers["authed"]
    before = _rss(server)
    bomb = BOMB if framed == "length" else BIG_BOMB
    framing = {"Content-Length": str(len(bomb))} if framed == "length" else {"Transfer-Encoding": "chunked"}
    head = _head(
        server,
        "/v2/models/diabetes/infer",
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "Content-Encoding": "gzip", **framing},
    )
    pieces = [bomb[i : i + 65536] for i in range(0, len(bomb), 65536)] if framed == "length" else _chunked(bomb)
    status, answer, took = _exchange(server, head, pieces)
    assert status == 413 and f"inflates to more than {LIMIT} bytes" in answer["error"]
    assert took < 2.0, f"the 413 took {took:.2f} s"
    assert _rss(server) - before < 32 * 2**20
    assert rest_infer(server, "diabetes", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.parametrize(
    "coding,compress", [("gzip", gzip.compress), ("deflate", zlib.compress), ("x-gzip", gzip.compress)]
)
@pytest.mark.parametrize("path", BODIES)
def test_a_compressed_request_is_served_inflated(servers, coding, compress, path):
    server = servers["authed"]
    response = requests.post(
        server.http_url + path,
        data=compress(json.dumps(BODIES[path]).encode()),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "Content-Encoding": coding},
        timeout=20,
    )
    assert response.status_code == 200, response.text


def test_an_unknown_content_coding_is_a_415(servers):
    server = servers["authed"]
    response = requests.post(
        server.http_url + "/v2/models/diabetes/infer",
        data=b"(brotli)",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "br"},
        timeout=20,
    )
    assert response.status_code == 415 and "'br' is not supported" in response.json()["error"]


def test_a_corrupt_gzip_body_is_a_400(servers):
    server = servers["authed"]
    response = requests.post(
        server.http_url + "/v2/models/diabetes/infer",
        data=b"\x1f\x8bnot really gzip",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip"},
        timeout=20,
    )
    assert response.status_code == 400 and "does not inflate" in response.json()["error"]


# --- 2. framing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["CHUNKED", "Chunked", "chunked"])
def test_a_chunked_body_counts_against_the_limit_in_any_spelling(servers, spelling):
    server = servers["authed"]
    head = _head(
        server,
        "/v2/models/diabetes/infer",
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "Transfer-Encoding": spelling},
    )
    status, answer, _ = _exchange(server, head, _chunked(b"0" * (8 * 1024 * 1024)))
    assert status == 413 and f"{LIMIT} bytes" in answer["error"]


@pytest.mark.parametrize(
    "headers,status",
    [
        ({"Content-Length": "10", "Transfer-Encoding": "chunked"}, 400),
        ({"Transfer-Encoding": "gzip, chunked"}, 501),
    ],
)
def test_framing_that_does_not_say_one_thing_is_refused(servers, headers, status):
    server = servers["open"]
    got, answer, _ = _exchange(server, _head(server, "/v2/models/diabetes/infer", headers), [b"0\r\n\r\n"])
    # httptools refuses some of these itself (400) before the guard sees them; either way no 200.
    assert got in (status, 400), answer


def test_eight_concurrent_64_mib_chunked_bodies_leave_memory_flat(servers):
    server = servers["authed"]
    head = _head(
        server,
        "/v2/models/diabetes/infer",
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "Transfer-Encoding": "CHUNKED"},
    )
    payload = b"0" * (64 * 1024 * 1024)
    before = _rss(server)
    with ThreadPoolExecutor(8) as pool:
        statuses = [s for s, _, _ in pool.map(lambda _: _exchange(server, head, _chunked(payload)), range(8))]
    assert statuses == [413] * 8
    assert _rss(server) - before < 64 * 2**20


# --- 3. routes, with a root path and path tricks ------------------------------------------------------

TRICKS = [
    "/v2/repository/models/diabetes/unload",
    "/v2/repository/models/diabetes/load",
    "/v2/repository/index",
    f"{ROOT_PATH}/v2/repository/models/diabetes/unload",
    "/v2/repository/models/diabetes/unload/",
    "//v2/repository/models/diabetes/unload",
    "/v2/repository%2Fmodels%2Fdiabetes%2Funload",
    "/v2/repository/models/diabetes%2Funload",
    "/v2/repository/models/./diabetes/unload",
    "/v2/models/../repository/models/diabetes/unload",
    "/V2/REPOSITORY/models/diabetes/unload",
    "/v2/repository/models/diabetes;/unload",
    "/v2/repository/models/diabetes/unload;x",
    "/v2/repository/models/diabetes/unload?x=1",
    "/v2/repository/models/diabetes/unload#x",
]


@pytest.mark.parametrize("path", TRICKS)
@pytest.mark.parametrize("token", [None, "wrong", TOKEN])
def test_the_repository_api_stays_locked_under_a_root_path_whatever_the_spelling(servers, path, token):
    server = servers["rooted"]
    headers = {"Content-Length": "0"} | ({"Authorization": f"Bearer {token}"} if token else {})
    status, _, _ = _exchange(server, _head(server, path, headers))
    assert status in (401, 404), (path, status)
    assert rest_infer(server, "diabetes").status_code == 200, "the model was unloaded"


def test_the_repository_api_answers_the_admin_under_a_root_path(servers):
    server = servers["rooted"]
    index = requests.post(
        server.http_url + "/v2/repository/index", json={}, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=20
    )
    assert index.status_code == 200 and "diabetes" in [m["name"] for m in index.json()]
    prefixed = requests.post(server.http_url + f"{ROOT_PATH}/v2/models/diabetes/infer", json=ROW, timeout=20)
    assert prefixed.status_code in (200, 404)


def test_an_unknown_route_or_model_is_a_404_before_the_body_is_read(servers):
    server = servers["authed"]
    for path in (
        "/nowhere",
        "/v2/models/no-such-model/infer",
        "/v1/models/no-such-model:predict",
        "/v1//models/diabetes:predict",
        "/v1/models/diabetes/:predict",
    ):
        head = _head(server, path, {"Content-Length": str(64 * 1024 * 1024)})
        status, answer, took = _exchange(server, head, [b"0" * 65536])
        assert status == 404 and took < 1.0, (path, status, answer)


# KServe's V1 routes: the guard takes the path apart as the V1 layer does, so no spelling reaches a
# model's predictions without its token, and each answers as the plain spelling of its route does.
# Path as sent -> status with the model's token.
V1_TRICKS = {
    V1_PREDICT: 200,
    "/v1/models/diabetes%3Apredict": 200,  # percent-encoded ':': the same route, decoded
    "/v1/models/%64iabetes:predict": 200,
    "/v1/models/diabetes:predict?x=1": 200,
    "/v1/models/diabetes:PREDICT": 405,  # the verb is case-sensitive: a model's status, GET only
    "/v1/models/diabetes": 405,
    "/v1//models/diabetes:predict": 404,
    "//v1/models/diabetes:predict": 404,
    "/v1/models//diabetes:predict": 404,
    "/V1/models/diabetes:predict": 404,
    "/v1/models/diabetes%2F:predict": 404,  # a decoded '/' is no model name
    "/v1/models/./diabetes:predict": 404,
    "/v1/models/diabetes:predict/": 404,
}


@pytest.mark.parametrize("path", V1_TRICKS)
@pytest.mark.parametrize("token", [None, "wrong", TOKEN])
def test_v1_predictions_need_the_token_whatever_the_spelling(servers, path, token):
    body = json.dumps(BODIES[V1_PREDICT]).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    headers |= {"Authorization": f"Bearer {token}"} if token else {}
    status, answer, _ = _exchange(servers["authed"], _head(servers["authed"], path, headers), [body])
    served = V1_TRICKS[path]
    assert status == (served if token == TOKEN or served != 200 else 401), (path, status, answer)
    assert "error" in answer or status == 200, (path, answer)


@pytest.mark.parametrize("prefix", ["", ROOT_PATH])
def test_v1_answers_under_a_root_path_as_v2_does(servers, prefix):
    server = servers["rooted"]
    v2 = requests.post(f"{server.http_url}{prefix}/v2/models/diabetes/infer", json=ROW, timeout=20)
    v1 = requests.post(f"{server.http_url}{prefix}{V1_PREDICT}", json=BODIES[V1_PREDICT], timeout=20)
    assert v1.status_code == v2.status_code, (v1.text, v2.text)
    status = requests.get(f"{server.http_url}{prefix}/v1/models/diabetes", timeout=20)
    assert status.status_code == v2.status_code and (status.status_code == 404 or status.json()["ready"])


@pytest.mark.parametrize("server_name", ["authed", "rooted"])
def test_the_v1_model_list_takes_the_repository_apis_lock(servers, server_name):
    server = servers[server_name]
    for token in (None, "wrong", TOKEN):  # an inference token is no admin token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        refused = requests.get(server.http_url + "/v1/models", headers=headers, timeout=20)
        assert refused.status_code == 401 and "admin token" in refused.json()["error"], (token, refused.text)
    listed = requests.get(server.http_url + "/v1/models", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=20)
    assert listed.status_code == 200 and listed.json() == {"models": ["diabetes"]}, listed.text


def test_v1_refusals_come_from_the_head_before_the_body_is_read(servers):
    server = servers["authed"]
    authed = {"Authorization": f"Bearer {TOKEN}"}
    for method, path, headers, status in (
        ("POST", V1_PREDICT, {}, 401),
        ("POST", V1_PREDICT, authed, 413),  # over the body limit, as declared
        ("POST", "/v1/models/no-such-model:predict", authed, 404),
        ("POST", "/v1//models", {}, 404),
        ("GET", "/v1/models", authed, 401),  # an inference token is no admin token
    ):
        head = _head(server, path, {**headers, "Content-Length": str(64 * 1024 * 1024)}, method)
        got, answer, took = _exchange(server, head, [b"0" * 65536])
        assert got == status and took < 1.0, (path, got, answer, took)


# --- 6. nesting -------------------------------------------------------------------------------------

DEEP = b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"


@pytest.mark.parametrize(
    "server_name,path,headers",
    [
        ("open", "/v2/models/diabetes/infer", {}),
        ("open", "/v2/models/diabetes/versions/1/infer", {}),
        ("open", "/predict/diabetes", {}),
        ("open", "/predict", {}),
        ("open", V1_PREDICT, {}),
        ("authed", V1_PREDICT, {"Authorization": f"Bearer {TOKEN}"}),
        ("open", "/v2/repository/index", {}),
        ("open", "/v2/repository/models/diabetes/load", {}),
        ("authed", "/v2/models/diabetes/infer", {"Authorization": f"Bearer {TOKEN}"}),
    ],
)
def test_deeply_nested_json_is_a_400_on_every_json_entry(servers, server_name, path, headers):
    server = servers[server_name]
    response = requests.post(
        server.http_url + path, data=DEEP, headers={"Content-Type": "application/json", **headers}, timeout=20
    )
    assert response.status_code == 400, response.text
    assert "nests deeper than 64 levels" in response.json()["error"]
    assert "Traceback" not in server.log_text() and '"level": "ERROR"' not in server.log_text()


def test_predict_refuses_deep_json_sent_as_another_content_type(servers):
    server = servers["open"]
    response = requests.post(
        server.http_url + "/predict/diabetes",
        data=b'{"features": ' + b"[" * 50_000,
        headers={"Content-Type": "text/plain"},
        timeout=20,
    )
    assert response.status_code == 400, response.text


# --- under attack ---------------------------------------------------------------------------------

ATTACKERS = 20
CHUNKED_64_MIB = b"0" * (64 * 1024 * 1024)


def _hostile(server: Server, kind: str) -> support.Attacker:
    """One hostile request of `kind`; its status."""
    authed = {"Authorization": f"Bearer {TOKEN}"}
    bomb = {"Content-Type": "application/json", "Content-Encoding": "gzip", "Content-Length": str(len(BOMB))}
    requests_of_kind = {
        "unauthenticated-bomb": lambda: (_head(server, "/v2/models/diabetes/infer", bomb), [BOMB]),
        "authenticated-bomb": lambda: (_head(server, "/v2/models/diabetes/infer", {**authed, **bomb}), [BOMB]),
        "chunked": lambda: (
            _head(server, "/v2/models/diabetes/infer", {**authed, "Transfer-Encoding": "CHUNKED"}),
            _chunked(CHUNKED_64_MIB),
        ),
    }

    def attack(stop) -> int:
        request, pieces = requests_of_kind[kind]()
        return support.exchange(server.http_port, request, timeout_s=5, pieces=pieces).status

    return attack


@pytest.mark.parametrize("kind,status", [("unauthenticated-bomb", 401), ("authenticated-bomb", 413), ("chunked", 413)])
def test_twenty_concurrent_hostile_bodies_cost_neither_memory_nor_latency(servers, kind, status):
    server = servers["authed"]
    # Each attacker sends again 0.3 s after its refusal: twenty always in flight or about to be. An
    # authenticated client sending limit-sized bodies back to back is load, which rate limits meter.
    attack = support.Attack({kind: (ATTACKERS, _hostile(server, kind))}, pause_s=0.3)
    quiet, attacked, grown = support.under_attack(server, attack, headers={"Authorization": f"Bearer {TOKEN}"})
    assert grown <= support.MAX_RSS_GROWTH, f"RSS grew by {grown / 2**20:.0f} MiB under attack"
    # A floor of 5 ms: on a shared machine a quiet p99 of a few ms moves by that much on its own.
    assert attacked <= 2 * max(quiet, 0.005), f"p99 {attacked * 1000:.1f} ms under attack, {quiet * 1000:.1f} ms quiet"
    answered = attack.answered[kind]
    assert answered.get(status, 0) >= ATTACKERS and set(answered) <= {status, 0}, answered
