"""The request edge's plain parts: framing read from the head (runtime.edge.framing), a body read under
the limits and inflated as it arrives (runtime.edge.body_reader), JSON nesting (runtime.edge.json_depth), and
the guard deciding from the head before reading a byte (runtime.edge.guard, with a toy app)."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib

import pytest

from runtime.core.errors import (
    MalformedBody,
    MalformedFraming,
    RequestTooLarge,
    Unauthenticated,
    UnsupportedEncoding,
    UnsupportedTransferCoding,
)
from runtime.edge import json_depth
from runtime.edge.body_limits import BodyLimits
from runtime.edge.body_reader import BodyReader
from runtime.edge.framing import framing
from runtime.edge.guard import INFERENCE, OTHER, REPOSITORY, RequestGuard, Route
from runtime.policy.admin import AdminPolicy


def _h(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in pairs]


# --- framing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["chunked", "CHUNKED", "Chunked", " chunked ", "chunked,"])
def test_chunked_in_any_spelling_is_chunked(value):
    assert framing(_h(("Transfer-Encoding", value))) == (None, None)


@pytest.mark.parametrize("value", ["gzip, chunked", "chunked, chunked", "identity", "deflate"])
def test_a_transfer_coding_other_than_chunked_is_refused(value):
    with pytest.raises(UnsupportedTransferCoding):
        framing(_h(("transfer-encoding", value)))


def test_a_length_beside_chunked_is_refused():
    with pytest.raises(MalformedFraming):
        framing(_h(("content-length", "5"), ("transfer-encoding", "chunked")))


@pytest.mark.parametrize("values", [("5", "6"), ("5, 6",), ("-1",), ("5x",), ("0x10",), ("٥",), ("",)])
def test_lengths_that_do_not_say_one_number_are_refused(values):
    with pytest.raises(MalformedFraming):
        framing(_h(*[("content-length", v) for v in values]))


@pytest.mark.parametrize("values", [("5",), ("5", "5"), ("5, 5",), ("005",)])
def test_one_length_however_repeated(values):
    assert framing(_h(*[("Content-Length", v) for v in values])).length == 5


@pytest.mark.parametrize(
    "value,coding",
    [
        ("gzip", "gzip"),
        ("GZIP", "gzip"),
        ("x-gzip", "gzip"),
        ("deflate", "deflate"),
        ("identity", None),
        ("identity, gzip", "gzip"),
    ],
)
def test_content_codings(value, coding):
    assert framing(_h(("Content-Encoding", value))).coding == coding


@pytest.mark.parametrize("values", [("br",), ("zstd",), ("gzip, gzip",), ("gzip", "deflate"), ("compress",)])
def test_content_codings_the_server_does_not_inflate_are_refused(values):
    with pytest.raises(UnsupportedEncoding):
        framing(_h(*[("content-encoding", v) for v in values]))


# --- the body reader ------------------------------------------------------------------------------

LIMITS = BodyLimits(max_bytes=1000, max_inflation_ratio=100)


def _read(limits: BodyLimits, coding, pieces) -> bytes:
    reader = BodyReader(limits, coding)
    for piece in pieces:
        reader.feed(piece)
    return reader.body()


def _pieces(data: bytes, size: int = 7) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_plain_body_up_to_the_limit_and_not_a_byte_more():
    assert _read(LIMITS, None, _pieces(b"x" * 1000)) == b"x" * 1000
    with pytest.raises(RequestTooLarge, match="1000 bytes"):
        _read(LIMITS, None, _pieces(b"x" * 1001))


@pytest.mark.parametrize("coding,compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_body_is_inflated_piece_by_piece(coding, compress):
    data = json.dumps({"inputs": list(range(150))}).encode()[:990]
    assert _read(LIMITS, coding, _pieces(compress(data))) == data


def test_several_gzip_members_are_one_body():
    assert _read(LIMITS, "gzip", [gzip.compress(b"abc") + gzip.compress(b"def")]) == b"abcdef"


def test_a_bomb_is_refused_once_its_inflated_size_passes_the_limit_holding_no_more():
    bomb = gzip.compress(b"0" * (64 * 1024 * 1024))  # ~64 KiB on the wire
    reader = BodyReader(BodyLimits(max_bytes=1_000_000, max_inflation_ratio=10**6), "gzip")
    with pytest.raises(RequestTooLarge, match="inflates to more than 1000000 bytes"):
        for piece in _pieces(bomb, 65536):
            reader.feed(piece)
    assert sum(map(len, reader._chunks)) <= 1_000_000


def test_the_inflation_ratio_is_capped_past_the_floor():
    limits = BodyLimits(max_bytes=8 * 1024 * 1024, max_inflation_ratio=100)
    with pytest.raises(RequestTooLarge, match="inflates more than 100 times"):
        _read(limits, "gzip", _pieces(gzip.compress(b"0" * (4 * 1024 * 1024)), 4096))
    small = gzip.compress(b"0" * (512 * 1024))  # far above 100x, but below the floor
    assert len(_read(limits, "gzip", [small])) == 512 * 1024


@pytest.mark.parametrize("body", [b"not gzip at all", gzip.compress(b"x" * 100)[:-12]])
def test_a_body_that_does_not_inflate_is_a_400(body):
    with pytest.raises(MalformedBody):
        _read(LIMITS, "gzip", [body])


def test_junk_after_a_deflate_stream_is_a_400():
    with pytest.raises(MalformedBody, match="after its compressed stream"):
        _read(LIMITS, "deflate", [zlib.compress(b"abc") + b"junk"])


# --- JSON depth -----------------------------------------------------------------------------------


def _nested(depth: int, opener: str = "[") -> bytes:
    """`depth` containers around 1: arrays, objects, or alternating ("mixed")."""
    parts = [
        ("[" if i % 2 == 0 else '{"k":') if opener == "mixed" else (opener if opener == "[" else '{"k":')
        for i in range(depth)
    ]
    closers = ["]" if p == "[" else "}" for p in parts]
    inner = "1"
    return ("".join(parts) + inner + "".join(reversed(closers))).encode()


@pytest.mark.parametrize("opener", ["[", "{", "mixed"])
@pytest.mark.parametrize("depth", [1, 2, 5, 31, 32, 33, 64, 65, 200, 5000])
def test_depth_is_exact_for_any_nesting(opener, depth):
    body = _nested(depth, opener)
    assert json_depth.within(body, 32) == (depth <= 32)
    if depth < 500:
        json.loads(body)  # the bodies are JSON


def test_brackets_inside_strings_do_not_count():
    assert json_depth.within(json.dumps({"a": "[" * 500, "b": '\\"[[[' * 100}).encode(), 3)


def test_a_wide_request_is_shallow():
    body = json.dumps({"inputs": [{"name": "x", "data": [[1.0] * 10] * 10_000}]}).encode()
    assert json_depth.within(body, 5) and not json_depth.within(body, 4)


def test_many_siblings_that_hide_a_deep_branch_are_found():
    deep = "[" * 70 + "]" * 70
    body = ("[" + ",".join(["[]"] * 5000 + [deep]) + "]").encode()
    assert not json_depth.within(body, 64)
    assert json_depth.within(body, 71)


@pytest.mark.parametrize("data", [b"", b"[", b"[[[", b"a[b[c", b"[" * 100, b"x" * 1000 + b"[]" * 3])
@pytest.mark.parametrize("cap", [0, 1, 2, 5, 1000])
def test_counting_stops_at_the_cap(data, cap):
    assert json_depth.count_up_to(data, b"[", cap) == min(data.count(b"["), cap)


# --- the guard ------------------------------------------------------------------------------------


class Recorder:
    """A toy app: records the body it reads and answers 200."""

    def __init__(self):
        self.bodies: list[bytes] = []
        self.headers: list = []

    async def __call__(self, scope, receive, send):
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(b"".join(chunks))
        self.headers.append(scope["headers"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _router(scope):
    path = scope["path"]
    if path.startswith("/v2/repository"):
        return Route(REPOSITORY)
    if path.startswith("/v2/models/"):
        return Route(INFERENCE, path.split("/")[3])
    if path == "/v2/health/ready":
        return Route(OTHER)
    return None


async def _authorize(name, version, headers):
    if (b"authorization", b"Bearer good") not in headers:
        raise Unauthenticated("invalid bearer token")


def _run(guard, path, headers, pieces):
    """Drive the guard; returns (status, body pieces read from the client)."""
    sent: list = []
    taken = []
    queue = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]

    async def receive():
        taken.append(1)
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": _h(*headers), "client": ("127.0.0.1", 1)}
    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], len(taken)


def _guard(app, max_bytes=1000):
    admin = AdminPolicy("token", "test", None)
    return RequestGuard(app, BodyLimits(max_bytes=max_bytes), admin, _router, _authorize)


def test_refusals_from_the_head_read_no_body():
    app = Recorder()
    guard = _guard(app)
    bomb = [gzip.compress(b"0" * 10_000_000)]
    assert _run(guard, "/v2/models/m/infer", [("content-encoding", "gzip")], bomb) == (401, 0)
    assert _run(guard, "/nowhere", [], bomb) == (404, 0)
    assert _run(guard, "/v2/models/m/infer", [("authorization", "Bearer good"), ("content-encoding", "br")], bomb) == (
        415,
        0,
    )
    assert _run(
        guard, "/v2/models/m/infer", [("authorization", "Bearer good"), ("content-length", "1001")], [b"x"]
    ) == (413, 0)
    assert app.bodies == []


def test_a_compressed_body_reaches_the_app_inflated_with_its_length():
    app = Recorder()
    data = b'{"inputs": []}'
    status, _ = _run(
        _guard(app),
        "/v2/models/m/infer",
        [("authorization", "Bearer good"), ("Content-Encoding", "GZIP")],
        [gzip.compress(data)],
    )
    assert status == 200 and app.bodies == [data]
    names = dict(app.headers[0])
    assert b"content-encoding" not in names and names[b"content-length"] == str(len(data)).encode()


@pytest.mark.parametrize("te", ["chunked", "CHUNKED", "ChUnKeD"])
def test_a_chunked_body_in_any_spelling_counts_against_the_limit(te):
    app = Recorder()
    status, _ = _run(_guard(app), "/v2/health/ready", [("transfer-encoding", te)], [b"x" * 600, b"x" * 600])
    assert status == 413 and app.bodies == []


def test_an_undeclared_body_counts_too():
    # No framing header at all: whatever the server hands over is counted.
    app = Recorder()
    assert _run(_guard(app), "/v2/health/ready", [], [b"x" * 600, b"x" * 600])[0] == 413


def test_a_deep_json_body_is_a_400_and_other_content_types_are_not_scanned():
    app = Recorder()
    guard = _guard(app, max_bytes=100_000)
    deep = [b"[" * 100 + b"]" * 100]
    assert _run(guard, "/v2/health/ready", [("content-type", "application/json")], deep)[0] == 400
    assert _run(guard, "/v2/health/ready", [], deep)[0] == 400
    assert _run(guard, "/v2/health/ready", [("content-type", "application/octet-stream")], deep)[0] == 200
