"""The input contract: a V2 request becomes one validated float64 matrix, or an error that
names the input and, where it applies, the row and column.

Accepted layouts: one 2-D tensor [N, F] under any name when every column is numeric, or one tensor
[N] (or [N, 1], as MLServer's PandasCodec sends a DataFrame) per column named as in the manifest:
a numeric datatype for a numeric column, BYTES (UTF-8 strings) for a string column. A model with
string columns gets an object matrix (floats in numeric columns, str in string ones, NaN for a gap);
every other model a float64 one. A value outside a categorical column's training categories is refused
where the schema says the pipeline would raise on it. The fast path is one `np.asarray` over the
payload; the slower,
element-by-element walk runs only to explain a payload the fast path rejected. A missing value (JSON
null, or NaN in float contents) is accepted only in a column the manifest's schema says may be
missing; it reaches the pipeline as NaN. A payload holding null is read by that slower walk, so a
model none of whose columns may be missing pays nothing for the rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from math import prod
from typing import Any, NamedTuple

import numpy as np

from runtime.core.artifacts import InputColumn, Manifest
from runtime.core.datatypes import NUMERIC_DATATYPES, NUMERIC_HINT, v2_name
from runtime.core.errors import (
    BatchSizeError,
    CategoryError,
    DatatypeError,
    FeatureCountError,
    FeatureNameError,
    InputLayoutError,
    MalformedDataError,
    NonFiniteError,
    OutputError,
    ParameterError,
    RequestIdError,
    RequestIdTooLong,
    ShapeError,
    ValueRangeError,
)
from runtime.core.outputs import offered_outputs

DEFAULT_OUTPUT = "predict"
# A request id is echoed in a response header (ce-id); longer ones are refused. The contract is the
# one place every path passes before a response (REST and gRPC, fast paths, MLServer's, batching).
MAX_REQUEST_ID_BYTES = 256


class Tensor(NamedTuple):
    """One V2 input tensor as the transport delivered it, before any check (a tuple: a request of
    one tensor per column makes several, each in a fraction of a frozen dataclass's time)."""

    name: str
    shape: Sequence[int]
    datatype: str
    data: Any  # nested lists of JSON values (REST), or a numpy array (gRPC; REST's fast path)


@dataclass(frozen=True)
class ParsedRequest:
    # float64 [N, F], finite but for allowed gaps (NaN); object [N, F] for a model with string columns
    features: np.ndarray
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Categories:
    """A categorical column whose unseen values the pipeline would raise on: the values it takes."""

    allowed: frozenset[Any]
    shown: str  # the first few, for the refusal's message


@dataclass(frozen=True)
class Contract:
    feature_names: tuple[str, ...]
    offered_outputs: tuple[str, ...]
    max_rows: int
    # Per feature, whether it may be missing; empty when none may.
    may_be_missing: tuple[bool, ...] = ()
    # Per feature, whether it holds strings (BYTES); empty when every column is numeric.
    string_columns: tuple[bool, ...] = ()
    # Per feature, the categories outside which a value is refused (None: any value); empty when none.
    categories: tuple[Categories | None, ...] = ()

    @classmethod
    def for_manifest(cls, manifest: Manifest, max_rows: int) -> Contract:
        missing = manifest.may_be_missing
        strings = tuple(c.kind == "string" for c in manifest.columns)
        refused = tuple(_refused_categories(c) for c in manifest.columns)
        return cls(
            tuple(manifest.feature_names),
            offered_outputs(manifest),
            max_rows,
            missing if any(missing) else (),
            strings if any(strings) else (),
            refused if any(r is not None for r in refused) else (),
        )

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def parse(self, request_id: str | None, inputs: Sequence[Tensor], outputs: Sequence[str] = ()) -> ParsedRequest:
        """The request's features and the outputs it asks for (`predict` when none)."""
        check_request_id(request_id)
        return ParsedRequest(self._features(inputs), self._outputs(outputs))

    def _outputs(self, requested: Sequence[str]) -> tuple[str, ...]:
        if not requested:
            return (DEFAULT_OUTPUT,)
        names = tuple(dict.fromkeys(requested))
        for name in names:
            if name not in self.offered_outputs:
                raise OutputError(f"unknown output '{name}'; this model offers: {', '.join(self.offered_outputs)}")
        return names

    def _features(self, inputs: Sequence[Tensor]) -> np.ndarray:
        if not inputs:
            raise InputLayoutError(self._layout_hint("no inputs"))
        if self._column_style(inputs):
            return self._columns(inputs)
        if self.string_columns:
            strings = ", ".join(f"'{n}'" for n, s in zip(self.feature_names, self.string_columns, strict=True) if s)
            raise InputLayoutError(
                f"this model has string column(s) {strings}: send one tensor per column, named by the column "
                "(BYTES for a string column, a numeric datatype otherwise)"
            )
        matrices = [i for i in inputs if len(i.shape) == 2]
        if len(matrices) > 1:
            names = ", ".join(f"'{i.name}'" for i in matrices)
            raise InputLayoutError(self._layout_hint(f"{len(matrices)} two-dimensional inputs ({names})"))
        if matrices and len(inputs) > 1:
            raise InputLayoutError(self._layout_hint(f"input '{matrices[0].name}' is 2-D but sent with other inputs"))
        if matrices:
            return self._matrix(matrices[0])
        return self._columns(inputs)

    def _column_style(self, inputs: Sequence[Tensor]) -> bool:
        """One tensor per column: every input 1-D, or each [N] or [N, 1] under a feature's name
        (PandasCodec's layout; a one-feature model's [N, 1] matrix reads the same either way)."""
        if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] != 1:
            return False  # the common [N, F] matrix, settled without a pass over the names
        if all(len(i.shape) == 1 for i in inputs):
            return True
        names = self._names
        return all(i.name in names and _one_per_row(i.shape) for i in inputs)

    @cached_property
    def _names(self) -> frozenset[str]:
        return frozenset(self.feature_names)

    def _layout_hint(self, problem: str) -> str:
        if self.string_columns:
            return f"{problem}; send one tensor [N] per column, named by the column (BYTES for a string column)"
        return f"{problem}; send one [N, {self.n_features}] tensor or one 1-D tensor per feature"

    def _matrix(self, inp: Tensor) -> np.ndarray:
        rows, cols = inp.shape
        if cols != self.n_features:
            raise FeatureCountError(f"input '{inp.name}': expected {self.n_features} features (columns), got {cols}")
        self._check_rows(inp.name, rows)
        matrix = decode_tensor(inp, (rows, cols), self.feature_names, self.may_be_missing)
        # A numeric categorical column is refused outside its categories in this layout too.
        for col, categories in enumerate(self.categories):
            if categories is not None:
                _check_categories(inp.name, matrix[:, col], categories, self.feature_names, col)
        return matrix

    def _columns(self, inputs: Sequence[Tensor]) -> np.ndarray:
        for inp in inputs:
            if not _one_per_row(inp.shape):
                raise ShapeError(
                    f"input '{inp.name}': shape {list(inp.shape)} has {len(inp.shape)} dimensions; "
                    f"expected [N, {self.n_features}] or, per feature, [N]"
                )
        by_name = self._index_columns(inputs)
        rows = inputs[0].shape[0]
        for inp in inputs:
            if inp.shape[0] != rows:
                raise ShapeError(f"input '{inp.name}' has {inp.shape[0]} rows but input '{inputs[0].name}' has {rows}")
        self._check_rows(inputs[0].name, rows)
        matrix = self._plain_columns(by_name, rows)
        return matrix if matrix is not None else self._walked_columns(by_name, rows)

    def _walked_columns(self, by_name: dict[str, Tensor], rows: int) -> np.ndarray:
        """The matrix column by column, each value checked on its own: gaps, other datatypes, and
        the first bad value refused with its input, row and column."""
        matrix = np.empty((rows, self.n_features), dtype=object if self.string_columns else np.float64)
        for col, name in enumerate(self.feature_names):
            inp = by_name[name]
            missing = self.may_be_missing[col : col + 1]
            shape = tuple(inp.shape)  # [N] or [N, 1]: one value per row either way
            if self.string_columns and self.string_columns[col]:
                values = decode_strings(inp, shape, name, bool(missing and missing[0]))
            else:
                values = decode_tensor(inp, shape, (name,), missing).reshape(rows)
            if self.categories and self.categories[col] is not None:
                _check_categories(name, values, self.categories[col], (name,))  # type: ignore[arg-type]
            matrix[:, col] = values
        return matrix

    def _plain_columns(self, by_name: dict[str, Tensor], rows: int) -> np.ndarray | None:
        """The matrix in one pass when every column came in the common form: finite numbers as a numpy
        array in an FP64 tensor (gRPC contents, REST's fast path), UTF-8 bytes or str within the
        column's categories in a BYTES one. The same matrix the column by column walk makes of it, for
        a fraction of its calls; None for anything else, which that walk reads or refuses by name."""
        matrix = np.empty((rows, self.n_features), dtype=object if self.string_columns else np.float64)
        floats: list[np.ndarray] = []
        for col, (name, string, allowed) in enumerate(self._layout):
            inp = by_name[name]
            values: list[str] | np.ndarray | None
            if string:
                values = _plain_strings(inp, rows)
            else:
                values = _plain_numbers(inp, rows)
                if values is not None:
                    floats.append(values)
            if values is None or (allowed is not None and not allowed.issuperset(_listed(values))):
                return None
            matrix[:, col] = values
        # logical_and.reduce: ndarray.all() without its Python-level wrapper.
        if floats and not np.logical_and.reduce(np.isfinite(np.concatenate(floats))):
            return None  # a gap or a non-finite value: allowed or refused column by column
        return matrix

    @cached_property
    def _layout(self) -> tuple[tuple[str, bool, frozenset[Any] | None], ...]:
        """Per column: its name, whether it holds strings and the categories it is refused outside of."""
        strings = self.string_columns or (False,) * self.n_features
        refused = self.categories or (None,) * self.n_features
        return tuple(
            (name, string, None if categories is None else categories.allowed)
            for name, string, categories in zip(self.feature_names, strings, refused, strict=True)
        )

    def _index_columns(self, inputs: Sequence[Tensor]) -> dict[str, Tensor]:
        known = self._names
        by_name: dict[str, Tensor] = {}
        for inp in inputs:
            if inp.name not in known:
                # A model with string columns takes no [N, F] matrix: not offered as the alternative.
                matrix = "" if self.string_columns else f" (or one [N, {self.n_features}] tensor)"
                known_names = ", ".join(self.feature_names)
                raise FeatureNameError(
                    f"input '{inp.name}': unknown feature name; expected one of: {known_names}{matrix}"
                )
            if inp.name in by_name:
                raise FeatureNameError(f"input '{inp.name}': feature given more than once")
            by_name[inp.name] = inp
        missing = [f"'{n}'" for n in self.feature_names if n not in by_name]
        if missing:
            raise FeatureNameError(
                f"missing feature input(s): {', '.join(missing)}; column style needs one 1-D input per feature"
            )
        return by_name

    def _check_rows(self, name: str, rows: int) -> None:
        if rows == 0:
            raise BatchSizeError(f"input '{name}': empty batch (0 rows)")
        if rows < 0:
            raise ShapeError(f"input '{name}': negative row count {rows}")
        if rows > self.max_rows:
            raise BatchSizeError(
                f"input '{name}': {rows} rows exceed this model's limit of {self.max_rows} rows per request"
            )


def _one_per_row(shape: Sequence[int]) -> bool:
    """[N] or [N, 1]."""
    return len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)


def flag_parameter(name: str, value: object) -> bool:
    """A request parameter that switches something on: true or false; a non-boolean is refused,
    not guessed at (absent: None, off)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ParameterError(f"parameter '{name}' must be true or false, got {value!r:.60}")
    return value


def check_request_id(request_id: str | None) -> None:
    """MLServer echoes the id in response headers: only a short one of printable ASCII survives that."""
    if not request_id:
        return
    # An ASCII id's size is its length: only a long or a non-ASCII one is encoded to be measured.
    if len(request_id) > MAX_REQUEST_ID_BYTES or not request_id.isascii():
        size = len(request_id.encode("utf-8", "surrogatepass"))
        if size > MAX_REQUEST_ID_BYTES:
            raise RequestIdTooLong(
                f"request id of {size} bytes (UTF-8) exceeds the limit of {MAX_REQUEST_ID_BYTES} bytes "
                "(it is echoed in the ce-id response header); send a shorter id"
            )
    if not (request_id.isascii() and request_id.isprintable()):
        raise RequestIdError(f"request id {request_id!r} must be printable ASCII (it is echoed in response headers)")


def decode_strings(inp: Tensor, shape: tuple[int, ...], column: str, missing: bool) -> np.ndarray:
    """A string column's values: an object array [N] of str, NaN for a gap where `missing` allows it.
    REST sends JSON strings, gRPC bytes (UTF-8)."""
    if inp.datatype != "BYTES":
        raise DatatypeError(
            f"input '{inp.name}': datatype {inp.datatype}, but column '{column}' holds strings; send it as BYTES"
        )
    if any(d < 0 for d in shape):
        raise ShapeError(f"input '{inp.name}': shape {list(shape)} has a negative dimension")
    data = inp.data.tolist() if isinstance(inp.data, np.ndarray) else inp.data
    if not isinstance(data, list):
        raise MalformedDataError(f"input '{inp.name}': data must be a list of strings")
    if len(shape) == 2 and any(isinstance(v, list) for v in data):
        if not all(isinstance(v, list) and len(v) == 1 for v in data):
            raise MalformedDataError(f"input '{inp.name}': data is not nested as its shape {list(shape)} says")
        data = [v[0] for v in data]
    if len(data) != shape[0]:
        raise ShapeError(f"input '{inp.name}': shape {list(shape)} holds {shape[0]} values but data has {len(data)}")
    values = np.empty(len(data), dtype=object)
    for row, value in enumerate(data):
        values[row] = _string(inp.name, row, value, column, missing)
    return values


def _plain_numbers(inp: Tensor, rows: int) -> np.ndarray | None:
    """An FP64 column's values as decode_tensor takes them without a remark: a numpy array of floats
    or integers holding one value per row (flat, or nested as the tensor's shape says); None else."""
    data = inp.data
    if inp.datatype != "FP64" or not isinstance(data, np.ndarray) or data.dtype.kind not in "fiu":
        return None
    if data.size != rows or (data.ndim != 1 and data.shape != tuple(inp.shape)):
        return None
    return data.reshape(rows).astype(np.float64, copy=False)


def _plain_strings(inp: Tensor, rows: int) -> list[str] | None:
    """A BYTES column's values as decode_strings takes them without a remark: one str or UTF-8 bytes
    per row; None else."""
    data = inp.data.tolist() if isinstance(inp.data, np.ndarray) else inp.data
    if inp.datatype != "BYTES" or not isinstance(data, list) or len(data) != rows:
        return None
    values: list[str] = []
    for value in data:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                return None
        elif not isinstance(value, str):
            return None
        values.append(value)
    return values


def _listed(values: list[str] | np.ndarray) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else values


def _string(name: str, row: int, value: Any, column: str, missing: bool) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            shown = value[:SHOWN_BYTES]
            raise MalformedDataError(f"input '{name}': row {row}: the bytes {shown!r} are not UTF-8 text") from None
    if value is None:
        if missing:
            return np.nan
        raise NonFiniteError(f"input '{name}': row {row}: null, and column '{column}' may not be missing")
    raise MalformedDataError(f"input '{name}': row {row}: expected a string, got {_kind(value)}")


SHOWN_CATEGORIES = 5
# How much of a refused value a message repeats (a value may be megabytes long).
SHOWN_CHARS = 60
SHOWN_BYTES = 32


def _refused_categories(column: InputColumn) -> Categories | None:
    if column.unseen != "refused" or column.categories is None:
        return None
    cats = column.categories
    shown = ", ".join(repr(c) for c in cats[:SHOWN_CATEGORIES])
    more = len(cats) - SHOWN_CATEGORIES
    return Categories(frozenset(cats), shown + (f" and {more} more" if more > 0 else ""))


def _check_categories(
    name: str, values: np.ndarray, categories: Categories, columns: Sequence[str], col: int | None = None
) -> None:
    """Every value is a training category or an allowed gap (NaN); `col` is the column's index in a 2-D
    input (None for a column's own tensor, whose `columns` is its one name)."""
    for row, value in enumerate(values.tolist()):
        if value not in categories.allowed and value == value:  # NaN != NaN: a gap, decided before
            index = (row,) if col is None else (row, col)
            raise CategoryError(
                f"{_position(name, index, columns)}: {value!r:.{SHOWN_CHARS}} is not a category this model was "
                f"trained on; column '{columns[col or 0]}' takes {categories.shown}"
            )


def decode_tensor(
    inp: Tensor, shape: tuple[int, ...], columns: Sequence[str], missing: Sequence[bool] = ()
) -> np.ndarray:
    """The tensor's data as a float64 array of `shape`, within its datatype's range, finite but for
    NaN where `missing` (per column, empty when no column may be missing) allows it."""
    datatype = _numeric_dtype(inp)
    if any(d < 0 for d in shape):
        raise ShapeError(f"input '{inp.name}': shape {list(inp.shape)} has a negative dimension")
    data = inp.data
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        raw = None
    if raw is None or raw.dtype.kind not in "fiu" or _holds_booleans(data):
        _explain_bad_elements(inp.name, data, shape, columns, missing)
        raw = _with_gaps(inp.name, data) if any(missing) else None
        if raw is None:
            raise MalformedDataError(f"input '{inp.name}': data is not a rectangular array of numbers")
    raw = _reshape(inp.name, raw, shape)
    _check_range(inp.name, raw, datatype, columns, missing)
    return raw.astype(np.float64, copy=False)


def _with_gaps(name: str, data: Any) -> np.ndarray | None:
    """Numbers and nulls, each null already found in a column that may be missing, as float64 with NaN
    for null; None for data numpy cannot read that way (ragged nesting)."""
    try:
        return np.array(data, dtype=np.float64)
    except (ValueError, TypeError):
        return None


def _holds_booleans(data: Any) -> bool:
    """JSON true/false among numbers: numpy would silently read them as 1/0."""
    if not isinstance(data, list):  # gRPC contents arrive as typed arrays
        return False
    values = chain.from_iterable(data) if data and isinstance(data[0], list) else data
    return bool in set(map(type, values))


def _numeric_dtype(inp: Tensor) -> np.dtype:
    name = inp.datatype
    try:
        return NUMERIC_DATATYPES[name]
    except KeyError:
        raise DatatypeError(f"input '{inp.name}': datatype {name} is not supported; {NUMERIC_HINT}") from None


def _reshape(name: str, raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    expected = prod(shape)
    if raw.size != expected:
        raise ShapeError(f"input '{name}': shape {list(shape)} holds {expected} values but data has {raw.size}")
    if raw.ndim > 1 and raw.shape != shape:
        raise ShapeError(f"input '{name}': data is nested as {list(raw.shape)} but shape says {list(shape)}")
    return raw.reshape(shape)


def _position(name: str, index: tuple[int, ...], columns: Sequence[str]) -> str:
    """'input 'X': row 3, column 2 ('bmi')' for a 2-D index, 'input 'bmi': row 3' for 1-D."""
    if len(index) == 1:
        return f"input '{name}': row {index[0]}"
    row, col = index
    return f"input '{name}': row {row}, column {col} ('{columns[col]}')"


def _check_range(
    name: str, values: np.ndarray, datatype: np.dtype, columns: Sequence[str], missing: Sequence[bool]
) -> None:
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            refused = ~finite
            if missing:
                refused &= ~(np.isnan(values) & np.asarray(missing, dtype=bool))
            if refused.any():
                index = _first(refused)
                raise NonFiniteError(
                    f"{_position(name, index, columns)}: {_describe(values[index])} is not allowed "
                    f"({_finite_rule(columns, index)})"
                )
    if datatype.kind in "iu":
        _check_integer_range(name, values, datatype, columns)
    elif datatype != np.float64:
        limit = float(np.finfo(datatype).max)
        too_big = np.abs(values) > limit
        if too_big.any():
            index = _first(too_big)
            raise ValueRangeError(
                f"{_position(name, index, columns)}: value {values[index].item()!r} is out of range "
                f"for {v2_name(datatype)} [-{limit:g}, {limit:g}]"
            )


def _finite_rule(columns: Sequence[str], index: tuple[int, ...]) -> str:
    column = columns[index[1]] if len(index) == 2 else columns[0]
    return f"values must be finite; column '{column}' may not be missing"


def _check_integer_range(name: str, values: np.ndarray, datatype: np.dtype, columns: Sequence[str]) -> None:
    if values.dtype.kind == "f":
        # A NaN here is an accepted missing value, not a fraction.
        fractional = (values != np.trunc(values)) & ~np.isnan(values)
        if fractional.any():
            index = _first(fractional)
            raise ValueRangeError(
                f"{_position(name, index, columns)}: value {values[index].item()!r} is not an integer, "
                f"as {v2_name(datatype)} requires"
            )
    info = np.iinfo(datatype)
    # JSON integers past int64 reach numpy as float64 (from MLServer's parser, or when mixed with
    # other numbers), where 2**63 - 1 and 2**63 (2**64 - 1 and 2**64) are the same value: the
    # legitimate maximum wins, so one past the 64-bit maximum slips through as that maximum.
    outside = (values < info.min) | (values > info.max)
    if outside.any():
        index = _first(outside)
        raise ValueRangeError(
            f"{_position(name, index, columns)}: value {values[index].item()!r} is out of range "
            f"for {v2_name(datatype)} [{info.min}, {info.max}]"
        )


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _describe(value: float) -> str:
    return "NaN" if np.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def _explain_bad_elements(
    name: str, data: Any, shape: tuple[int, ...], columns: Sequence[str], missing: Sequence[bool]
) -> None:
    """Raise the most specific error for data the fast path could not turn into numbers; a null where
    `missing` allows it passes."""
    if isinstance(data, np.ndarray):  # gRPC contents arrive as arrays (runtime.integration.grpc)
        data = data.tolist()
    if not isinstance(data, list):
        raise MalformedDataError(f"input '{name}': data must be a list of numbers")
    width = shape[1] if len(shape) == 2 else 1
    nested = len(shape) == 2 and any(isinstance(row, list) for row in data)
    if nested:
        for row, values in enumerate(data):
            if not isinstance(values, list):
                raise MalformedDataError(
                    f"input '{name}': row {row}: expected a list of {width} numbers, got {_kind(values)}"
                )
            if len(values) != width:
                raise MalformedDataError(f"input '{name}': row {row} has {len(values)} values, expected {width}")
    for index, value in _elements(data, nested, width):
        if value is None and missing and missing[index[1]]:
            continue
        where = _position(name, index if len(shape) == 2 else index[:1], columns)
        _check_element(where, value, columns[index[1]])


def _elements(data: list[Any], nested: bool, width: int) -> Iterator[tuple[tuple[int, int], Any]]:
    if nested:
        for row, values in enumerate(data):
            for col, value in enumerate(values):
                yield (row, col), value
    else:
        for flat, value in enumerate(data):
            yield divmod(flat, width), value


def _check_element(where: str, value: Any, column: str) -> None:
    if value is None:
        raise NonFiniteError(f"{where}: null is not a number, and column '{column}' may not be missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedDataError(f"{where}: expected a number, got {_kind(value)}")
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise ValueRangeError(f"{where}: value {value} is out of range for any 64-bit integer")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"a string ({value!r:.{SHOWN_CHARS}})"
    if isinstance(value, bytes):  # gRPC bytes_contents in a numeric tensor
        return f"a string ({value[:SHOWN_BYTES]!r})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return f"a {type(value).__name__}"
