"""The input contract for a model with string columns: one tensor per column ([N] or PandasCodec's
[N, 1]), BYTES for strings, gaps only where the schema allows them, unseen categories refused where the
encoder would raise, and every refusal's exact message (plain tensors: no MLServer)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from runtime.core.artifacts import InputColumn, Manifest
from runtime.core.contract import Contract, Tensor
from runtime.core.errors import (
    CategoryError,
    DatatypeError,
    FeatureNameError,
    InputLayoutError,
    InvalidRequest,
    MalformedDataError,
    NonFiniteError,
    ShapeError,
)

CITIES = ["berlin", "lisbon", "london", "madrid", "paris", "rome", "vienna"]
SCHEMA = [
    InputColumn(name="age", missing=True),
    InputColumn(name="income"),
    InputColumn(name="city", kind="string", missing=True, categories=CITIES, unseen="refused"),
    InputColumn(name="note", kind="string"),  # free text: no categories
    InputColumn(name="rooms", categories=[1.0, 2.0, 3.0], unseen="refused"),
    InputColumn(name="colour", kind="string", categories=["red", "blue"], unseen="counted"),
]
NAMES = [c.name for c in SCHEMA]


def manifest(columns: list[InputColumn]) -> Manifest:
    return Manifest.model_validate(
        {
            "name": "m",
            "version": "1",
            "kind": "regressor",
            "estimator": "sklearn.linear_model._ridge.Ridge",
            "feature_names": [c.name for c in columns],
            "outputs": ["predict"],
            "trained_with": {},
            "model": {"file": "model.skops", "sha256": "0" * 64, "format": "skops", "types": []},
            "form": "pipeline",
            "inputs": [c.model_dump() for c in columns],
            "feature_ranges_source": "none",
        }
    )


CONTRACT = Contract.for_manifest(manifest(SCHEMA), max_rows=10)


def columns(**overrides: Tensor) -> list[Tensor]:
    """Two good rows, one tensor per column; a keyword replaces that column's tensor."""
    good = {
        "age": Tensor("age", [2], "FP64", [31.5, None]),
        "income": Tensor("income", [2], "INT64", [1200, 800]),
        "city": Tensor("city", [2], "BYTES", ["paris", None]),
        "note": Tensor("note", [2], "BYTES", ["first", "second"]),
        "rooms": Tensor("rooms", [2], "FP32", [1.0, 3.0]),
        "colour": Tensor("colour", [2], "BYTES", ["red", "green"]),  # unseen, but only counted
    }
    return [overrides.get(name, tensor) for name, tensor in good.items()]


def parse(inputs: list[Tensor]) -> np.ndarray:
    return CONTRACT.parse(None, inputs).features


def same(got: np.ndarray, expected: list[list[Any]]) -> None:
    """Equal value by value and of the same Python type, NaN matching NaN."""
    assert got.dtype == object and got.shape == (len(expected), len(expected[0]))
    for row, want in zip(got.tolist(), expected, strict=True):
        for value, wanted in zip(row, want, strict=True):
            assert type(value) is type(wanted), (row, want)
            assert value == wanted or (isinstance(wanted, float) and math.isnan(wanted) and math.isnan(value))


EXPECTED = [
    [31.5, 1200.0, "paris", "first", 1.0, "red"],
    [math.nan, 800.0, math.nan, "second", 3.0, "green"],
]


def test_the_contract_knows_the_schemas_string_columns_and_refused_categories():
    assert CONTRACT.string_columns == (False, False, True, True, False, True)
    assert CONTRACT.may_be_missing == (True, False, True, False, False, False)
    refused = [c is not None for c in CONTRACT.categories]
    assert refused == [False, False, True, False, True, False]  # 'colour' is only counted


def test_one_tensor_per_column_becomes_an_object_matrix_of_floats_strings_and_nan():
    same(parse(columns()), EXPECTED)


def test_columns_may_come_in_any_order():
    same(parse(list(reversed(columns()))), EXPECTED)


def test_pandas_codec_n_by_1_tensors_nested_or_flat():
    nested = columns(
        age=Tensor("age", [2, 1], "FP64", [[31.5], [None]]),
        income=Tensor("income", [2, 1], "INT64", [[1200], [800]]),
        city=Tensor("city", [2, 1], "BYTES", [["paris"], [None]]),
        note=Tensor("note", [2, 1], "BYTES", [["first"], ["second"]]),
    )
    same(parse(nested), EXPECTED)
    flat = columns(
        age=Tensor("age", [2, 1], "FP64", [31.5, None]),
        city=Tensor("city", [2, 1], "BYTES", ["paris", None]),
    )
    same(parse(flat), EXPECTED)


def test_grpc_contents_bytes_for_strings_and_nan_for_a_gap():
    grpc = columns(
        age=Tensor("age", [2], "FP64", np.array([31.5, np.nan])),
        income=Tensor("income", [2], "INT64", np.array([1200, 800], dtype=np.int64)),
        city=Tensor("city", [2], "BYTES", [b"paris", b"rome"]),
        note=Tensor("note", [2], "BYTES", np.array([b"first", "s\u00e9cond".encode()], dtype=object)),
    )
    same(parse(grpc), [EXPECTED[0], [math.nan, 800.0, "rome", "s\u00e9cond", 3.0, "green"]])


def test_bytes_are_decoded_before_the_category_check():
    with pytest.raises(CategoryError, match="'r\u00f6me' is not a category"):
        parse(columns(city=Tensor("city", [2], "BYTES", [b"paris", "r\u00f6me".encode()])))


def test_a_gap_in_a_string_column_that_may_be_missing_is_nan():
    got = parse(columns(city=Tensor("city", [2], "BYTES", [None, None])))
    assert all(isinstance(v, float) and math.isnan(v) for v in got[:, 2])


def test_an_all_numeric_model_with_per_column_tensors_still_gets_float64():
    numeric = Contract.for_manifest(manifest([InputColumn(name="a", missing=True), InputColumn(name="b")]), 10)
    got = numeric.parse(None, [Tensor("a", [2, 1], "FP64", [[1.0], [None]]), Tensor("b", [2], "INT8", [3, 4])])
    assert got.features.dtype == np.float64
    np.testing.assert_array_equal(got.features, [[1.0, 3.0], [np.nan, 4.0]])


REFUSED = [
    (
        "BYTES for a numeric column",
        columns(age=Tensor("age", [2], "BYTES", ["31", "40"])),
        DatatypeError,
        "input 'age': datatype BYTES is not supported; use a numeric datatype "
        "(FP16/FP32/FP64, INT8..INT64, UINT8..UINT64)",
    ),
    (
        "a numeric datatype for a string column",
        columns(note=Tensor("note", [2], "FP64", [1.0, 2.0])),
        DatatypeError,
        "input 'note': datatype FP64, but column 'note' holds strings; send it as BYTES",
    ),
    (
        "a string in a numeric column",
        columns(income=Tensor("income", [2], "FP64", [1200, "800"])),
        MalformedDataError,
        "input 'income': row 1: expected a number, got a string",
    ),
    (
        "a number in a string column",
        columns(note=Tensor("note", [2], "BYTES", ["first", 3])),
        MalformedDataError,
        "input 'note': row 1: expected a string, got the number 3",
    ),
    (
        "bytes that are not UTF-8",
        columns(note=Tensor("note", [2], "BYTES", [b"first", b"\xff\xfe"])),
        MalformedDataError,
        "input 'note': row 1: the bytes b'\\xff\\xfe' are not UTF-8 text",
    ),
    (
        "null in a numeric column that may not be missing",
        columns(income=Tensor("income", [2], "FP64", [None, 800])),
        NonFiniteError,
        "input 'income': row 0: null is not a number, and column 'income' may not be missing",
    ),
    (
        "NaN in a numeric column that may not be missing",
        columns(income=Tensor("income", [2], "FP64", np.array([1200.0, np.nan]))),
        NonFiniteError,
        "input 'income': row 1: NaN is not allowed (values must be finite; column 'income' may not be missing)",
    ),
    (
        "Inf even where a gap is allowed",
        columns(age=Tensor("age", [2], "FP64", np.array([np.inf, 1.0]))),
        NonFiniteError,
        "input 'age': row 0: +Inf is not allowed (values must be finite; column 'age' may not be missing)",
    ),
    (
        "null in a string column that may not be missing",
        columns(note=Tensor("note", [2], "BYTES", ["first", None])),
        NonFiniteError,
        "input 'note': row 1: null, and column 'note' may not be missing",
    ),
    (
        "an unseen category where the encoder raises",
        columns(city=Tensor("city", [2], "BYTES", ["paris", "tokyo"])),
        CategoryError,
        "input 'city': row 1: 'tokyo' is not a category this model was trained on; column 'city' takes "
        "'berlin', 'lisbon', 'london', 'madrid', 'paris' and 2 more",
    ),
    (
        "an unseen numeric category",
        columns(rooms=Tensor("rooms", [2], "INT64", [1, 4])),
        CategoryError,
        "input 'rooms': row 1: 4.0 is not a category this model was trained on; column 'rooms' takes 1.0, 2.0, 3.0",
    ),
    (
        "an [N, F] matrix for a model with string columns",
        [Tensor("X", [2, 6], "FP64", [[1.0] * 6] * 2)],
        InputLayoutError,
        "this model has string column(s) 'city', 'note', 'colour': send one tensor per column, named by the "
        "column (BYTES for a string column, a numeric datatype otherwise)",
    ),
    (
        "an [N, 2] tensor named by a column",
        columns(note=Tensor("note", [1, 2], "BYTES", ["a", "b"])),
        InputLayoutError,
        "this model has string column(s) 'city', 'note', 'colour': send one tensor per column",
    ),
    (
        "an unknown column",
        [*columns(), Tensor("zip", [2], "BYTES", ["a", "b"])],
        FeatureNameError,
        "input 'zip': unknown feature name; expected one of: age, income, city, note, rooms, colour",
    ),
    (
        "a missing column",
        columns()[1:],
        FeatureNameError,
        "missing feature input(s): 'age'; column style needs one 1-D input per feature",
    ),
    (
        "a column given twice",
        [*columns(), Tensor("city", [2], "BYTES", ["rome", "rome"])],
        FeatureNameError,
        "input 'city': feature given more than once",
    ),
    (
        "columns of different lengths",
        columns(note=Tensor("note", [3], "BYTES", ["a", "b", "c"])),
        ShapeError,
        "input 'note' has 3 rows but input 'age' has 2",
    ),
    (
        "fewer strings than the shape says",
        columns(note=Tensor("note", [2], "BYTES", ["a"])),
        ShapeError,
        "input 'note': shape [2] holds 2 values but data has 1",
    ),
    (
        "[N, 1] strings nested unevenly",
        columns(city=Tensor("city", [2, 1], "BYTES", [["paris", "rome"], ["rome"]])),
        MalformedDataError,
        "input 'city': data is not nested as its shape [2, 1] says",
    ),
    (
        "string data that is not a list",
        columns(note=Tensor("note", [2], "BYTES", "ab")),
        MalformedDataError,
        "input 'note': data must be a list of strings",
    ),
]


@pytest.mark.parametrize("label,inputs,error,message", REFUSED, ids=[r[0] for r in REFUSED])
def test_every_refusal_names_input_row_column_and_value(label, inputs, error, message):
    with pytest.raises(error) as refused:
        parse(inputs)
    assert str(refused.value).startswith(message), label
    assert isinstance(refused.value, InvalidRequest)  # a 400 / INVALID_ARGUMENT, never a 500


def test_the_unknown_column_message_offers_no_matrix_to_a_string_model():
    with pytest.raises(FeatureNameError) as refused:
        parse([*columns(), Tensor("zip", [2], "BYTES", ["a", "b"])])
    assert "[N, 6]" not in str(refused.value)


def test_a_short_category_list_is_shown_whole():
    small = Contract.for_manifest(
        manifest([InputColumn(name="c", kind="string", categories=["a", "b"], unseen="refused")]), 10
    )
    with pytest.raises(CategoryError) as refused:
        small.parse(None, [Tensor("c", [1], "BYTES", ["z"])])
    assert str(refused.value) == (
        "input 'c': row 0: 'z' is not a category this model was trained on; column 'c' takes 'a', 'b'"
    )


def test_an_unseen_numeric_category_in_an_n_by_f_matrix_is_refused_naming_the_column():
    numeric = Contract.for_manifest(
        manifest([InputColumn(name="a"), InputColumn(name="rooms", categories=[1.0, 2.0, 3.0], unseen="refused")]),
        10,
    )
    assert numeric.parse(None, [Tensor("X", [2, 2], "FP64", [[0.5, 1], [0.7, 3]])]).features.dtype == np.float64
    with pytest.raises(CategoryError) as refused:
        numeric.parse(None, [Tensor("X", [2, 2], "FP64", [[0.5, 1], [0.7, 4]])])
    assert str(refused.value) == (
        "input 'X': row 1, column 1 ('rooms'): 4.0 is not a category this model was trained on; "
        "column 'rooms' takes 1.0, 2.0, 3.0"
    )


def test_a_gap_passes_the_category_check_where_the_column_may_be_missing():
    got = parse(columns(city=Tensor("city", [2], "BYTES", [None, "vienna"])))
    assert math.isnan(got[0, 2]) and got[1, 2] == "vienna"


PLAIN = [
    [31.5, 1200.0, "paris", "first", 1.0, "red"],
    [40.0, 800.0, "rome", "second", 3.0, "green"],
]


def plain_columns(shape: list[int], strings_as_bytes: bool) -> list[Tensor]:
    """The common request as the gRPC fast path and REST's fast path hand it over: numeric columns as
    numpy arrays in FP64 tensors, strings as bytes or str."""
    cells = list(zip(*PLAIN, strict=True))
    tensors = []
    for column, values in zip(SCHEMA, cells, strict=True):
        if column.kind == "string":
            data: Any = [v.encode() for v in values] if strings_as_bytes else list(values)
            tensors.append(Tensor(column.name, shape, "BYTES", data))
        else:
            # age and rooms as floats, income as integers (JSON integers in an FP64 column)
            dtype = np.int64 if column.name == "income" else np.float64
            tensors.append(Tensor(column.name, shape, "FP64", np.array(values, dtype=dtype).reshape(shape)))
    return tensors


@pytest.mark.parametrize("shape", [[2], [2, 1]])
@pytest.mark.parametrize("strings_as_bytes", [True, False])
def test_a_plain_request_is_read_in_one_pass_into_the_matrix_the_column_walk_makes(shape, strings_as_bytes):
    inputs = plain_columns(shape, strings_as_bytes)
    by_name = {t.name: t for t in inputs}
    plain = CONTRACT._plain_columns(by_name, 2)
    assert plain is not None
    same(plain, PLAIN)
    same(CONTRACT._walked_columns(by_name, 2), PLAIN)
    same(parse(inputs), PLAIN)


@pytest.mark.parametrize(
    "column, tensor",
    [
        ("age", Tensor("age", [2], "FP64", np.array([31.5, np.nan]))),  # a gap
        ("income", Tensor("income", [2], "FP64", np.array([1.0, np.inf]))),  # refused
        ("income", Tensor("income", [2], "INT64", np.array([1, 2]))),  # another datatype: range checks
        ("rooms", Tensor("rooms", [2], "FP64", np.array([1.0, 4.0]))),  # outside its categories
        ("city", Tensor("city", [2], "BYTES", [b"paris", b"\xff"])),  # not UTF-8
        ("city", Tensor("city", [2], "BYTES", ["paris", "oslo"])),  # unseen, refused
        ("note", Tensor("note", [2], "BYTES", ["first", None])),  # a gap
        ("note", Tensor("note", [2, 1], "BYTES", [["first"], ["second"]])),  # nested
    ],
)
def test_anything_but_a_plain_request_is_left_to_the_column_walk(column, tensor):
    by_name = {t.name: t for t in plain_columns([2], True)} | {column: tensor}
    assert CONTRACT._plain_columns(by_name, 2) is None
