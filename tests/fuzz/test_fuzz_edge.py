"""Fuzzing the request edge over raw sockets: Transfer-Encoding and Content-Encoding in any spelling,
compressed bodies (valid, corrupt, bombs), and JSON nested any way on every JSON entry. Whatever
arrives, the answer is never a 5xx other than 501 for a transfer coding the server cannot decode,
never a traceback in the log, and the server keeps serving."""

from __future__ import annotations

import gzip
import json
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.v2 import good_rest_request_works
from tests.security import support

EXAMPLES = 300
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
DEPTH = 64  # the server's default PIPELINE_MAX_JSON_DEPTH
JSON_ENTRIES = [
    "/v2/models/diabetes/infer",
    "/v2/models/diabetes/versions/1/infer",
    "/v2/models/diabetes/generate",
    "/predict",
    "/predict/diabetes",
    "/v2/repository/index",
]
# Not /v2/repository/models/{name}/load: on this open loopback server a well-formed body reloads the
# model under the other fuzz tests (tests/security sends it deep JSON on a server of its own).
ROW = {"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": [0.01] * 10}]}


def _spelled(word: str) -> st.SearchStrategy[str]:
    """`word` in random case, with optional blanks around it."""
    cased = st.tuples(*[st.sampled_from([c.lower(), c.upper()]) for c in word]).map("".join)
    return st.tuples(st.sampled_from(["", " ", "\t"]), cased, st.sampled_from(["", " "])).map("".join)


tokens = st.one_of(
    _spelled("chunked"),
    _spelled("gzip"),
    _spelled("identity"),
    _spelled("deflate"),
    st.text(alphabet="abcxyz-_", min_size=1, max_size=8),
)
token_lists = st.lists(tokens, min_size=1, max_size=3).map(",".join)
payload = json.dumps(ROW).encode()
bodies = st.sampled_from(
    [
        ("plain", payload),
        ("gzip", gzip.compress(payload)),
        ("deflate", zlib.compress(payload)),
        ("corrupt", b"\x1f\x8b\x08\x00garbage"),
        ("truncated", gzip.compress(payload)[:-9]),
        ("bomb", gzip.compress(b"0" * (32 * 1024 * 1024))),
    ]
)


def _assert_served_well(answer: support.Response, server, log_from: int) -> None:
    assert answer.status < 500 or answer.status == 501, answer
    # The log since this test began (the gRPC fuzz logs MLServer's own tracebacks for 400s).
    assert "Traceback" not in server.log_text()[log_from:]


def test_codings_in_any_spelling_never_get_a_server_error(server):
    log_from = len(server.log_text())

    @SETTINGS
    @given(transfer=st.one_of(st.none(), token_lists), content=st.one_of(st.none(), token_lists), body=bodies)
    def prop(transfer, content, body):
        _, data = body
        headers = {"Content-Type": "application/json"}
        if content is not None:
            headers["Content-Encoding"] = content
        if transfer is not None:
            headers["Transfer-Encoding"] = transfer
            pieces = list(support.chunked(data)) if "chunked" in transfer.lower() else [data]
        else:
            headers["Content-Length"] = str(len(data))
            pieces = [data]
        request = support.request_head("/v2/models/diabetes/infer", headers)
        _assert_served_well(support.exchange(server.http_port, request, pieces=pieces), server, log_from)

    prop()
    good_rest_request_works(server.http_url)


def _nested(shape: list[str], leaf: str) -> str:
    """Containers opened in the order of `shape` ("[" or "{"), around `leaf`."""
    text = leaf
    for opener in reversed(shape):
        text = f"[{text}]" if opener == "[" else f'{{"k": {text}}}'
    return text


nestings = st.tuples(
    st.lists(st.sampled_from(["[", "{"]), min_size=0, max_size=3 * DEPTH),
    st.sampled_from(["1", '"x"', '"[[[{{{"', '"\\"[["', "[]", "{}"]),
)


def test_json_nested_any_way_on_every_entry_is_refused_past_the_depth_and_never_a_5xx(server):
    log_from = len(server.log_text())

    @SETTINGS
    @given(path=st.sampled_from(JSON_ENTRIES), nesting=nestings, wrap=st.booleans())
    def prop(path, nesting, wrap):
        shape, leaf = nesting
        text = _nested(shape, leaf)
        body = (f'{{"inputs": {text}}}' if wrap else text).encode()
        depth = len(shape) + int(wrap) + int(leaf in ("[]", "{}"))
        request = support.request_head(path, {"Content-Type": "application/json", "Content-Length": str(len(body))})
        answer = support.exchange(server.http_port, request, pieces=[body])
        _assert_served_well(answer, server, log_from)
        if depth > DEPTH:
            assert answer.status == 400 and "nests deeper" in answer.json()["error"], (depth, answer)

    prop()
    good_rest_request_works(server.http_url)


host_values = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
    st.text(alphabet="abcz09.-_~[]:%@ \t!$&'()*+,;=/?#", max_size=30).map(str.encode),
    st.tuples(
        st.sampled_from([b"[::1]", b"[zz]", b"127.0.0.1", b"example.com", b"", b"[::ffff:1.2.3.4]"]),
        st.sampled_from([b"", b":", b":8080", b":65535", b":65536", b":99999999", b":x"]),
    ).map(b"".join),
)


def test_host_headers_of_any_shape_are_400_exactly_when_invalid_on_both_ports(server):
    from runtime.edge.host import valid_host  # plain Python: the same check the server applies

    log_from = len(server.log_text())

    @SETTINGS
    @given(value=host_values, port=st.sampled_from(["rest", "metrics"]))
    def prop(value, port):
        number, path = (server.http_port, "/v2/health/ready") if port == "rest" else (server.metrics_port, "/metrics")
        request = b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), value)
        answer = support.exchange(number, request)
        _assert_served_well(answer, server, log_from)
        if valid_host(value.strip(b" \t")):
            assert answer.status == 200, (value, answer)
        else:
            assert answer.status == 400, (value, answer)

    prop()
    good_rest_request_works(server.http_url)
