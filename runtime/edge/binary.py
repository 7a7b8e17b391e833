"""The V2 binary tensor data extension over REST (Triton's and KServe's; tritonclient.http's default),
read and written at the edge, in one place for the REST fast path and MLServer's path.

A request: `Inference-Header-Content-Length: n` says the body's first n bytes are the JSON request;
an input whose parameters hold `binary_data_size: k` has its values in the next k bytes after it
(inputs in order, no padding), little-endian and row major, each BYTES element a 4-byte little-endian
length and then its UTF-8 bytes. Other inputs keep their JSON `data`: a request may mix the two.
An output asks for its values in binary with `parameters.binary_data: true`; the request parameter
`binary_data_output: true` asks so for every output that does not say otherwise.

`BinaryTensors` (ASGI, behind the request guard, which has bounded the body and the JSON header's
depth) turns such a request into the one a JSON client would send: the extension's parameters taken
out, each binary input's values decoded (a numpy array; a list of str for BYTES). The REST fast
path takes that request from the scope (`DECODED`) without parsing anything again; MLServer's path
gets it as JSON with `data: []` in each binary input, and its REST endpoint puts the decoded values
in (`pending_inputs`, read by runtime.integration.rest), as the gRPC path hands over raw contents:
numpy arrays, NaN included, which JSON could not carry. Both paths so see the same tensors and the
input contract gives the same answer. A body that breaks the extension (a size that does not match
shape x datatype, an input past the end of the body, a header length past the body, bytes no input
claims, BYTES that are not UTF-8) is refused here, 400 naming the input.

The answer, whichever path made it, is rewritten here when an output is wanted in binary: the JSON
header with `binary_data_size` in each such output instead of its `data`, then the values, with
`Inference-Header-Content-Length` and `Content-Type: application/octet-stream`. Such a request's
answer is not compressed (its Accept-Encoding is not passed on): the header length counts the
bytes as sent.
Plain ASGI and numpy: it knows nothing of MLServer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np
import orjson

from runtime.core.datatypes import NUMERIC_DATATYPES, NUMERIC_HINT
from runtime.core.errors import (
    DatatypeError,
    InvalidRequest,
    MalformedBody,
    MalformedDataError,
    ParameterError,
    ShapeError,
)
from runtime.edge.asgi import (
    App,
    Message,
    RawHeaders,
    Receive,
    Scope,
    Send,
    json_response,
    read_body,
    replay,
    route_path,
)

HEADER_LENGTH = b"inference-header-content-length"
DECODED = "pipeline.binary"  # the scope key of a decoded request (a Decoded)
SIZE = "binary_data_size"
OUTPUT = "binary_data"
EVERY_OUTPUT = "binary_data_output"
# The routes the extension applies to: V2 inference (MLServer's two /infer routes).
INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
_PREFIX = 4  # a BYTES element's length: uint32, little-endian
_WORD = OUTPUT.encode()  # in both parameters' names
_Y_AT, _Y_HOPS = _WORD.index(b"y"), 64
_SHOWN_BYTES = 32
_OCTETS = b"application/octet-stream"
_DROPPED = frozenset({b"content-length", b"content-type", HEADER_LENGTH})

# Requests on this task whose binary inputs MLServer's endpoint is to put in: index -> values.
_PENDING: ContextVar[Mapping[int, Any] | None] = ContextVar("pipeline_binary_inputs", default=None)


@dataclass(frozen=True)
class OutputChoice:
    """Which outputs are sent back in binary."""

    every: bool = False  # binary_data_output
    named: dict[str, bool] = field(default_factory=dict)  # each output's binary_data

    def binary(self, name: object) -> bool:
        return self.named.get(name, self.every) if isinstance(name, str) else self.every

    @property
    def wanted(self) -> bool:
        return self.every or any(self.named.values())


@dataclass(frozen=True)
class Decoded:
    document: dict[str, Any]  # the request as a JSON client sends it, binary inputs' data decoded
    values: dict[int, Any]  # each binary input's values, by its index in `inputs`
    outputs: OutputChoice


def pending_inputs() -> Mapping[int, Any]:
    """The binary inputs of the request this task serves, for MLServer's endpoint to put in."""
    return _PENDING.get() or {}


def json_header(headers: RawHeaders, body: bytes) -> bytes | None:
    """The JSON part of a binary body, for the guard's depth check (none when its header length is
    not one the decoder accepts: it refuses that body); None without the header."""
    value = _header(headers, HEADER_LENGTH)
    if value is None:
        return None
    return body[: int(value)] if value.isdigit() and int(value) <= len(body) else b""


# ------------------------------------------------------------------------------ requests


def decode(body: bytes, header_length: bytes | None) -> Decoded | None:
    """The request, if it uses the extension (a header length, or a binary_data parameter);
    None for a plain JSON body, which goes on untouched. InvalidRequest for a broken one."""
    if header_length is None:
        if not _mentions_binary(body):  # no JSON body pays for a parse
            return None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None  # MLServer's own answer to a body that is not JSON
        binary = None
    else:
        length = _length(header_length, len(body))
        try:
            document = orjson.loads(memoryview(body)[:length])
        except orjson.JSONDecodeError as error:
            raise MalformedBody(
                f"the body's first {length} bytes (Inference-Header-Content-Length) are not a JSON request: {error}"
            ) from None
        binary = memoryview(body)[length:]
    if not isinstance(document, dict):
        if binary is None:
            return None
        raise MalformedBody("the JSON header (Inference-Header-Content-Length) is not a JSON object")
    outputs, stripped = _output_choice(document)
    values = _binary_inputs(document, binary)
    if binary is None and not stripped and not values:
        return None
    return Decoded(document, values, outputs)


def _mentions_binary(body: bytes) -> bool:
    """Whether `binary_data` is in the body. Its 'y' is rare in a V2 body (each input's "datatype"
    has one), so hopping from 'y' to 'y' with memchr settles most bodies several times faster than a
    substring search reads a large one; a body with many is searched whole."""
    at = body.find(b"y", _Y_AT)
    for _ in range(_Y_HOPS):
        if at < 0:
            return False
        if body.startswith(_WORD, at - _Y_AT):
            return True
        at = body.find(b"y", at + 1)
    return _WORD in body


def json_body(decoded: Decoded) -> bytes:
    """The request as JSON for MLServer's path: each binary input with `data: []`."""
    document = decoded.document
    if decoded.values:
        inputs = list(document["inputs"])
        for index in decoded.values:
            inputs[index] = {**inputs[index], "data": []}
        document = {**document, "inputs": inputs}
    return orjson.dumps(document)


def _length(value: bytes, body_size: int) -> int:
    if not value.isdigit():
        raise MalformedBody(f"Inference-Header-Content-Length {value.decode('latin-1')!r} is not a number of bytes")
    length = int(value)
    if length > body_size:
        raise MalformedBody(f"Inference-Header-Content-Length {length} is past the end of the {body_size}-byte body")
    return length


def _flag(owner: str, name: str, value: object) -> bool:
    if type(value) is not bool:
        raise ParameterError(f"{owner} parameter {name} must be true or false, not {value!r:.60}")
    return value


def _output_choice(document: dict[str, Any]) -> tuple[OutputChoice, bool]:
    """What the request asks for in binary, its parameters taken out; and whether there were any."""
    stripped = False
    every = False
    parameters = document.get("parameters")
    if isinstance(parameters, dict) and EVERY_OUTPUT in parameters:
        every = _flag("request", EVERY_OUTPUT, _take(document, EVERY_OUTPUT))
        stripped = True
    named: dict[str, bool] = {}
    outputs = document.get("outputs")
    for output in outputs if isinstance(outputs, list) else ():
        if isinstance(output, dict) and isinstance(output.get("parameters"), dict) and OUTPUT in output["parameters"]:
            name = output.get("name")
            value = _flag(f"output '{name}'", OUTPUT, _take(output, OUTPUT))
            if isinstance(name, str):
                named[name] = value
            stripped = True
    return OutputChoice(every, named), stripped


def _take(owner: dict[str, Any], name: str) -> object:
    """A parameter taken out of its owner's parameters, which go when they are left empty."""
    parameters = owner["parameters"]
    value = parameters.pop(name)
    if not parameters:
        del owner["parameters"]
    return value


def _binary_inputs(document: dict[str, Any], binary: memoryview | None) -> dict[int, Any]:
    """Each binary input's values, put in as its data; every byte after the header claimed."""
    inputs = document.get("inputs")
    values: dict[int, Any] = {}
    offset = 0
    for index, item in enumerate(inputs if isinstance(inputs, list) else ()):
        if not (isinstance(item, dict) and isinstance(item.get("parameters"), dict) and SIZE in item["parameters"]):
            continue  # a JSON input
        name = item.get("name")
        size = _take(item, SIZE)
        if binary is None:
            raise MalformedDataError(
                f"input '{name}': {SIZE} {size!r:.60}, but the request has no Inference-Header-Content-Length "
                "header saying where its JSON ends"
            )
        if type(size) is not int or size < 0:
            raise ParameterError(f"input '{name}': {SIZE} {size!r:.60} is not a number of bytes")
        if "data" in item:
            raise MalformedDataError(f"input '{name}': both data and {SIZE}; send one")
        shape = _shape(name, item.get("shape"))
        datatype = item.get("datatype")
        dtype = _dtype(name, datatype, shape, size)
        if offset + size > len(binary):
            raise MalformedDataError(
                f"input '{name}': {SIZE} {size} at offset {offset} runs past the end of the body "
                f"({len(binary)} bytes after the JSON header)"
            )
        chunk = binary[offset : offset + size]
        item["data"] = values[index] = (
            _numbers(chunk, dtype) if dtype is not None else _strings(name, chunk, prod(shape))
        )
        offset += size
    if binary is not None and offset != len(binary):
        raise MalformedBody(
            f"{len(binary) - offset} bytes after the JSON header (of {len(binary)}) are claimed by no input's {SIZE}"
        )
    return values


def _shape(name: object, shape: object) -> list[int]:
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise ShapeError(f"input '{name}': shape {shape!r:.60} is not a list of whole numbers")
    if any(d < 0 for d in shape):
        raise ShapeError(f"input '{name}': shape {shape} has a negative dimension")
    return shape


def _dtype(name: object, datatype: object, shape: list[int], size: int) -> np.dtype | None:
    """A fixed-size datatype's little-endian dtype, its size checked; None for BYTES."""
    if datatype == "BYTES":
        return None
    dtype = NUMERIC_DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise DatatypeError(f"input '{name}': datatype {datatype} is not supported; {NUMERIC_HINT}")
    expected = prod(shape) * dtype.itemsize
    if size != expected:
        raise ShapeError(f"input '{name}': shape {shape} of {datatype} needs {expected} bytes but {SIZE} is {size}")
    return dtype.newbyteorder("<")


def _numbers(chunk: memoryview, dtype: np.dtype) -> np.ndarray:
    """The values as numpy reads them in place; copied when the JSON header's length leaves them
    unaligned (numpy would copy them piece by piece in every operation after)."""
    values = np.frombuffer(chunk, dtype=dtype)
    return values if values.flags.aligned else values.copy()


def _strings(name: object, chunk: memoryview, count: int) -> list[str]:
    """A BYTES tensor's elements (each a 4-byte little-endian length, then its bytes) as str."""
    raw = bytes(chunk)
    elements: list[str] = []
    at = 0
    while at < len(raw):
        if at + _PREFIX > len(raw):
            raise MalformedDataError(f"input '{name}': its BYTES data ends inside element {len(elements)}'s length")
        end = at + _PREFIX + int.from_bytes(raw[at : at + _PREFIX], "little")
        if end > len(raw):
            raise MalformedDataError(f"input '{name}': BYTES element {len(elements)} runs past its {SIZE}")
        try:
            elements.append(raw[at + _PREFIX : end].decode("utf-8"))
        except UnicodeDecodeError:
            shown = raw[at + _PREFIX : end][:_SHOWN_BYTES]
            raise MalformedDataError(
                f"input '{name}': row {len(elements)}: the bytes {shown!r} are not UTF-8 text"
            ) from None
        at = end
    if len(elements) != count:
        raise ShapeError(f"input '{name}': its shape holds {count} values but its BYTES data has {len(elements)}")
    return elements


# ------------------------------------------------------------------------------ answers


def encode_answer(body: bytes, choice: OutputChoice) -> tuple[bytes, int] | None:
    """A JSON answer with the chosen outputs' values in binary, and its header's length; None when
    no output is (or can be) sent so: the answer stays as it is."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    outputs = document.get("outputs") if isinstance(document, dict) else None
    chunks = []
    for output in outputs if isinstance(outputs, list) else ():
        if not isinstance(output, dict) or not choice.binary(output.get("name")):
            continue
        raw = _raw(output.get("datatype"), output.get("data"))
        if raw is None:
            continue
        del output["data"]
        parameters = output.get("parameters")
        output["parameters"] = {**(parameters if isinstance(parameters, dict) else {}), SIZE: len(raw)}
        chunks.append(raw)
    if not chunks:
        return None
    header = orjson.dumps(document)
    return header + b"".join(chunks), len(header)


def _raw(datatype: object, data: object) -> bytes | None:
    """An output's values as the extension sends them; None for values not of their datatype."""
    if not isinstance(data, list):
        return None
    if datatype == "BYTES":
        return _length_prefixed(data)
    dtype = NUMERIC_DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        return None
    try:
        values = np.asarray(data)
    except (ValueError, TypeError):
        return None
    allowed = "fiu" if dtype.kind == "f" else "iu"
    if values.dtype.kind not in allowed and values.size:
        return None
    return values.astype(dtype.newbyteorder("<")).tobytes()


def _length_prefixed(data: list[Any]) -> bytes | None:
    parts = []
    for value in _flat(data):
        if not isinstance(value, str):
            return None
        encoded = value.encode("utf-8")
        parts += [len(encoded).to_bytes(_PREFIX, "little"), encoded]
    return b"".join(parts)


def _flat(data: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    return [w for v in data for w in (_flat(v) if isinstance(v, list) else [v])]


# ------------------------------------------------------------------------------ the middleware


class BinaryTensors:
    """V2 inference requests in the binary form decoded for the app behind; their answers encoded."""

    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not INFER.match(route_path(scope)):
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        header_length = _header(scope["headers"], HEADER_LENGTH)
        try:
            decoded = decode(body, header_length)
        except InvalidRequest as refused:
            return await json_response(send, refused.status, {"error": str(refused)})
        if decoded is None:
            if not _readable(scope["headers"], body):
                return await json_response(send, 400, {"error": _NEITHER})
            return await self.app(scope, replay(body, receive), send)
        plain = json_body(decoded)
        headers = _plain_headers(scope["headers"], len(plain), header_length is not None, decoded.outputs.wanted)
        token = _PENDING.set(decoded.values)
        try:
            await self.app(
                {**scope, DECODED: decoded, "headers": headers},
                replay(plain, receive),
                _binary_answer(send, decoded.outputs) if decoded.outputs.wanted else send,
            )
        finally:
            _PENDING.reset(token)


_NEITHER = (
    "the body is neither JSON nor V2 binary tensors: send JSON, or the tensors' bytes after a JSON "
    "header whose length Inference-Header-Content-Length gives"
)


def _readable(headers: RawHeaders, body: bytes) -> bool:
    """False for a body FastAPI would validate as bytes (a content type it does not parse as JSON)
    that is not UTF-8: its 422 cannot render such bytes (a 500), so it is refused here: a binary
    body sent without its header length, say."""
    content_type = _header(headers, b"content-type")
    media = (content_type or b"application/json").split(b";")[0].strip().lower()
    if media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json")):
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _header(headers: RawHeaders, name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value.strip()
    return None


def _plain_headers(headers: RawHeaders, length: int, was_binary: bool, binary_answer: bool) -> RawHeaders:
    """The headers of the JSON request handed on: its length; a JSON content type in place of the
    binary body's; no Accept-Encoding when the answer is rewritten here."""
    dropped = _DROPPED if was_binary else frozenset({b"content-length"})
    kept = [
        (k, v)
        for k, v in headers
        if k.lower() not in dropped and not (binary_answer and k.lower() == b"accept-encoding")
    ]
    kept.append((b"content-length", str(length).encode()))
    if was_binary:
        kept.append((b"content-type", b"application/json"))
    return kept


def _binary_answer(send: Send, choice: OutputChoice) -> Send:
    """`send` for an answer whose chosen outputs go in binary: a JSON 200 is held until whole, then
    rewritten; anything else passes as it is."""
    held: Message | None = None
    chunks: list[bytes] = []

    async def sending(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and _rewritable(message):
            held = message
            return None
        if held is None or message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return None
        body = b"".join(chunks)
        headers = held["headers"]
        encoded = encode_answer(body, choice)
        if encoded is not None:
            body, length = encoded
            headers = [(k, v) for k, v in headers if k.lower() not in _DROPPED]
            headers += [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", _OCTETS),
                (HEADER_LENGTH, str(length).encode()),
            ]
        await send({**held, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return sending


def _rewritable(start: Message) -> bool:
    """A 200 with a JSON body as it is (not compressed)."""
    if start.get("status") != 200:
        return False
    headers = start.get("headers", [])
    content_type = _header(headers, b"content-type") or b""
    return b"json" in content_type and _header(headers, b"content-encoding") is None
