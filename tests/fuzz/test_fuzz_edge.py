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

from harness import raw_http
from harness.v2 import good_rest_request_works

EXAMPLES = 300
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))  # fmt: skip
DEPTH = 64  # the server's default PIPELINE_MAX_JSON_DEPTH
JSON_ENTRIES = ["/v2/models/diabetes/infer", "/v2/models/diabetes/versions/1/infer", "/v2/models/diabetes/generate",
                "/predict", "/predict/diabetes", "/v2/repository/index"]  # fmt: skip
# Not /v2/repository/models/{name}/load: on this open loopback server a well-formed body reloads the
# model under the other fuzz tests (tests/security sends it deep JSON on a server of its own).
ROW = {"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": [0.01] * 10}]}


def _spelled(word: str) -> st.SearchStrategy[str]:
    """`word` in random case, with optional blanks around it."""
    cased = st.tuples(*[st.sampled_from([c.lower(), c.upper()]) for c in word]).map("".join)
    return st.tuples(st.sampled_from(["", " ", "\t"]), cased, st.sampled_from(["", " "])).map("".join)


tokens = st.one_of(_spelled("chunked"), _spelled("gzip"), _spelled("identity"), _spelled("deflate"),
                   st.text(alphabet="abcxyz-_", min_size=1, max_size=8))  # fmt: skip
token_lists = st.lists(tokens, min_size=1, max_size=3).map(",".join)
payload = json.dumps(ROW).encode()
bodies = st.sampled_from([
    ("plain", payload),
    ("gzip", gzip.compress(payload)),
    ("deflate", zlib.compress(payload)),
    ("corrupt", b"\x1f\x8b\x08\x00garbage"),
    ("truncated", gzip.compress(payload)[:-9]),
    ("bomb", gzip.compress(b"0" * (32 * 1024 * 1024))),
])  # fmt: skip


def _assert_served_well(answer: raw_http.Answer, server, log_from: int) -> None:
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
            pieces = list(raw_http.chunked(data)) if "chunked" in transfer.lower() else [data]
        else:
            headers["Content-Length"] = str(len(data))
            pieces = [data]
        request = raw_http.head(server.http_hostport, "/v2/models/diabetes/infer", headers)
        _assert_served_well(raw_http.exchange(server.http_hostport, request, pieces), server, log_from)

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
    st.sampled_from(['1', '"x"', '"[[[{{{"', '"\\"[["', "[]", "{}"]),
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
        request = raw_http.head(server.http_hostport, path, {"Content-Type": "application/json",
                                                            "Content-Length": str(len(body))})  # fmt: skip
        answer = raw_http.exchange(server.http_hostport, request, [body])
        _assert_served_well(answer, server, log_from)
        if depth > DEPTH:
            assert answer.status == 400 and "nests deeper" in answer.body.get("error", ""), (depth, answer)

    prop()
    good_rest_request_works(server.http_url)
