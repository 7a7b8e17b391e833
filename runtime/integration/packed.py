"""FP32 and FP64 gRPC tensor contents to and from numpy through their wire bytes.

protobuf's Python objects copy a repeated double one element at a time, the largest single costs of
a 100-row gRPC request (docs/performance.md, "The fast path"). A proto3 repeated float or double is
packed on the wire: one tag, a varint length, then the values as little-endian IEEE 754, exactly
numpy's '<f4' / '<f8' bytes. So a contents message holding only such a field is read by serialising
it (a copy in upb's C) and viewing the bytes, and written by parsing bytes made by numpy. The
messages are equal to the ones protobuf builds element by element (tests/unit/test_packed checks it
both ways, NaN and -0.0 included). Anything else (integer varints, more than one field set) and
short tensors, which protobuf copies faster than the serialisation round trip (below READ_FROM
values read, WRITE_FROM written), return None: the caller copies element by element as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from mlserver.grpc import dataplane_pb2 as pb

# InferTensorContents field numbers (dataplane.proto) and their values' wire layout.
_FIELDS: dict[str, tuple[int, np.dtype[Any]]] = {
    "fp32_contents": (6, np.dtype("<f4")),
    "fp64_contents": (7, np.dtype("<f8")),
}
_LENGTH_DELIMITED = 2
READ_FROM, WRITE_FROM = 32, 8  # values; measured crossovers with protobuf's own copy


def read(contents: pb.InferTensorContents, fields: list[tuple[Any, Any]]) -> np.ndarray | None:
    """The values of contents holding one FP32/FP64 field only (`fields`: its ListFields()), as a
    read-only array, else None."""
    if len(fields) != 1 or fields[0][0].name not in _FIELDS or len(fields[0][1]) < READ_FROM:
        return None
    number, dtype = _FIELDS[fields[0][0].name]
    wire = contents.SerializeToString()
    if wire[0] != (number << 3 | _LENGTH_DELIMITED):
        return None
    size, at = _varint(wire, 1)
    if at + size != len(wire) or size != len(fields[0][1]) * dtype.itemsize:
        return None
    return np.frombuffer(wire, dtype=dtype, offset=at)


def written(datatype: str, data: Sequence[float]) -> pb.InferTensorContents | None:
    """Contents equal to InferTensorContents(fp64_contents=data), None for other datatypes (the
    outputs of this runtime are FP64, INT64 or BYTES: no float32 rounding to match)."""
    if datatype != "FP64" or len(data) < WRITE_FROM:
        return None
    number, dtype = _FIELDS["fp64_contents"]
    payload = np.asarray(data, dtype=dtype).tobytes()
    return pb.InferTensorContents.FromString(
        bytes([number << 3 | _LENGTH_DELIMITED]) + _varint_bytes(len(payload)) + payload
    )


def _varint(wire: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = wire[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
