"""Fuzzing the inputs beside V2: POST /predict bodies of any shape, and oversized bodies (declared
or chunked) on every route. Whatever arrives, the answer is never a 5xx and never a traceback, and
the server keeps serving."""

from __future__ import annotations

import json

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.v2 import good_rest_request_works

EXAMPLES = 300
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
LIMIT = 8 * 1024 * 1024  # the server's default PIPELINE_MAX_REQUEST_BYTES

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=8)
)
rows = st.lists(st.one_of(scalars, st.lists(scalars, max_size=12)), max_size=12)
bodies = st.one_of(
    st.fixed_dictionaries({"features": st.one_of(rows, st.lists(rows, max_size=5), scalars)}),
    st.dictionaries(st.text(max_size=10), st.one_of(rows, scalars), max_size=3),
    rows,
    scalars,
)
paths = st.sampled_from(["/predict", "/predict/diabetes", "/predict/breast-cancer", "/predict/nope", "/predict/"])


def _check(response: requests.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text


def test_predict_bodies_never_get_a_server_error(server):
    session = requests.Session()

    @SETTINGS
    @given(path=paths, body=bodies)
    def prop(path, body):
        _check(
            session.post(
                f"{server.http_url}{path}",
                data=json.dumps(body),
                timeout=20,
                headers={"Content-Type": "application/json"},
            )
        )

    prop()
    good_rest_request_works(server.http_url)


def test_oversized_bodies_get_413_on_every_route(server):
    for path in ("/v2/models/diabetes/infer", "/predict/diabetes", "/v2/models/diabetes/generate"):
        declared = requests.post(f"{server.http_url}{path}", data=b"0" * (LIMIT + 1), timeout=30)
        chunked = requests.post(f"{server.http_url}{path}", data=iter([b"0" * (LIMIT // 4)] * 5), timeout=30)
        assert (declared.status_code, chunked.status_code) == (413, 413), path
    good_rest_request_works(server.http_url)
