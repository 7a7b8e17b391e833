"""runtime.edge.binary: V2's binary tensor extension read and written at the edge (the servers'
behaviour, fast path on and off, is tests/integration/test_fast_path.py's)."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest

from runtime.core.errors import InvalidRequest
from runtime.edge.binary import OutputChoice, _mentions_binary, decode, encode_answer, json_body


def _body(document: dict, *chunks: bytes) -> tuple[bytes, bytes]:
    header = json.dumps(document).encode()
    return header + b"".join(chunks), str(len(header)).encode()


def _strings(*values: str) -> bytes:
    return b"".join(len(v.encode()).to_bytes(4, "little") + v.encode() for v in values)


X = np.arange(6, dtype="<f4").reshape(3, 2)


def test_binary_inputs_mixed_with_json_become_the_request_a_json_client_sends():
    document = {
        "inputs": [
            {"name": "x", "shape": [3, 2], "datatype": "FP32", "parameters": {"binary_data_size": 24}},
            {"name": "city", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 23}},
            {"name": "z", "shape": [1], "datatype": "FP64", "data": [1.5]},
        ],
        "outputs": [{"name": "predict", "parameters": {"binary_data": False}}],
        "parameters": {"binary_data_output": True, "ood_flags": True},
    }
    decoded = decode(*_body(document, X.tobytes(), _strings("paris", "rötterdam")))
    assert decoded is not None
    np.testing.assert_array_equal(decoded.values[0], X.ravel())
    assert decoded.values[1] == ["paris", "rötterdam"]
    assert decoded.outputs == OutputChoice(True, {"predict": False})
    assert decoded.document["parameters"] == {"ood_flags": True}
    assert decoded.document["outputs"] == [{"name": "predict"}]
    plain = json.loads(json_body(decoded))
    assert [i.get("data") for i in plain["inputs"]] == [[], [], [1.5]]
    assert all("parameters" not in i for i in plain["inputs"])


def test_a_json_body_is_left_alone_unless_it_asks_for_binary_outputs():
    assert decode(b'{"inputs": []}', None) is None
    decoded = decode(b'{"inputs": [], "outputs": [{"name": "p", "parameters": {"binary_data": true}}]}', None)
    assert decoded is not None and decoded.outputs.binary("p") and not decoded.outputs.binary("q")


@pytest.mark.parametrize(
    ("size", "chunk", "length", "words"),
    [
        (16, X.tobytes(), None, "input 'x': shape [3, 2] of FP32 needs 24 bytes but binary_data_size is 16"),
        (24, X.tobytes()[:-1], None, "input 'x': binary_data_size 24 at offset 0 runs past the end"),
        (24, X.tobytes() + b"\0", None, "1 bytes after the JSON header (of 25) are claimed by no input"),
        (24, X.tobytes(), b"9999", "Inference-Header-Content-Length 9999 is past the end"),
        (24, X.tobytes(), b"-3", "is not a number of bytes"),
        ("24", X.tobytes(), None, "input 'x': binary_data_size '24' is not a number of bytes"),
    ],
)
def test_a_broken_binary_body_is_refused_naming_the_input(size, chunk, length, words):
    document = {
        "inputs": [{"name": "x", "shape": [3, 2], "datatype": "FP32", "parameters": {"binary_data_size": size}}]
    }
    body, true_length = _body(document, chunk)
    with pytest.raises(InvalidRequest, match=re.escape(words)) as err:
        decode(body, length or true_length)
    assert err.value.status == 400


def test_bytes_elements_are_checked():
    document: dict[str, Any] = {
        "inputs": [{"name": "c", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}}]
    }
    with pytest.raises(InvalidRequest, match=re.escape("input 'c': row 1: the bytes b'\\xff' are not UTF-8 text")):
        decode(*_body(document, _strings("ab") + b"\x01\0\0\0\xff"))
    document["inputs"][0]["parameters"]["binary_data_size"] = 6
    with pytest.raises(InvalidRequest, match="input 'c': its shape holds 2 values but its BYTES data has 1"):
        decode(*_body(document, _strings("ab")))


def test_answers_carry_the_chosen_outputs_in_binary():
    answer = {
        "model_name": "m",
        "outputs": [
            {"name": "predict", "shape": [2], "datatype": "INT64", "data": [1, 0]},
            {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [0.25, 0.75, 1.0, 0.0]},
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["a", "bé"]},
        ],
    }
    encoded = encode_answer(json.dumps(answer).encode(), OutputChoice(True, {"predict_proba": False}))
    assert encoded is not None
    body, length = encoded
    header = json.loads(body[:length])
    assert [o.get("parameters") for o in header["outputs"]] == [
        {"binary_data_size": 16},
        None,
        {"binary_data_size": 12},
    ]
    assert header["outputs"][1]["data"] == [0.25, 0.75, 1.0, 0.0]
    assert body[length:] == np.array([1, 0], "<i8").tobytes() + _strings("a", "bé")
    assert encode_answer(json.dumps(answer).encode(), OutputChoice(False, {})) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"binary_data",
        b"inary_data",
        b"binary_dat",
        b"yyyyybinary_data",
        b"y" * 100 + b"binary_data",  # past the hops: the whole body is searched
        b"y" * 100,
        b'{"inputs": [{"datatype": "FP64"}], "parameters": {"binary_data_output": true}}',
        b'{"inputs": [{"datatype": "FP64", "data": [1]}]}',
    ],
)
def test_the_hops_over_y_find_binary_data_as_a_substring_search_does(body):
    assert _mentions_binary(body) == (b"binary_data" in body)
