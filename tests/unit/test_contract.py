"""The input contract over a table of good and bad requests (plain tensors: no MLServer)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.core.contract import Categories, Contract, ParsedRequest, Tensor
from runtime.core.errors import (
    BatchSizeError,
    DatatypeError,
    FeatureCountError,
    FeatureNameError,
    InputLayoutError,
    InvalidRequest,
    MalformedDataError,
    NonFiniteError,
    OutputError,
    RequestIdError,
    RequestIdTooLong,
    ShapeError,
    ValueRangeError,
)

NAMES = ("a", "b", "c")
CONTRACT = Contract(feature_names=NAMES, offered_outputs=("predict",), max_rows=5)


def tensor(name="X", shape=(2, 3), datatype="FP64", data=None) -> dict:
    if data is None:
        data = [float(i) for i in range(int(np.prod(shape)))]
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": data}


class Request:
    """A request as the adapter hands it to the contract: id, tensors, requested outputs."""

    def __init__(self, *inputs: dict, outputs: list[str] | None = None, request_id: str | None = None):
        self.id = request_id
        self.tensors = [Tensor(**i) for i in inputs]
        self.outputs = outputs or []

    def parse_with(self, contract: Contract) -> ParsedRequest:
        return contract.parse(self.id, self.tensors, self.outputs)


def columns(rows: int = 2, **overrides: dict) -> list[dict]:
    cols = {n: tensor(n, (rows,), data=[float(i + j) for i in range(rows)]) for j, n in enumerate(NAMES)}
    cols.update(overrides)
    return list(cols.values())


GOOD = [
    ("flat 2-D", Request(tensor()), [[0, 1, 2], [3, 4, 5]]),
    ("nested 2-D", Request(tensor(data=[[0, 1, 2], [3, 4, 5]])), [[0, 1, 2], [3, 4, 5]]),
    ("INT8 ints", Request(tensor(datatype="INT8", data=[-128, 1, 127, 0, 0, 0])), [[-128, 1, 127], [0, 0, 0]]),
    ("UINT64 big", Request(tensor(shape=(1, 3), datatype="UINT64", data=[2**64 - 1, 0, 1])), [[2.0**64, 0, 1]]),
    ("FP16", Request(tensor(shape=(1, 3), datatype="FP16", data=[65504.0, -1.5, 0])), [[65504.0, -1.5, 0]]),
    ("INT32 float-integral", Request(tensor(shape=(1, 3), datatype="INT32", data=[1.0, 2.0, 3.0])), [[1, 2, 3]]),
    ("negative zero", Request(tensor(shape=(1, 3), data=[-0.0, 0.0, 1.0])), [[0, 0, 1]]),
    ("column style, any order", Request(*reversed(columns())), [[0, 1, 2], [1, 2, 3]]),
    ("max rows", Request(tensor(shape=(5, 3))), np.arange(15.0).reshape(5, 3)),
]


@pytest.mark.parametrize("label,req,expected", GOOD, ids=[g[0] for g in GOOD])
def test_good_requests_decode_to_float64(label, req, expected):
    parsed = req.parse_with(CONTRACT)
    assert parsed.features.dtype == np.float64
    np.testing.assert_array_equal(parsed.features, np.asarray(expected, dtype=np.float64))
    assert parsed.outputs == ("predict",)


BAD = [
    (
        "wrong feature count",
        [tensor(shape=(1, 2), data=[1, 2])],
        FeatureCountError,
        ["input 'X'", "expected 3 features", "got 2"],
    ),
    (
        "unknown feature",
        columns(z=tensor("z", (2,), data=[1, 2])),
        FeatureNameError,
        ["input 'z'", "unknown feature name"],
    ),
    ("missing feature", columns()[:2], FeatureNameError, ["missing feature input(s): 'c'"]),
    (
        "duplicated feature",
        columns() + [tensor("a", (2,), data=[1, 2])],
        FeatureNameError,
        ["input 'a'", "more than once"],
    ),
    ("short data", [tensor(data=[1.0] * 5)], ShapeError, ["input 'X'", "shape [2, 3] holds 6 values but data has 5"]),
    (
        "nesting disagrees with shape",
        [tensor(shape=(2, 3), data=[[1, 2], [3, 4], [5, 6]])],
        ShapeError,
        ["input 'X'", "nested as [3, 2]"],
    ),
    (
        "ragged rows",
        [tensor(data=[[1, 2, 3], [4, 5]])],
        MalformedDataError,
        ["input 'X'", "row 1 has 2 values, expected 3"],
    ),
    (
        "nested too deep",
        [tensor(data=[[1, [2, 3], 4], [4, 5, 6]])],
        MalformedDataError,
        ["input 'X'", "row 0, column 1 ('b')", "got a list"],
    ),
    (
        "string element",
        [tensor(data=[1, 2, "3", 4, 5, 6])],
        MalformedDataError,
        ["row 0, column 2 ('c')", "got a string"],
    ),
    (
        "bool element",
        [tensor(data=[True, False, True, False, True, False])],
        MalformedDataError,
        ["row 0, column 0", "got a boolean"],
    ),
    ("BYTES", [tensor(datatype="BYTES")], DatatypeError, ["input 'X'", "datatype BYTES is not supported"]),
    ("BOOL", [tensor(datatype="BOOL")], DatatypeError, ["input 'X'", "datatype BOOL is not supported"]),
    (
        "INT8 overflow",
        [tensor(shape=(1, 3), datatype="INT8", data=[1, 2, 300])],
        ValueRangeError,
        ["row 0, column 2 ('c')", "value 300 is out of range for INT8 [-128, 127]"],
    ),
    (
        "UINT8 negative",
        [tensor(shape=(1, 3), datatype="UINT8", data=[1, -1, 3])],
        ValueRangeError,
        ["row 0, column 1 ('b')", "out of range for UINT8"],
    ),
    (
        "INT16 fraction",
        [tensor(shape=(1, 3), datatype="INT16", data=[1, 2.5, 3])],
        ValueRangeError,
        ["row 0, column 1", "not an integer"],
    ),
    (
        "FP16 overflow",
        [tensor(shape=(1, 3), datatype="FP16", data=[1, 2, 70000.0])],
        ValueRangeError,
        ["row 0, column 2", "out of range for FP16"],
    ),
    (
        "beyond 64 bits",
        [tensor(shape=(1, 3), datatype="INT64", data=[1, 2, 2**70])],
        ValueRangeError,
        ["row 0, column 2", "out of range"],
    ),
    (
        "NaN",
        [tensor(data=[0, 1, 2, 3, float("nan"), 5])],
        NonFiniteError,
        ["input 'X'", "row 1, column 1 ('b')", "NaN is not allowed"],
    ),
    ("+Inf", [tensor(data=[float("inf"), 1, 2, 3, 4, 5])], NonFiniteError, ["row 0, column 0 ('a')", "+Inf"]),
    (
        "-Inf column style",
        columns(b=tensor("b", (2,), data=[1.0, float("-inf")])),
        NonFiniteError,
        ["input 'b': row 1", "-Inf"],
    ),
    ("null", [tensor(data=[0, 1, 2, 3, 4, None])], NonFiniteError, ["row 1, column 2 ('c')", "null is not a number"]),
    ("empty batch", [tensor(shape=(0, 3), data=[])], BatchSizeError, ["input 'X'", "empty batch"]),
    ("over the row cap", [tensor(shape=(6, 3))], BatchSizeError, ["input 'X'", "6 rows exceed", "limit of 5"]),
    ("two 2-D tensors", [tensor("p"), tensor("q")], InputLayoutError, ["2 two-dimensional inputs ('p', 'q')"]),
    ("2-D mixed with columns", [tensor("p")] + columns(), InputLayoutError, ["input 'p' is 2-D"]),
    ("3-D tensor", [tensor(shape=(1, 3, 1), data=[1, 2, 3])], ShapeError, ["input 'X'", "3 dimensions"]),
    ("column lengths differ", columns(b=tensor("b", (3,), data=[1, 2, 3])), ShapeError, ["input 'b' has 3 rows"]),
    ("no inputs", [], InputLayoutError, ["no inputs"]),
    ("unknown datatype", [tensor(datatype="FP128")], DatatypeError, ["datatype FP128 is not supported"]),
    (
        "boolean among numbers",
        [tensor(data=[[0, 1, 2], [3, True, 5]])],
        MalformedDataError,
        ["row 1, column 1 ('b')", "got a boolean"],
    ),
    (
        "boolean among floats",
        [tensor(data=[0.5, 1, 2, 3, 4, False])],
        MalformedDataError,
        ["row 1, column 2 ('c')", "got a boolean"],
    ),
]


@pytest.mark.parametrize("label,inputs,error,fragments", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_name_the_problem(label, inputs, error, fragments):
    with pytest.raises(error) as caught:
        Request(*inputs).parse_with(CONTRACT)
    assert isinstance(caught.value, InvalidRequest)
    assert caught.value.status == 400
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize("request_id", ["\u0100", "\n", "a\tb", "\x7f", "é"])
def test_request_ids_must_survive_being_echoed_in_headers(request_id):
    with pytest.raises(RequestIdError, match="must be printable ASCII"):
        Request(tensor(), request_id=request_id).parse_with(CONTRACT)
    assert Request(tensor(), request_id="order-42 (retry 1)").parse_with(CONTRACT).features.shape == (2, 3)


@pytest.mark.parametrize("request_id,size", [("x" * 257, 257), ("é" * 129, 258), ("x" * 100_000, 100_000)])
def test_a_request_id_past_256_bytes_is_refused_naming_the_limit(request_id, size):
    # Echoed in the ce-id response header: a long one makes a header line common clients refuse.
    with pytest.raises(
        RequestIdTooLong, match=rf"request id of {size} bytes \(UTF-8\) exceeds the limit of 256 bytes"
    ) as refused:
        Request(tensor(), request_id=request_id).parse_with(CONTRACT)
    assert refused.value.status == 400 and request_id[:10] not in str(refused.value)  # never echoed


def test_a_request_id_of_256_bytes_is_accepted():
    assert Request(tensor(), request_id="x" * 256).parse_with(CONTRACT).features.shape == (2, 3)


def test_requested_outputs_select_and_unknown_ones_are_refused():
    contract = Contract(NAMES, ("predict", "predict_proba"), 5)
    assert Request(tensor(), outputs=["predict_proba"]).parse_with(contract).outputs == ("predict_proba",)
    with pytest.raises(OutputError, match="unknown output 'transform'; this model offers: predict, predict_proba"):
        Request(tensor(), outputs=["transform"]).parse_with(contract)


# Columns 'a' and 'c' may be missing, 'b' may not.
GAPPY = Contract(NAMES, ("predict",), max_rows=5, may_be_missing=(True, False, True))


def test_null_and_nan_become_nan_where_a_column_may_be_missing():
    parsed = GAPPY.parse(None, Request(tensor(data=[None, 1, 2, 3, 4, float("nan")])).tensors)
    assert np.isnan(parsed.features[0, 0]) and np.isnan(parsed.features[1, 2])
    assert parsed.features[~np.isnan(parsed.features)].tolist() == [1, 2, 3, 4]


def test_a_column_style_null_is_accepted_in_its_own_column():
    inputs = columns(a=tensor("a", (2,), data=[None, 1.0]), c=tensor("c", (2,), datatype="INT64", data=[5, None]))
    parsed = GAPPY.parse(None, Request(*inputs).tensors)
    assert np.isnan(parsed.features[0, 0]) and np.isnan(parsed.features[1, 2]) and parsed.features[1, 0] == 1.0


@pytest.mark.parametrize(
    "data,message",
    [
        ([0, 1, 2, 3, None, 5], "input 'X': row 1, column 1 ('b'): null is not a number, and column 'b' may not"),
        ([0, 1, 2, 3, float("nan"), 5], "input 'X': row 1, column 1 ('b'): NaN is not allowed"),
        ([float("inf"), 1, 2, 3, 4, 5], "row 0, column 0 ('a'): +Inf is not allowed"),
        ([None, 1, 2, 3, "4", 5], "row 1, column 1 ('b'): expected a number, got a string"),
        ([None, 1, 2, 3, True, 5], "row 1, column 1 ('b'): expected a number, got a boolean"),
    ],
    ids=["null", "NaN", "Inf where a gap is allowed", "string", "boolean"],
)
def test_only_a_gap_in_a_column_that_may_be_missing_passes(data, message):
    with pytest.raises(InvalidRequest) as caught:
        GAPPY.parse(None, Request(tensor(data=data)).tensors)
    assert message in str(caught.value)


def test_a_contract_without_missing_columns_still_refuses_every_gap():
    for data in ([None, 1, 2, 3, 4, 5], [float("nan"), 1, 2, 3, 4, 5]):
        with pytest.raises(NonFiniteError, match="row 0, column 0 \\('a'\\)"):
            CONTRACT.parse(None, Request(tensor(data=data)).tensors)


MIXED = Contract(
    feature_names=("age", "city"),
    offered_outputs=("predict",),
    max_rows=5,
    string_columns=(False, True),
    categories=(None, Categories(frozenset({"paris", "rome"}), "'paris', 'rome'")),
)
LONG_BYTES = b"\xff" * 1000


@pytest.mark.parametrize(
    "age,city,message",
    [
        ([30.0, "forty"], ["paris", "rome"], "input 'age': row 1: expected a number, got a string ('forty')"),
        ([30.0, b"forty"], ["paris", "rome"], "input 'age': row 1: expected a number, got a string (b'forty')"),
        ([30.0, 40.0], [b"paris", b"r\xffme"], r"input 'city': row 1: the bytes b'r\xffme' are not UTF-8 text"),
        (
            [30.0, 40.0],
            ["x" * 10_000, "rome"],
            f"input 'city': row 0: '{'x' * 59} is not a category this model was trained on; "
            "column 'city' takes 'paris', 'rome'",
        ),
        ([30.0, 40.0], [LONG_BYTES, b"rome"], f"row 0: the bytes {LONG_BYTES[:32]!r} are not UTF-8 text"),
    ],
    ids=[
        "string in a numeric column",
        "bytes in a numeric column",
        "bytes that are not UTF-8",
        "a long unseen value",
        "long bytes",
    ],
)
def test_a_bad_value_in_a_column_is_named_in_the_refusal(age, city, message):
    """The value itself, cut short where it is long (a message must not repeat megabytes)."""
    inputs = [tensor("age", (2,), data=age), tensor("city", (2,), datatype="BYTES", data=city)]
    with pytest.raises(InvalidRequest) as refused:
        Request(*inputs).parse_with(MIXED)
    assert str(refused.value).endswith(message)
