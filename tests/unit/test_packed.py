"""runtime.integration.packed reads and writes FP32/FP64 contents as protobuf does element by
element: equal values (bit for bit, NaN and -0.0 included) and equal messages, and gives way
(None) to the element-by-element copy for everything it does not handle."""

from __future__ import annotations

import numpy as np
import pytest
from mlserver.grpc import dataplane_pb2 as pb

from runtime.integration import grpc_service
from runtime.integration.packed import READ_FROM, WRITE_FROM, read, written

EDGES = [0.0, -0.0, 1.5, -2.25e-308, 1e308, float("inf"), float("-inf"), float("nan"), 5e-324]


def _values(n: int, seed: int) -> list[float]:
    """n values, the edge cases first."""
    return [*EDGES, *np.random.default_rng(seed).normal(scale=1e3, size=n).tolist()][:n]


def _read(contents: pb.InferTensorContents):
    return read(contents, contents.ListFields())


# Lengths around the length varint's byte boundaries (2,047/2,048 doubles: 16,376/16,384 bytes).
@pytest.mark.parametrize("n", [READ_FROM, 1000, 2047, 2048, 20000])
def test_fp64_read_is_protobufs_values_bit_for_bit(n):
    values = _values(n, n)
    contents = pb.InferTensorContents(fp64_contents=values)
    got = _read(contents)
    assert got is not None and got.dtype == np.float64
    expected = np.fromiter(contents.fp64_contents, dtype=np.float64)
    assert got.tobytes() == expected.tobytes()


def test_fp32_read_is_protobufs_values_bit_for_bit():
    contents = pb.InferTensorContents(fp32_contents=_values(300, 1))
    got = _read(contents)
    assert got is not None and got.dtype == np.float32
    assert got.tobytes() == np.fromiter(contents.fp32_contents, dtype=np.float32).tobytes()


@pytest.mark.parametrize(
    "contents",
    [
        pb.InferTensorContents(),  # nothing set
        pb.InferTensorContents(int64_contents=[1, 2, 3]),  # varints: not fixed width
        pb.InferTensorContents(int_contents=[1]),
        pb.InferTensorContents(bool_contents=[True]),
        pb.InferTensorContents(bytes_contents=[b"a"]),
        pb.InferTensorContents(fp64_contents=[1.0] * 40, fp32_contents=[2.0] * 40),  # two fields: the caller decides
        pb.InferTensorContents(fp64_contents=[1.0] * (READ_FROM - 1)),  # short: protobuf's copy is faster
    ],
    ids=["empty", "int64", "int32", "bool", "bytes", "two-fields", "short"],
)
def test_read_gives_way_to_the_element_copy(contents):
    assert _read(contents) is None


@pytest.mark.parametrize("n", [WRITE_FROM, 15, 16, 100, 2048, 20000])  # 16 doubles: a 2-byte length
def test_fp64_written_equals_the_converters_message(n):
    values = _values(n, n)
    ours = written("FP64", values)
    theirs = pb.InferTensorContents(fp64_contents=values)
    assert ours is not None
    assert ours.SerializeToString() == theirs.SerializeToString()
    assert np.array(ours.fp64_contents).tobytes() == np.array(theirs.fp64_contents).tobytes()


@pytest.mark.parametrize("datatype", ["INT64", "BYTES", "FP32", "BOOL"])
def test_written_gives_way_for_other_datatypes(datatype):
    assert written(datatype, [1] * 100) is None


def test_written_gives_way_for_short_outputs():
    assert written("FP64", [1.0] * (WRITE_FROM - 1)) is None


def test_tensor_values_uses_it_and_still_copies_the_rest():
    for n in (4, 400):  # protobuf's copy, then the packed read
        fp64 = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP64", shape=[n // 4, 4])
        fp64.contents.fp64_contents.extend(range(n))
        values = grpc_service.tensor_values(fp64, None)
        assert isinstance(values, np.ndarray) and values.tolist() == list(map(float, range(n)))
    ints = pb.ModelInferRequest.InferInputTensor(name="x", datatype="INT64", shape=[2])
    ints.contents.int64_contents.extend([7, -8])
    got = grpc_service.tensor_values(ints, None)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64 and got.tolist() == [7, -8]
