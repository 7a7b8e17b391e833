"""Hypothesis strategies for raw Open Inference Protocol V2 inference requests (REST and gRPC).

Shared by the CI fuzz tests (tests/fuzz/test_fuzz.py), `python -m bench.fuzz` and the soak
(harness.soak). Client side only: nothing here imports mlserver (the protobuf trap); what the
models accept comes from their manifests (harness.models).

Every drawn case carries an expectation derived from the V2 contract of the runtime:

    OK      a valid request: must answer 200 / OK with well-formed outputs matching the pipeline
    REJECT  certainly invalid: must be refused with a client error (REST 4xx, gRPC INVALID_ARGUMENT,
            or NOT_FOUND for a model/version that is not served), with a message
    ANY     anything but a server error (the outcome is not pinned by the contract)

Families of cases (one `one_of`, so hypothesis shrinks within a family):
- structured: a valid request for a served model (random rows, layout, datatypes, names, outputs,
  parameters, flat or nested data, typed or raw gRPC contents) plus at most one mutation from a
  catalogue, each with its own expectation; sometimes 2-4 stacked mutations (then ANY);
- chaos: arbitrary JSON documents / arbitrary ModelInferRequest protos built from the V2 vocabulary;
- raw text (REST only): malformed JSON, truncations, invalid UTF-8, deep nesting, 1e400, NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import numpy as np
from hypothesis import strategies as st

from harness import mixed_model
from harness.models import ShippedModel, shipped_models
from harness.v2 import GRPC_CONTENTS_FIELD, raw_dtype
from harness.v2 import pb as _pb
from runtime.core.contract import SHOWN_CHARS
from runtime.core.datatypes import NUMERIC_DATATYPES

OK, REJECT, ANY = "ok", "reject", "any"

T = TypeVar("T")

V2_DATATYPES = tuple(NUMERIC_DATATYPES) + ("BOOL", "BYTES")
GRPC_FIELDS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)
PARAM_KINDS = ("bool_param", "int64_param", "string_param", "double_param", "uint64_param")
# Parameter names something on the server reads: MLServer (content_type, headers) or the runtime.
SPECIAL_PARAMS = ("content_type", "headers", "ood_flags", "pipeline_traceparent")
MAX_ROWS = 10_000  # the shipped models' row cap (model-settings.json parameters.extra.max_rows)


# ============================================================================================
# Where a request goes (the shipped models: harness.models)
# ============================================================================================


@dataclass(frozen=True)
class Target:
    """Where a request goes: a model name and an optional version, served or not."""

    model: str
    version: str | None  # None: the request names no version

    @property
    def spec(self) -> ShippedModel | None:
        return shipped_models().get(self.model)

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions the fuzz server serves under this name (harness.fuzz.fuzz_repository)."""
        if self.model == mixed_model.NAME:
            return (MIXED_VERSION,)
        spec = self.spec
        return spec.versions if spec is not None else ()

    @property
    def served(self) -> bool:
        return bool(self.versions) and (self.version is None or self.version in self.versions)

    @property
    def resolved_version(self) -> str | None:
        if not self.served:
            return None
        spec = self.spec
        if self.version is not None:
            return self.version
        return spec.default_version if spec is not None else self.versions[-1]

    def rest_path(self) -> str:
        name = quote(self.model, safe="")
        if self.version is None:
            return f"/v2/models/{name}/infer"
        return f"/v2/models/{name}/versions/{quote(self.version, safe='')}/infer"


def served_targets() -> list[Target]:
    out = []
    for name, spec in shipped_models().items():
        out.append(Target(name, None))
        out.extend(Target(name, v) for v in spec.versions)
    return out


# ============================================================================================
# Cases
# ============================================================================================


@dataclass
class Case:
    protocol: str
    target: Target
    expect: str
    notes: tuple[str, ...]
    # For OK cases: the float64 matrix the server must predict on, and the outputs it must return.
    x: np.ndarray | None = field(default=None, repr=False)
    outputs: tuple[str, ...] = ()
    # Whether the request asks for ood flags (then the response carries a parameter).
    flags: bool = False
    # A model with string columns: the pipeline's own answers for an OK case (`outputs` says which
    # must come back), and for a REJECT case a part of the message the contract gives.
    answers: dict[str, np.ndarray] | None = field(default=None, repr=False)
    message: str = ""


@dataclass
class RestCase(Case):
    body: bytes = b""
    content_type: str | None = "application/json"
    path: str | None = None  # another route than the target's V2 infer path (/predict/...)
    headers: dict[str, str] = field(default_factory=dict)  # more request headers (binary bodies' header length)

    def url_path(self) -> str:
        return self.path or self.target.rest_path()

    def __repr__(self) -> str:
        text = self.body.decode("utf-8", errors="backslashreplace")
        if len(text) > 4000:
            text = text[:2000] + f"...<{len(text) - 4000} chars>..." + text[-2000:]
        return (
            f"RestCase(expect={self.expect}, notes={list(self.notes)}, "
            f"POST {self.url_path()}, content_type={self.content_type!r}, headers={self.headers}, "
            f"body={text})"
        )

    def describe(self) -> str:
        return repr(self)


@dataclass
class GrpcCase(Case):
    request: Any = None  # tritonclient.grpc.service_pb2.ModelInferRequest

    def __repr__(self) -> str:
        from google.protobuf import text_format

        text = text_format.MessageToString(self.request, as_one_line=True, as_utf8=False)
        if len(text) > 4000:
            text = text[:2000] + f"...<{len(text) - 4000} chars>..." + text[-2000:]
        return f"GrpcCase(expect={self.expect}, notes={list(self.notes)}, request={{{text}}})"

    def describe(self) -> str:
        return repr(self)


AnyCase = RestCase | GrpcCase  # what the strategies draw


# ============================================================================================
# JSON text with tokens the json module will not write (NaN, 1e400, deep nesting, ...)
# ============================================================================================


class Raw(str):
    """A JSON token written verbatim."""


def dumps(obj: Any) -> str:
    if isinstance(obj, Raw):
        return str(obj)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        if math.isnan(obj):
            return "NaN"
        if math.isinf(obj):
            return "Infinity" if obj > 0 else "-Infinity"
        return repr(obj)
    if isinstance(obj, str):
        return json.dumps(obj)  # ensure_ascii: lone surrogates become \udxxx escapes
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ",".join(dumps(str(k)) + ":" + dumps(v) for k, v in obj.items()) + "}"
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


# ============================================================================================
# Building blocks
# ============================================================================================

# Text that is valid UTF-8 (protobuf strings must be) and valid in JSON after escaping.
SAFE_CHARS = st.characters(exclude_categories=["Cs"])
names = st.text(SAFE_CHARS, max_size=12)
small_text = st.text(SAFE_CHARS, max_size=20)
# Request ids: MLServer echoes them in response headers / trailing metadata, so the contract takes
# printable ASCII only (test_regressions.py); chaos requests send any text.
valid_ids = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
any_ids = st.text(SAFE_CHARS, max_size=20)


@cache
def unknown_datatype() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                "FP128",
                "fp64",
                "Fp32",
                "INT128",
                "UINT",
                "FLOAT",
                "float64",
                "",
                " FP64",
                "FP64 ",
                "STRING",
                "BF16",
                "TYPE_FP64",
                "int",
            ]
        ),
        small_text,
    ).filter(lambda s: s not in V2_DATATYPES)


_FLOAT_WIDTHS: dict[str, Literal[16, 32, 64]] = {"FP16": 16, "FP32": 32, "FP64": 64}


@cache
def valid_scalar(datatype: str) -> st.SearchStrategy[float]:
    """A value exactly representable in the datatype, small enough that outputs stay finite."""
    dtype = NUMERIC_DATATYPES[datatype]
    if dtype.kind == "f":
        width = _FLOAT_WIDTHS[datatype]
        tiny = float(np.finfo(dtype).smallest_subnormal)
        return st.one_of(
            st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=width),
            st.sampled_from([0.0, -0.0, tiny, -tiny, 1.0, -1.0]),
        )
    info = np.iinfo(dtype)
    return st.integers(int(info.min), int(info.max))


def _base_matrix(draw: st.DrawFn, model: ShippedModel, n: int) -> np.ndarray:
    """float64 [n, F] inside the training ranges, from a drawn seed (cheap, deterministic)."""
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    matrix: np.ndarray = rng.uniform(np.asarray(model.low), np.asarray(model.high), size=(n, len(model.features)))
    return matrix


def _as_dtype(col: np.ndarray, datatype: str) -> np.ndarray:
    dtype = NUMERIC_DATATYPES[datatype]
    if dtype.kind == "f":
        return col.astype(dtype)
    info = np.iinfo(dtype)
    if dtype.kind == "u":
        col = np.abs(col)
    clipped: np.ndarray = np.clip(np.rint(col), info.min, info.max).astype(dtype)
    return clipped


@dataclass
class Tensor:
    """A valid input tensor before it is written in either protocol."""

    name: str
    datatype: str
    values: np.ndarray  # of NUMERIC_DATATYPES[datatype], shape [n, F] (matrix) or [n] (column)

    @property
    def shape(self) -> list[int]:
        return list(self.values.shape)


@dataclass
class ValidRequest:
    target: Target
    layout: str  # "matrix" | "columns"
    tensors: list[Tensor]
    outputs: list[str] | None  # None: no outputs key / field
    ood_flags: bool | None
    extra_params: dict[str, Any]

    @property
    def model(self) -> ShippedModel:
        spec = self.target.spec
        assert spec is not None
        return spec

    def matrix(self) -> np.ndarray:
        """float64 [n, F] as the server must see it (features in manifest order)."""
        if self.layout == "matrix":
            return self.tensors[0].values.astype(np.float64)
        by_name = {t.name: t.values for t in self.tensors}
        return np.column_stack([by_name[f].astype(np.float64) for f in self.model.features])

    def expected_outputs(self) -> tuple[str, ...]:
        if not self.outputs:
            return ("predict",)
        return tuple(dict.fromkeys(self.outputs))


_DATATYPE = st.sampled_from(tuple(NUMERIC_DATATYPES))
_EXTRA_PARAMS = st.dictionaries(
    names.filter(lambda k: k not in SPECIAL_PARAMS),
    st.one_of(
        small_text, st.integers(-(2**63), 2**63 - 1), st.booleans(), st.floats(allow_nan=False, allow_infinity=False)
    ),
    max_size=2,
)
_OOD = st.sampled_from((None, None, True, False))


@st.composite
def valid_requests(draw: st.DrawFn, protocol: str, max_rows: int = 5) -> ValidRequest:
    target = draw(st.sampled_from(tuple(served_targets())))
    model = target.spec
    assert model is not None
    n = draw(st.integers(1, max_rows))
    base = _base_matrix(draw, model, n)
    layout = draw(st.sampled_from(("matrix", "columns")))
    F = len(model.features)
    first = draw(_DATATYPE)
    # Per-column datatypes and column order come from a seeded generator: a handful of draws
    # instead of ~2F (breast-cancer has 30 features), at the price of coarser shrinking.
    mix = "same" if layout == "matrix" else draw(st.sampled_from(("same", "mixed")))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if mix == "same":
        datatypes = [first] * F
    else:
        datatypes = [first] + [str(d) for d in rng.choice(tuple(NUMERIC_DATATYPES), size=F - 1)]
    cols = [_as_dtype(base[:, j], datatypes[j]) for j in range(F)]
    # A few cells overridden with values drawn by hypothesis (shrinkable; hits -0.0, extremes).
    for _ in range(draw(st.integers(0, 3))):
        r, c = draw(st.integers(0, n - 1)), draw(st.integers(0, F - 1))
        cols[c] = cols[c].copy()
        cols[c][r] = draw(valid_scalar(datatypes[c]))
    if layout == "matrix":
        values = np.column_stack(cols).astype(NUMERIC_DATATYPES[datatypes[0]])
        tensors = [Tensor(draw(names), datatypes[0], values)]
    else:
        order = draw(st.sampled_from(("manifest", "reversed", "shuffled")))
        index = list(range(F))
        if order == "reversed":
            index.reverse()
        elif order == "shuffled":
            rng.shuffle(index)
        tensors = [Tensor(model.features[j], datatypes[j], cols[j]) for j in index]
    outputs = draw(st.one_of(st.none(), st.lists(st.sampled_from(model.outputs), max_size=3)))
    ood = draw(_OOD)
    extra = draw(_EXTRA_PARAMS)
    return ValidRequest(target, layout, tensors, outputs, ood, extra)


# ============================================================================================
# REST
# ============================================================================================


class _DraftShape:
    """Rows and features of the valid request a draft (REST or gRPC) was built from."""

    valid: ValidRequest
    # (row, feature index, value): cells a mutation changed on purpose, for the OK oracle
    x_overrides: list[tuple[int, int, float]]

    @property
    def F(self) -> int:
        return len(self.valid.model.features)

    @property
    def n(self) -> int:
        return int(self.valid.tensors[0].values.shape[0])

    def oracle(self, expect: str) -> tuple[np.ndarray | None, tuple[str, ...]]:
        """For an OK case: the float64 matrix the server must predict on (the valid request's,
        with the cells the mutations changed on purpose) and the outputs it must return."""
        if expect != OK:
            return None, ()
        x = self.valid.matrix()
        for r, c, value in self.x_overrides:
            x[r, c] = value
        return x, self.valid.expected_outputs()


@dataclass
class RestDraft(_DraftShape):
    """A REST body as JSON objects, mutable by the mutation catalogue."""

    valid: ValidRequest
    target: Target
    body: Any  # a JSON object, until a mutation puts any other JSON value in its place
    nested: bool  # matrix data written as rows
    content_type: str | None = "application/json"
    raw: bytes | None = None  # when set, sent instead of the body
    x_overrides: list[tuple[int, int, float]] = field(default_factory=list)

    def encode(self) -> bytes:
        return self.raw if self.raw is not None else dumps(self.body).encode("utf-8")


def _rest_draft(draw: st.DrawFn, valid: ValidRequest) -> RestDraft:
    nested = draw(st.booleans())
    inputs = []
    for t in valid.tensors:
        if valid.layout == "matrix":
            data = t.values.tolist() if nested else t.values.ravel().tolist()
        else:
            data = t.values.tolist()
        inputs.append({"name": t.name, "shape": t.shape, "datatype": t.datatype, "data": data})
    body: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        body["id"] = draw(valid_ids)
    params = dict(valid.extra_params)
    if valid.ood_flags is not None:
        params["ood_flags"] = valid.ood_flags
    if bool(params) or draw(st.booleans()):
        body["parameters"] = params
    if valid.outputs is not None:
        body["outputs"] = [{"name": o} for o in valid.outputs]
    return RestDraft(valid, valid.target, body, nested)


@cache
def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        small_text,
        st.sampled_from(list(V2_DATATYPES) + ["predict", "predict_proba", "X", "age", "inputs"]),
        st.sampled_from(
            [
                Raw("1e400"),
                Raw("-1e400"),
                Raw("-0.0"),
                Raw("1E+999"),
                Raw("NaN"),
                Raw("5e-324"),
                Raw("1e-400"),
                Raw(str(2**64)),
                Raw(str(-(2**63) - 1)),
                Raw("123456789012345678901234567890"),
            ]
        ),
    )
    keys = st.one_of(
        st.sampled_from(
            [
                "name",
                "shape",
                "datatype",
                "data",
                "parameters",
                "inputs",
                "outputs",
                "id",
                "content_type",
                "headers",
                "ood_flags",
                "pipeline_traceparent",
            ]
        ),
        names,
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=4)),
        max_leaves=max_leaves,
    )


def _cell_path(draft: RestDraft, draw: st.DrawFn) -> tuple[dict[str, Any], Callable[[Any], None], int, int]:
    """A random cell of the valid data: (its tensor, a setter, row, column index)."""
    v = draft.valid
    r = draw(st.integers(0, draft.n - 1))
    t: dict[str, Any]
    if v.layout == "matrix":
        t = draft.body["inputs"][0]
        c = draw(st.integers(0, draft.F - 1))
        if draft.nested:

            def set_in_row(value: Any, t: dict[str, Any] = t, r: int = r, c: int = c) -> None:
                t["data"][r][c] = value

            return t, set_in_row, r, c

        def set_in_flat(value: Any, t: dict[str, Any] = t, r: int = r, c: int = c) -> None:
            t["data"][r * draft.F + c] = value

        return t, set_in_flat, r, c
    i = draw(st.integers(0, len(draft.body["inputs"]) - 1))
    t = draft.body["inputs"][i]

    def set_in_column(value: Any, t: dict[str, Any] = t, r: int = r) -> None:
        t["data"][r] = value

    return t, set_in_column, r, v.model.features.index(t["name"])


def _bad_value_for(datatype: str, draw: st.DrawFn) -> Any:
    """A number outside the datatype's range (with margin: 64-bit checks go through float64)."""
    dtype = NUMERIC_DATATYPES[datatype]
    if dtype.kind == "f":
        limit = float(np.finfo(dtype).max)
        if datatype == "FP64":
            return Raw(draw(st.sampled_from(["1e400", "-1e400", "1e309"])))
        return draw(st.sampled_from([limit * 2, -limit * 2, limit * 1.5]))
    info = np.iinfo(dtype)
    if dtype.itemsize == 8:
        return draw(st.sampled_from([2**65, -(2**64), 2**70] if dtype.kind == "i" else [2**65, -1, -(2**40)]))
    return draw(st.sampled_from([int(info.max) + 1, int(info.min) - 1, int(info.max) * 4 + 3]))


# ---- the REST mutation catalogue: each returns (expectation, note) ---------------------------


def m_cell_special(draft: RestDraft, draw: st.DrawFn) -> tuple[str, str]:
    t, setter, r, c = _cell_path(draft, draw)
    kind = draw(
        st.sampled_from(
            [
                "nan",
                "inf",
                "null",
                "string",
                "list",
                "empty-list",
                "object",
                "bool",
                "neg-zero",
                "out-of-range",
                "fraction",
                "huge-finite",
                "subnormal",
                "big-int-token",
                "exp-float",
            ]
        )
    )
    dtype = NUMERIC_DATATYPES[t["datatype"]]
    if kind == "nan":
        setter(Raw(draw(st.sampled_from(["NaN", "nan", "-NaN"]))))
        return REJECT, "cell NaN literal"
    if kind == "inf":
        setter(Raw(draw(st.sampled_from(["Infinity", "-Infinity", "inf", "1e400", "-1e400"]))))
        return REJECT, "cell Infinity / 1e400"
    if kind == "null":
        setter(None)
        return REJECT, "cell null"
    if kind == "string":
        setter(draw(st.one_of(small_text, st.sampled_from(["1.0", "0", "NaN", ""]))))
        return REJECT, "cell string"
    if kind == "list":
        setter(draw(st.lists(st.floats(-1, 1), min_size=1, max_size=3)))
        return REJECT, "cell list"
    if kind == "empty-list":
        setter([])
        return REJECT, "cell []"
    if kind == "object":
        setter(draw(st.dictionaries(names, st.integers(), max_size=2)))
        return REJECT, "cell object"
    if kind == "bool":
        setter(draw(st.booleans()))
        return ANY, "cell boolean (contract unclear: see test_regressions)"
    if kind == "neg-zero":
        setter(-0.0 if dtype.kind == "f" else Raw("-0"))
        _set_valid_cell(draft, r, c, 0.0)
        return OK, "cell -0.0"
    if kind == "out-of-range":
        setter(_bad_value_for(t["datatype"], draw))
        return REJECT, f"cell out of range for {t['datatype']}"
    if kind == "fraction":
        if dtype.kind == "f":
            setter(0.5)
            _set_valid_cell(draft, r, c, 0.5)
            return OK, "cell 0.5"
        setter(draw(st.sampled_from([0.5, -1.25, 3.000001])))
        return REJECT, f"cell fraction for {t['datatype']}"
    if kind == "huge-finite":
        setter(draw(st.sampled_from([1e300, -1e300, 1.7976931348623157e308, 1e38, 2.0**64])))
        return ANY, "cell huge finite value (outputs may overflow)"
    if kind == "subnormal":
        token = draw(st.sampled_from(["5e-324", "1e-400", "-1e-400", "4.9e-324"]))
        setter(Raw(token))
        if dtype.kind != "f":
            return ANY, "cell subnormal/underflow for an integer datatype"
        _set_valid_cell(draft, r, c, float(token))
        return OK, "cell subnormal/underflow"
    if kind == "big-int-token":
        setter(Raw(draw(st.sampled_from([str(10**30), str(-(10**30)), str(2**64), "1" + "0" * 400]))))
        return ANY, "cell integer beyond 64 bits"
    setter(Raw(draw(st.sampled_from(["1E2", "1e+2", "-0e0", "0.0e-0"]))))
    return ANY, "cell exponent notation"


def _set_valid_cell(draft: RestDraft, r: int, c: int, value: float) -> None:
    """Record an intended numeric change of a cell (row, feature index) in the OK oracle (x)."""
    draft.x_overrides.append((r, c, value))


def _other_shapes(old: list[int], huge: bool = False) -> st.SearchStrategy[list[int]]:
    """Shapes to put in place of `old`: random, past the row cap, empty, negative, one more
    dimension, reversed; `huge`: also one whose element count overflows int64."""
    return st.one_of(
        st.lists(st.integers(-3, 12), max_size=4),
        st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=3),
        st.just([MAX_ROWS + 1] + old[1:]),
        st.just([0] + old[1:]),
        st.just([-1] + old[1:]),
        *([st.just([2**62, 2**62])] if huge else []),
        st.just(old + [1]),
        st.just(old[::-1]),
    )


def _same_values(draft: _DraftShape, old: list[int], new: list[int]) -> bool:
    """Whether `new` reads the same as `old`: unchanged, or a column [N] sent as [N, 1] (PandasCodec's
    layout, which the contract takes under a feature's name)."""
    return new == old or (draft.valid.layout == "columns" and new == [*old, 1])


def m_shape(draft: RestDraft, draw: st.DrawFn) -> tuple[str, str]:
    t = draw(st.sampled_from(draft.body["inputs"]))
    old = list(t["shape"])
    new = draw(_other_shapes(old))
    t["shape"] = new
    if _same_values(draft, old, new):
        return OK, "shape unchanged or [N, 1]"
    return REJECT, "shape changed"


def m_shape_types(draft: RestDraft, draw: st.DrawFn) -> tuple[str, str]:
    t = draw(st.sampled_from(draft.body["inputs"]))
    i = draw(st.integers(0, len(t["shape"]) - 1))
    choice = draw(st.sampled_from(["bad", "bad", "bad", "lax"]))
    if choice == "lax":
        # pydantic's lax mode reads "2", 2.0 and true as integers: fine if they equal the dimension
        t["shape"][i] = draw(st.sampled_from([str(t["shape"][i]), float(t["shape"][i])]))
        return ANY, "shape element a numeric string / integral float"
    bad: object = draw(st.sampled_from([1.5, "x", "", None, [], {}, Raw("1e400"), Raw(str(2**70)), -0.5, Raw("NaN")]))
    t["shape"][i] = bad
    return REJECT, "shape element not an integer"


def m_shape_not_list(draft: RestDraft, draw: st.DrawFn) -> tuple[str, str]:
    t = draw(st.sampled_from(draft.body["inputs"]))
    t["shape"] = draw(st.one_of(st.integers(), small_text, st.none(), st.just({})))
    return REJECT, "shape not a list"


def m_datatype(draft: RestDraft, draw: st.DrawFn) -> tuple[str, str]:
    t = draw(st.sampled_from(draft.body["inputs"]))
    choice = draw(st.sampled_from(["numeric", "bool-bytes", "unknown", "not-a-string"]))
    if choice == "numeric":
        t["datatype"] = draw(st.sampled_from(list(NUMERIC_DATATYPES)))
        return ANY, "datatype changed to another numeric type"
    if choice == "bool-bytes":
        t["datatype"] = draw(st.sampled_from(["BOOL", "BYTES"]))
        return REJECT, "datatype BOOL/BYTES"
    if choice == "unknown":
        t["datatype"] = draw(unknown_datatype())
        return REJECT, "unknown datatype"
    t["datatype"] = draw(st.one_of(st.integers(), st.none(), st.just([]), st.just({})))
    return REJECT, "datatype not a string"


def m_names(draft: RestDraft, draw: st.DrawFn) -> tuple[str, str]:
    v = draft.valid
    inputs = draft.body["inputs"]
    if v.layout == "matrix":
        choice = draw(st.sampled_from(["rename", "not-a-string", "surrogate"]))
        if choice == "rename":
            inputs[0]["name"] = draw(names)
            return OK, "matrix renamed"
        if choice == "surrogate":
            inputs[0]["name"] = "X\ud800"
            return REJECT, "name with a lone surrogate"
        inputs[0]["name"] = draw(st.one_of(st.integers(), st.none(), st.just([])))
        return REJECT, "name not a string"
    choice = draw(st.sampled_from(["unknown", "duplicate", "drop", "extra", "not-a-string"]))
    i = draw(st.integers(0, len(inputs) - 1))
    if choice == "unknown":
        inputs[i]["name"] = draw(names.filter(lambda s: s not in v.model.features))
        return REJECT, "column renamed to an unknown feature"
    if choice == "duplicate":
        inputs.append(dict(inputs[i]))
        return REJECT, "column duplicated"
    if choice == "drop":
        inputs.pop(i)
        return REJECT, "column dropped"
    if choice == "extra":
        inputs.append({**inputs[i], "name": draw(names.filter(lambda s: s not in v.model.features))})
        return REJECT, "extra unknown column"
    inputs[i]["name"] = draw(st.one_of(st.integers(), st.none(), st.just({})))
    return REJECT, "column name not a string"


def m_data_container(draft: RestDraft, draw: st.DrawFn) -> tuple[str, str]:
    t = draw(st.sampled_from(draft.body["inputs"]))
    choice = draw(
        st.sampled_from(
            [
                "scalar",
                "string",
                "null",
                "object",
                "wrap",
                "deep",
                "drop-value",
                "add-value",
                "drop-row",
                "add-row",
                "missing",
            ]
        )
    )
    data = t["data"]
    if choice == "scalar":
        t["data"] = draw(st.one_of(st.integers(-5, 5), st.floats(-5, 5)))
        if math.prod(t["shape"]) == 1:  # one value for a one-value tensor: lenient, not wrong
            return ANY, "data a scalar for a single value"
        return REJECT, "data a scalar"
    if choice == "string":
        t["data"] = draw(small_text)
        return REJECT, "data a string"
    if choice == "null":
        t["data"] = None
        return REJECT, "data null"
    if choice == "object":
        t["data"] = draw(st.dictionaries(names, st.integers(), max_size=3))
        return REJECT, "data an object"
    if choice == "wrap":
        t["data"] = [data]
        if draft.valid.layout == "matrix" and not draft.nested and draft.n == 1:
            return OK, "flat data of one row wrapped: the nested form"
        return REJECT, "data wrapped in one more list"
    if choice == "deep":
        depth = draw(st.sampled_from([3, 10, 64, 200, 600, 5000]))
        t["data"] = Raw("[" * depth + "1" + "]" * depth)
        return REJECT, f"data nested {depth} deep"
    if choice == "missing":
        del t["data"]
        return REJECT, "data missing"
    nested_rows = isinstance(data[0], list)
    if choice in ("drop-value", "add-value"):
        row = data[draw(st.integers(0, len(data) - 1))] if nested_rows else data
        if choice == "drop-value":
            row.pop()
        else:
            row.append(draw(st.floats(-1, 1)))
        return REJECT, f"data {choice}"
    if choice == "drop-row":
        if nested_rows:
            data.pop()
        else:
            del data[-(len(data) // draft.n) :]
        return REJECT, "data row dropped"
    data.append(list(data[0]) if nested_rows else data[0])
    return REJECT, "data row added"


def m_outputs(draft: RestDraft, draw: st.DrawFn) -> tuple[str, str]:
    model = draft.valid.model
    choice = draw(
        st.sampled_from(["unknown", "proba-on-regressor", "not-a-list", "bad-entry", "name-not-string", "params"])
    )
    if choice == "proba-on-regressor" and model.kind == "regressor":
        draft.body["outputs"] = [{"name": "predict_proba"}]
        return REJECT, "predict_proba from a regressor"
    if choice in ("unknown", "proba-on-regressor"):
        bad = draw(names.filter(lambda s: s not in model.outputs))
        draft.body["outputs"] = [{"name": o} for o in model.outputs[:1]] + [{"name": bad}]
        return REJECT, "unknown output"
    if choice == "not-a-list":
        draft.body["outputs"] = draw(st.one_of(small_text, st.integers(), st.just({"name": "predict"})))
        return REJECT, "outputs not a list"
    if choice == "bad-entry":
        draft.body["outputs"] = [draw(st.one_of(small_text, st.integers(), st.none(), st.just([])))]
        return REJECT, "outputs entry not an object"
    if choice == "name-not-string":
        draft.body["outputs"] = [{"name": draw(st.one_of(st.integers(), st.none(), st.just([])))}]
        return REJECT, "output name not a string"
    draft.body["outputs"] = [{"name": "predict", "parameters": draw(json_values(8))}]
    return ANY, "output parameters random"


def m_parameters(draft: RestDraft, draw: st.DrawFn) -> tuple[str, str]:
    where = draw(st.sampled_from(["request", "input", "output"]))
    if where == "request":
        holder = draft.body
    elif where == "input":
        holder = draw(st.sampled_from(draft.body["inputs"]))
    else:
        holder = draft.body.setdefault("outputs", [{"name": "predict"}])
        if not holder:
            holder.append({"name": "predict"})
        holder = holder[0]
    choice = draw(st.sampled_from(["special", "random", "not-an-object"]))
    if choice == "not-an-object":
        holder["parameters"] = draw(st.one_of(st.integers(), small_text, st.just([]), st.none()))
        return ANY, f"{where} parameters not an object"
    params = holder.setdefault("parameters", {})
    if not isinstance(params, dict):
        params = holder["parameters"] = {}
    if choice == "random":
        params.update(draw(st.dictionaries(names, json_values(8), min_size=1, max_size=3)))
        return ANY, f"{where} parameters random"
    key = draw(st.sampled_from(SPECIAL_PARAMS))
    value = draw(json_values(6))
    params[key] = value
    if where == "request" and key == "ood_flags" and value is not None and not isinstance(value, bool):
        return REJECT, "ood_flags not a boolean"
    if key == "content_type" and value is not None and not isinstance(value, str):
        return REJECT, f"{where} content_type not a string"
    if key == "headers" and value is not None and not isinstance(value, dict):
        return REJECT, f"{where} headers not an object"
    return ANY, f"{where} parameter {key} random"


def _other_target(spec: ShippedModel, draw: st.DrawFn, odd_names: list[str]) -> tuple[str, Target, str]:
    """(expectation, target, note): an unknown model, another version of this one, or another
    served model (which cannot take this one's features)."""
    choice = draw(st.sampled_from(["unknown-model", "unknown-version", "other-model"]))
    if choice == "unknown-model":
        target = Target(draw(st.one_of(names, st.sampled_from(odd_names))), draw(st.sampled_from([None, "1", "2"])))
        return (ANY if target.served else REJECT), target, "unknown model"
    if choice == "unknown-version":
        version = draw(
            st.one_of(
                st.sampled_from(["0", "3", "01", "1.0", "v1", "-1", " 1", "latest"]), names.filter(lambda s: s != "")
            )
        )
        target = Target(spec.name, version)
        return (OK if target.served else REJECT), target, "version changed"
    other = [t for t in served_targets() if t.model != spec.name]
    return REJECT, draw(st.sampled_from(other)), "request for another model's features"


def m_target(draft: RestDraft, draw: st.DrawFn) -> tuple[str, str]:
    expect, draft.target, note = _other_target(
        draft.valid.model, draw, ["Diabetes", "diabetes ", "diabetes/1", "..", "%2e%2e", "breast_cancer"]
    )
    return expect, note


def m_top_level(draft: RestDraft, draw: st.DrawFn) -> tuple[str, str]:
    choice = draw(
        st.sampled_from(
            [
                "id-not-string",
                "unknown-key",
                "inputs-missing",
                "inputs-empty",
                "inputs-not-list",
                "input-not-object",
                "field-missing",
                "body-not-object",
                "content-type",
            ]
        )
    )
    b = draft.body
    if choice == "id-not-string":
        b["id"] = draw(st.one_of(st.integers(), st.none(), st.just([]), st.just({})))
        return (ANY if b["id"] is None else REJECT), "id not a string"
    if choice == "unknown-key":
        b[draw(names.filter(lambda k: k not in ("inputs", "outputs", "parameters", "id")))] = draw(json_values(6))
        return ANY, "unknown top-level key"
    if choice == "inputs-missing":
        del b["inputs"]
        return REJECT, "inputs missing"
    if choice == "inputs-empty":
        b["inputs"] = []
        return REJECT, "inputs empty"
    if choice == "inputs-not-list":
        b["inputs"] = draw(st.one_of(st.just(b["inputs"][0]), small_text, st.integers(), st.none()))
        return REJECT, "inputs not a list"
    if choice == "input-not-object":
        b["inputs"][0] = draw(st.one_of(small_text, st.integers(), st.none(), st.just([])))
        return REJECT, "input entry not an object"
    if choice == "field-missing":
        del b["inputs"][0][draw(st.sampled_from(["name", "shape", "datatype", "data"]))]
        return REJECT, "input field missing"
    if choice == "body-not-object":
        draft.body = draw(st.one_of(st.just(b["inputs"]), st.just([b]), small_text, st.integers(), st.none()))
        return REJECT, "body not an object"
    draft.content_type = draw(
        st.sampled_from(
            [
                None,
                "text/plain",
                "application/x-www-form-urlencoded",
                "application/json; charset=utf-8",
                "application/octet-stream",
                "multipart/form-data",
            ]
        )
    )
    return ANY, f"content-type {draft.content_type}"


REST_MUTATIONS = [
    m_cell_special,
    m_shape,
    m_shape_types,
    m_shape_not_list,
    m_datatype,
    m_names,
    m_data_container,
    m_outputs,
    m_parameters,
    m_target,
    m_top_level,
]


D = TypeVar("D", bound=_DraftShape)
Mutation = Callable[[D, st.DrawFn], tuple[str, str]]  # the draft changed in place -> (expectation, note)


def _mutate(draft: D, draw: st.DrawFn, mutations: Sequence[Mutation[D]]) -> tuple[str, list[str]]:
    """No mutation (OK), one from the catalogue (its expectation) or 2-4 stacked (ANY)."""
    mode = draw(st.sampled_from(("valid", "one", "one", "one", "one", "stacked")))
    if mode == "valid":
        return OK, []
    if mode == "one":
        expect, note = draw(st.sampled_from(tuple(mutations)))(draft, draw)
        return expect, [note]
    notes = []
    for mutation in draw(st.lists(st.sampled_from(tuple(mutations)), min_size=2, max_size=4)):
        try:
            _, note = mutation(draft, draw)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            note = f"{mutation.__name__} not applicable"  # an earlier mutation broke its path
        notes.append(note)
    return ANY, notes


def _rest_case_from(draft: RestDraft, expect: str, notes: list[str], valid: ValidRequest) -> RestCase:
    x, outputs = draft.oracle(expect)
    return RestCase(
        protocol="rest",
        target=draft.target,
        expect=expect,
        notes=tuple(notes),
        x=x,
        outputs=outputs,
        flags=bool(valid.ood_flags),
        body=draft.encode(),
        content_type=draft.content_type,
    )


@st.composite
def rest_structured(draw: st.DrawFn) -> RestCase:
    valid = draw(valid_requests("rest"))
    draft = _rest_draft(draw, valid)
    expect, notes = _mutate(draft, draw, REST_MUTATIONS)
    return _rest_case_from(draft, expect, notes, valid)


@st.composite
def rest_chaos(draw: st.DrawFn) -> RestCase:
    """Arbitrary JSON shaped like a V2 request (or not) to any target."""
    target = draw(st.one_of(st.sampled_from(served_targets()), st.builds(Target, names, st.none())))
    tensor = st.fixed_dictionaries(
        {},
        optional={
            "name": st.one_of(names, json_values(4)),
            "shape": st.one_of(
                st.lists(st.integers(-3, 40), max_size=4), st.lists(st.integers(), max_size=3), json_values(4)
            ),
            "datatype": st.one_of(st.sampled_from(V2_DATATYPES), unknown_datatype(), json_values(2)),
            "data": json_values(30),
            "parameters": st.one_of(
                st.dictionaries(st.one_of(st.sampled_from(SPECIAL_PARAMS), names), json_values(4), max_size=3),
                json_values(3),
            ),
        },
    )
    body = draw(
        st.one_of(
            st.fixed_dictionaries(
                {"inputs": st.lists(tensor, max_size=4)},
                optional={"outputs": json_values(6), "parameters": json_values(6), "id": json_values(2)},
            ),
            json_values(25),
        )
    )
    return RestCase(protocol="rest", target=target, expect=ANY, notes=("chaos json",), body=dumps(body).encode("utf-8"))


@st.composite
def rest_raw_text(draw: st.DrawFn) -> RestCase:
    """Malformed bodies: truncated or corrupted valid JSON, random bytes, odd tokens."""
    valid = draw(valid_requests("rest", max_rows=2))
    draft = _rest_draft(draw, valid)
    text = dumps(draft.body).encode("utf-8")
    choice = draw(
        st.sampled_from(
            [
                "truncate",
                "insert",
                "replace",
                "binary",
                "invalid-utf8",
                "empty",
                "bom",
                "tokens",
                "trailing",
                "duplicate-key",
            ]
        )
    )
    expect = REJECT
    if choice == "truncate":
        body = text[: draw(st.integers(0, len(text) - 1))]
    elif choice == "insert":
        i = draw(st.integers(0, len(text)))
        body = text[:i] + draw(st.binary(min_size=1, max_size=4)) + text[i:]
        expect = ANY
    elif choice == "replace":
        i = draw(st.integers(0, len(text) - 1))
        body = text[:i] + draw(st.binary(min_size=1, max_size=1)) + text[i + 1 :]
        expect = ANY
    elif choice == "binary":
        body = draw(st.binary(max_size=200))
    elif choice == "invalid-utf8":
        i = draw(st.integers(0, len(text)))
        body = text[:i] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])) + text[i:]
    elif choice == "empty":
        body = draw(st.sampled_from([b"", b" ", b"\n", b"{}", b"[]", b"null", b"0", b'""']))
    elif choice == "bom":
        body = b"\xef\xbb\xbf" + text
        expect = ANY
    elif choice == "tokens":
        body = draw(
            st.sampled_from(
                [
                    b"NaN",
                    b"Infinity",
                    b"1e400",
                    b"{",
                    b"}",
                    b"[",
                    b"{]",
                    b'{"inputs": [}',
                    b'{"inputs": NaN}',
                    b"{'inputs': []}",
                    b'{"inputs": [1,]}',
                    b"\x00",
                    b'{"inputs": [] "outputs": []}',
                ]
            )
        )
    elif choice == "trailing":
        body = text + draw(st.sampled_from([b"}", b",", b"x", b"{}", b"\x00"]))
    else:
        body = b'{"inputs": [], ' + text[1:]  # the later "inputs" wins in most parsers
        expect = ANY
    return RestCase(protocol="rest", target=valid.target, expect=expect, notes=(f"raw text: {choice}",), body=body)


@st.composite
def _weighted(draw: st.DrawFn, *families: tuple[int, st.SearchStrategy[T]]) -> T:
    """Draw from one family, chosen with the given integer weights (shrinks to the first)."""
    index = draw(st.sampled_from([i for i, (w, _) in enumerate(families) for _ in range(w)]))
    return draw(families[index][1])


@cache
def rest_cases() -> st.SearchStrategy[RestCase]:
    return _weighted((3, rest_structured()), (1, rest_chaos()), (1, rest_raw_text()), (1, rest_binary()))


# ============================================================================================
# REST: V2's binary tensor extension (runtime.edge.binary; tritonclient.http's default)
# ============================================================================================

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class BinaryDraft:
    """A binary body before it is written: the JSON header's object, each binary input's bytes."""

    document: dict[str, Any]
    chunks: list[bytes]
    header_length: str | None = None  # sent instead of the header's true length
    send_length: bool = True  # False: no Inference-Header-Content-Length at all
    tail: bytes = b""  # bytes after the last input's
    cut: int = 0  # bytes cut off the end of the body

    def binary_inputs(self) -> list[dict[str, Any]]:
        return [i for i in self.document["inputs"] if "binary_data_size" in i.get("parameters", {})]

    def encode(self) -> tuple[bytes, dict[str, str]]:
        header = dumps(self.document).encode("utf-8")
        body = header + b"".join(self.chunks) + self.tail
        body = body[: len(body) - self.cut]
        length = self.header_length if self.header_length is not None else str(len(header))
        return body, ({HEADER_LENGTH: length} if self.send_length else {})


def _binary_draft(
    draw: st.DrawFn, inputs: list[dict[str, Any]], raw: list[bytes], rest: dict[str, Any], forced: set[int]
) -> BinaryDraft:
    """Inputs in binary where `forced` or a draw says so (at least one), the others in JSON."""
    chosen = [i in forced or draw(st.booleans()) for i in range(len(inputs))]
    chosen[0] = chosen[0] or not any(chosen)
    chunks = []
    for item, chunk, binary in zip(inputs, raw, chosen):
        if binary:
            del item["data"]
            item["parameters"] = {**item.get("parameters", {}), "binary_data_size": len(chunk)}
            chunks.append(chunk)
    return BinaryDraft({**rest, "inputs": inputs}, chunks)


BinaryMutation = Callable[[BinaryDraft, st.DrawFn], str]


def b_size(draft: BinaryDraft, draw: st.DrawFn) -> str:
    item = draw(st.sampled_from(draft.binary_inputs()))
    size = item["parameters"]["binary_data_size"]
    item["parameters"]["binary_data_size"] = draw(st.integers(0, size + 16).filter(lambda k: k != size))
    return "binary_data_size does not match shape x datatype"


def b_size_value(draft: BinaryDraft, draw: st.DrawFn) -> str:
    item = draw(st.sampled_from(draft.binary_inputs()))
    item["parameters"]["binary_data_size"] = draw(st.sampled_from(["16", -1, True, 1.5, None, [8]]))
    return "binary_data_size not a number of bytes"


def b_cut(draft: BinaryDraft, draw: st.DrawFn) -> str:
    draft.cut = draw(st.integers(1, sum(map(len, draft.chunks))))
    return "the last binary input runs past the end of the body"


def b_tail(draft: BinaryDraft, draw: st.DrawFn) -> str:
    draft.tail = draw(st.binary(min_size=1, max_size=16))
    return "bytes after the last binary input"


def b_header_past_body(draft: BinaryDraft, draw: st.DrawFn) -> str:
    body, _ = draft.encode()
    draft.header_length = str(len(body) + draw(st.integers(1, 2**40)))
    return "a header length past the body"


def b_header_off(draft: BinaryDraft, draw: st.DrawFn) -> str:
    header = len(dumps(draft.document).encode("utf-8"))
    draft.header_length = str(header + draw(st.integers(-header, sum(map(len, draft.chunks))).filter(bool)))
    return "a header length inside the JSON or the binary data"


def b_header_not_a_number(draft: BinaryDraft, draw: st.DrawFn) -> str:
    draft.header_length = draw(st.sampled_from(["-1", "1e3", "0x10", "twelve", "12 13", "+12"]))
    return "a header length that is not a number"


def b_no_header(draft: BinaryDraft, draw: st.DrawFn) -> str:
    draft.send_length = False
    return "binary inputs without a header length"


def b_data_too(draft: BinaryDraft, draw: st.DrawFn) -> str:
    item = draw(st.sampled_from(draft.binary_inputs()))
    item["data"] = [0]
    return "a binary input with data as well"


def b_datatype(draft: BinaryDraft, draw: st.DrawFn) -> str:
    item = draw(st.sampled_from(draft.binary_inputs()))
    item["datatype"] = draw(st.one_of(st.sampled_from(["BOOL", "BF16", "FP8", "STRING"]), unknown_datatype()))
    return "a binary input of a datatype without a size"


def b_output_flag(draft: BinaryDraft, draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        draft.document["parameters"] = {**draft.document.get("parameters", {}), "binary_data_output": "yes"}
    else:
        draft.document["outputs"] = [
            {"name": "predict", "parameters": {"binary_data": draw(st.sampled_from([1, "true", None]))}}
        ]
    return "binary_data(_output) not a boolean"


BINARY_MUTATIONS: list[BinaryMutation] = [
    b_size,
    b_size_value,
    b_cut,
    b_tail,
    b_header_past_body,
    b_header_off,
    b_header_not_a_number,
    b_no_header,
    b_data_too,
    b_datatype,
    b_output_flag,
]


def _binary_case(draw: st.DrawFn, draft: BinaryDraft, case: RestCase) -> RestCase:
    """The case with the draft's body, a third of the time broken by one mutation (then a certain 4xx)."""
    if draw(st.integers(0, 2)) == 0:
        note = draw(st.sampled_from(BINARY_MUTATIONS))(draft, draw)
        case.expect, case.notes, case.x, case.outputs, case.answers, case.message = REJECT, (note,), None, (), None, ""
    else:
        case.notes = (*case.notes, "binary inputs")
    case.body, case.headers = draft.encode()
    return case


@st.composite
def rest_binary(draw: st.DrawFn) -> RestCase:
    """A valid request for a shipped model with some or all inputs in binary, or one broken so."""
    valid = draw(valid_requests("rest"))
    rest = _rest_draft(draw, valid).body
    raw = [t.values.astype(raw_dtype(t.datatype)).tobytes() for t in valid.tensors]
    draft = _binary_draft(draw, rest.pop("inputs"), raw, rest, set())
    case = _rest_case_from(RestDraft(valid, valid.target, {}, False), OK, [], valid)
    # tritonclient.http sends no content type; others send JSON's or octet-stream.
    case.content_type = draw(st.sampled_from((None, "application/json", "application/octet-stream")))
    return _binary_case(draw, draft, case)


@st.composite
def mixed_binary_cases(draw: st.DrawFn) -> RestCase:
    """The model with string columns: BYTES columns length-prefixed, gaps NaN (as gRPC's raw
    contents carry them), some columns binary and some JSON; or broken as rest_binary breaks them."""
    mixed, expect, notes, message = _mixed_case(draw, "grpc")
    inputs = [
        {"name": c.name, "shape": c.shape, "datatype": c.datatype, "data": _rest_data(c, False)} for c in mixed.columns
    ]
    # A value JSON would change (NaN becomes null, bytes that are not UTF-8 cannot be sent): binary.
    forced = {i for i, c in enumerate(mixed.columns) if any(isinstance(v, bytes) or _nan(v) for v in c.values)}
    rest: dict[str, Any] = {"outputs": [{"name": o} for o in mixed.outputs]} if mixed.outputs is not None else {}
    draft = _binary_draft(draw, inputs, [_raw_contents(c) for c in mixed.columns], rest, forced)
    case = RestCase("rest", mixed.target, expect, notes, **_expected(mixed, expect), message=message)
    return _binary_case(draw, draft, case)


# ============================================================================================
# gRPC
# ============================================================================================


@dataclass
class GrpcDraft(_DraftShape):
    valid: ValidRequest
    target: Target
    request: Any  # ModelInferRequest (mutable)
    raw_mode: bool
    x_overrides: list[tuple[int, int, float]] = field(default_factory=list)


def _set_param(params: Any, key: str, kind: str, value: Any) -> None:
    p = params[key]
    setattr(p, kind, value)


@cache
def param_values(kind: str) -> st.SearchStrategy[Any]:
    return {
        "bool_param": st.booleans(),
        "int64_param": st.integers(-(2**63), 2**63 - 1),
        "string_param": small_text,
        "double_param": st.floats(),
        "uint64_param": st.integers(0, 2**64 - 1),
    }[kind]


def _grpc_draft(draw: st.DrawFn, valid: ValidRequest) -> GrpcDraft:
    pb = _pb()
    raw_mode = draw(st.booleans()) or any(t.datatype == "FP16" for t in valid.tensors)
    req = pb.ModelInferRequest(model_name=valid.target.model, model_version=valid.target.version or "")
    if draw(st.booleans()):
        req.id = draw(valid_ids)
    for t in valid.tensors:
        tensor = req.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        flat = t.values.ravel()
        if raw_mode:
            req.raw_input_contents.append(flat.astype(raw_dtype(t.datatype)).tobytes())
        else:
            getattr(tensor.contents, GRPC_CONTENTS_FIELD[t.datatype]).extend(flat.tolist())
    for key, value in valid.extra_params.items():
        if isinstance(value, bool):
            req.parameters[key].bool_param = value
        elif isinstance(value, int):
            req.parameters[key].int64_param = value
        elif isinstance(value, float):
            req.parameters[key].double_param = value
        else:
            req.parameters[key].string_param = value
    if valid.ood_flags is not None:
        req.parameters["ood_flags"].bool_param = valid.ood_flags
    for o in valid.outputs or ():
        req.outputs.add(name=o)
    return GrpcDraft(valid, valid.target, req, raw_mode)


def _raw_index(draft: GrpcDraft, tensor_index: int) -> int:
    return sum(1 for t in draft.request.inputs[:tensor_index] if not t.HasField("contents"))


def g_cell_special(draft: GrpcDraft, draw: st.DrawFn) -> tuple[str, str]:
    v = draft.valid
    i = draw(st.integers(0, len(draft.request.inputs) - 1))
    t = draft.request.inputs[i]
    r = draw(st.integers(0, draft.n - 1))
    width = draft.F if v.layout == "matrix" else 1
    c = draw(st.integers(0, width - 1))
    flat = r * width + c
    col = c if v.layout == "matrix" else v.model.features.index(t.name)
    dtype = NUMERIC_DATATYPES[t.datatype]
    kinds = ["neg-zero", "out-of-range"] + (["nan", "inf", "huge-finite", "subnormal"] if dtype.kind == "f" else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "nan":
        value = draw(st.sampled_from([float("nan"), -float("nan")]))
        expect, note = REJECT, "cell NaN"
    elif kind == "inf":
        value = draw(st.sampled_from([float("inf"), -float("inf")]))
        expect, note = REJECT, "cell Inf"
    elif kind == "neg-zero":
        value, expect, note = (-0.0 if dtype.kind == "f" else 0), OK, "cell -0.0"
        draft.x_overrides.append((r, col, 0.0))
    elif kind == "huge-finite":
        value = float(np.finfo(dtype).max) * draw(st.sampled_from([1.0, -1.0, 0.5]))
        expect, note = ANY, "cell huge finite (outputs may overflow)"
    elif kind == "subnormal":
        value = float(np.finfo(dtype).smallest_subnormal) * draw(st.sampled_from([1, -1, 3]))
        expect, note = OK, "cell subnormal"
        draft.x_overrides.append((r, col, value))
    else:  # out-of-range: only expressible for narrow integer types in typed contents, or raw
        if dtype.kind == "f" or dtype.itemsize >= 4:
            return ANY, "cell out-of-range not expressible for this datatype"
        info = np.iinfo(dtype)
        if dtype.kind == "u":
            value = draw(st.sampled_from([int(info.max) + 1, 2**32 - 1]))
        else:
            value = draw(st.sampled_from([int(info.max) + 1, int(info.min) - 1, 2**31 - 1]))
        if draft.raw_mode or not t.HasField("contents"):
            return ANY, "cell out-of-range not expressible in raw bytes"
        expect, note = REJECT, f"cell out of range for {t.datatype}"
    if t.HasField("contents"):
        getattr(t.contents, GRPC_CONTENTS_FIELD[t.datatype])[flat] = value
    else:
        k = _raw_index(draft, i)
        buf = bytearray(draft.request.raw_input_contents[k])
        size = dtype.itemsize
        buf[flat * size : (flat + 1) * size] = np.asarray([value]).astype(dtype).tobytes()
        draft.request.raw_input_contents[k] = bytes(buf)
    return expect, note


def g_shape(draft: GrpcDraft, draw: st.DrawFn) -> tuple[str, str]:
    t = draw(st.sampled_from(list(draft.request.inputs)))
    old = list(t.shape)
    new = draw(_other_shapes(old, huge=True))
    del t.shape[:]
    t.shape.extend(new)
    if _same_values(draft, old, new):
        return OK, "shape unchanged or [N, 1]"
    return REJECT, "shape changed"


def g_datatype(draft: GrpcDraft, draw: st.DrawFn) -> tuple[str, str]:
    t = draw(st.sampled_from(list(draft.request.inputs)))
    choice = draw(st.sampled_from(["numeric", "bool-bytes", "unknown"]))
    if choice == "numeric":
        t.datatype = draw(st.sampled_from(list(NUMERIC_DATATYPES)))
        return ANY, "datatype changed to another numeric type"
    t.datatype = draw(st.sampled_from(["BOOL", "BYTES"])) if choice == "bool-bytes" else draw(unknown_datatype())
    return REJECT, f"datatype {t.datatype!r}"


def g_contents(draft: GrpcDraft, draw: st.DrawFn) -> tuple[str, str]:
    req = draft.request
    i = draw(st.integers(0, len(req.inputs) - 1))
    t = req.inputs[i]
    choice = draw(
        st.sampled_from(
            [
                "other-field",
                "second-field",
                "bytes",
                "clear",
                "raw-length",
                "extra-raw",
                "drop-raw",
                "raw-and-typed",
                "to-raw",
                "to-typed",
            ]
        )
    )
    n_values = int(np.prod(list(t.shape))) if t.shape else 0
    if choice == "other-field" and t.HasField("contents"):
        old = GRPC_CONTENTS_FIELD[t.datatype]
        values = list(getattr(t.contents, old))
        t.ClearField("contents")
        new = draw(st.sampled_from([f for f in GRPC_FIELDS if f not in (old, "bytes_contents", "bool_contents")]))
        getattr(t.contents, new).extend(_coerce_for_field(new, values))
        return ANY, f"values in {new} instead of {old}"
    if choice == "second-field" and t.HasField("contents"):
        new = draw(st.sampled_from(GRPC_FIELDS))
        getattr(t.contents, new).extend(draw(_field_values(new, max_size=n_values + 2)))
        return ANY, f"values also in {new}"
    if choice == "bytes":
        if t.HasField("contents"):
            t.ClearField("contents")
        elif req.raw_input_contents:
            del req.raw_input_contents[_raw_index(draft, i)]
        t.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=8), min_size=1, max_size=max(n_values, 1))))
        return REJECT, "bytes_contents for a numeric datatype"
    if choice == "clear" and t.HasField("contents"):
        t.ClearField("contents")
        if not req.raw_input_contents:
            return REJECT, "no contents at all"
        return REJECT, "contents removed (raw buffers now misassigned)"
    if choice == "raw-length" and req.raw_input_contents:
        k = draw(st.integers(0, len(req.raw_input_contents) - 1))
        old_buffer = req.raw_input_contents[k]
        new_buffer = draw(st.binary(max_size=600))
        if len(new_buffer) == len(old_buffer):
            return ANY, "raw buffer replaced by random bytes of the same length"
        req.raw_input_contents[k] = new_buffer
        return REJECT, "raw buffer of a wrong length"
    if choice == "extra-raw":
        req.raw_input_contents.append(draw(st.binary(max_size=100)))
        return REJECT, "one raw buffer too many"
    if choice == "drop-raw" and req.raw_input_contents:
        del req.raw_input_contents[draw(st.integers(0, len(req.raw_input_contents) - 1))]
        return REJECT, "one raw buffer missing"
    if choice == "raw-and-typed" and t.HasField("contents"):
        typed = np.asarray(list(getattr(t.contents, GRPC_CONTENTS_FIELD[t.datatype])))
        req.raw_input_contents.append(typed.astype(raw_dtype(t.datatype)).tobytes())
        return REJECT, "raw buffer for an input that has typed contents"
    if choice == "to-raw" and t.HasField("contents") and not req.raw_input_contents:
        # One input raw, the others typed: allowed by the V2 spec? MLServer pairs buffers with
        # the inputs lacking contents, in order.
        typed = np.asarray(list(getattr(t.contents, GRPC_CONTENTS_FIELD[t.datatype])))
        t.ClearField("contents")
        req.raw_input_contents.append(typed.astype(raw_dtype(t.datatype)).tobytes())
        return ANY, "mixed typed and raw inputs"
    if choice == "to-typed" and not t.HasField("contents") and t.datatype in GRPC_CONTENTS_FIELD:
        k = _raw_index(draft, i)
        raw = np.frombuffer(req.raw_input_contents[k], dtype=raw_dtype(t.datatype))
        del req.raw_input_contents[k]
        getattr(t.contents, GRPC_CONTENTS_FIELD[t.datatype]).extend(raw.tolist())
        return ANY, "mixed raw and typed inputs"
    return OK, f"contents mutation {choice} not applicable"


def _coerce_for_field(fname: str, values: list[float]) -> list[float]:
    out: list[float] = []
    for v in values:
        if fname in ("int_contents",):
            out.append(int(max(-(2**31), min(2**31 - 1, int(v) if math.isfinite(v) else 0))))
        elif fname == "int64_contents":
            out.append(int(max(-(2**63), min(2**63 - 1, int(v) if math.isfinite(v) else 0))))
        elif fname == "uint_contents":
            out.append(int(max(0, min(2**32 - 1, int(v) if math.isfinite(v) else 0))))
        elif fname == "uint64_contents":
            out.append(int(max(0, min(2**64 - 1, int(v) if math.isfinite(v) else 0))))
        else:
            out.append(float(v))
    return out


@cache
def _field_values(fname: str, max_size: int = 40) -> st.SearchStrategy[list[Any]]:
    element = {
        "bool_contents": st.booleans(),
        "int_contents": st.integers(-(2**31), 2**31 - 1),
        "int64_contents": st.integers(-(2**63), 2**63 - 1),
        "uint_contents": st.integers(0, 2**32 - 1),
        "uint64_contents": st.integers(0, 2**64 - 1),
        "fp32_contents": st.floats(width=32),
        "fp64_contents": st.floats(),
        "bytes_contents": st.binary(max_size=12),
    }[fname]
    return st.lists(element, max_size=max_size)


def g_names(draft: GrpcDraft, draw: st.DrawFn) -> tuple[str, str]:
    v = draft.valid
    req = draft.request
    if v.layout == "matrix":
        req.inputs[0].name = draw(names)
        return OK, "matrix renamed"
    choice = draw(st.sampled_from(["unknown", "duplicate", "drop", "extra"]))
    i = draw(st.integers(0, len(req.inputs) - 1))
    unknown = names.filter(lambda s: s not in v.model.features)
    if choice == "unknown":
        req.inputs[i].name = draw(unknown)
        return REJECT, "column renamed to an unknown feature"
    if choice in ("duplicate", "extra"):
        copy = req.inputs.add()
        copy.CopyFrom(req.inputs[i])
        if choice == "extra":
            copy.name = draw(unknown)
        if not req.inputs[i].HasField("contents"):
            req.raw_input_contents.append(req.raw_input_contents[_raw_index(draft, i)])
        return REJECT, f"column {choice}"
    if not req.inputs[i].HasField("contents"):
        del req.raw_input_contents[_raw_index(draft, i)]
    del req.inputs[i]
    return REJECT, "column dropped"


def g_outputs(draft: GrpcDraft, draw: st.DrawFn) -> tuple[str, str]:
    model = draft.valid.model
    req = draft.request
    choice = draw(st.sampled_from(["unknown", "proba-on-regressor", "params", "duplicates"]))
    if choice == "duplicates":
        del req.outputs[:]
        for _ in range(draw(st.integers(2, 4))):
            req.outputs.add(name="predict")
        draft.valid.outputs = ["predict"]
        return OK, "output predict requested several times"
    if choice == "params":
        o = req.outputs.add(name="predict") if not req.outputs else req.outputs[0]
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(PARAM_KINDS))
            key = draw(st.one_of(st.sampled_from(SPECIAL_PARAMS + ("binary_data",)), names))
            _set_param(o.parameters, key, kind, draw(param_values(kind)))
        return ANY, "output parameters random"
    del req.outputs[:]
    if choice == "proba-on-regressor" and model.kind == "regressor":
        req.outputs.add(name="predict_proba")
        return REJECT, "predict_proba from a regressor"
    req.outputs.add(name="predict")
    req.outputs.add(name=draw(names.filter(lambda s: s not in model.outputs)))
    return REJECT, "unknown output"


def g_parameters(draft: GrpcDraft, draw: st.DrawFn) -> tuple[str, str]:
    req = draft.request
    where = draw(st.sampled_from(["request", "input", "output"]))
    if where == "request":
        params = req.parameters
    elif where == "input":
        params = draw(st.sampled_from(list(req.inputs))).parameters
    else:
        params = (req.outputs[0] if req.outputs else req.outputs.add(name="predict")).parameters
    key = draw(st.one_of(st.sampled_from(SPECIAL_PARAMS), names))
    kind = draw(st.sampled_from(PARAM_KINDS + ("unset",)))
    if kind == "unset":
        params[key].SetInParent()  # an InferParameter with no value set
        return ANY, f"{where} parameter {key!r} with no value"
    value = draw(param_values(kind))
    _set_param(params, key, kind, value)
    # MLServer 1.7.1's InferParameter has only bool/int64/string (tritonclient's also has
    # double/uint64, which MLServer drops as unknown fields), and it reads the value through
    # ListFields(), so a zero/empty value arrives as None: only a non-default int64/string
    # ood_flags is certainly refused.
    if key == "ood_flags" and where == "request" and kind in ("int64_param", "string_param") and value:
        return REJECT, f"ood_flags as {kind}"
    # content_type must be a string and headers a dict (inexpressible in gRPC): refusing or
    # ignoring them are both fine; a server error is not (test_regressions.py).
    return ANY, f"{where} parameter {key!r} as {kind}"


def g_target(draft: GrpcDraft, draw: st.DrawFn) -> tuple[str, str]:
    expect, draft.target, note = _other_target(
        draft.valid.model, draw, ["Diabetes", "diabetes ", "diabetes/1", "breast_cancer"]
    )
    draft.request.model_name = draft.target.model
    draft.request.model_version = draft.target.version or ""
    return expect, note


def g_layout(draft: GrpcDraft, draw: st.DrawFn) -> tuple[str, str]:
    """Two 2-D tensors, a 3-D one, no inputs."""
    req = draft.request
    choice = draw(st.sampled_from(["no-inputs", "two-matrices", "3d"]))
    if choice == "no-inputs":
        del req.inputs[:]
        del req.raw_input_contents[:]
        return REJECT, "no inputs"
    if choice == "two-matrices" and draft.valid.layout == "matrix":
        copy = req.inputs.add()
        copy.CopyFrom(req.inputs[0])
        copy.name = copy.name + "2"
        if draft.raw_mode:
            req.raw_input_contents.append(req.raw_input_contents[0])
        return REJECT, "two 2-D inputs"
    t = req.inputs[0]
    shape = list(t.shape)
    del t.shape[:]
    t.shape.extend([1, *shape] if len(shape) == 2 else [1, *shape, 1])  # ([1, N] would be a [N, 1] column for N=1)
    return REJECT, "3-D input"


GRPC_MUTATIONS = [g_cell_special, g_shape, g_datatype, g_contents, g_names, g_outputs, g_parameters, g_target, g_layout]


@st.composite
def grpc_structured(draw: st.DrawFn) -> GrpcCase:
    valid = draw(valid_requests("grpc"))
    draft = _grpc_draft(draw, valid)
    expect, notes = _mutate(draft, draw, GRPC_MUTATIONS)
    x, outputs = draft.oracle(expect)
    return GrpcCase(
        protocol="grpc",
        target=draft.target,
        expect=expect,
        notes=tuple(notes),
        x=x,
        outputs=outputs,
        flags=bool(valid.ood_flags),
        request=draft.request,
    )


@st.composite
def grpc_chaos(draw: st.DrawFn) -> GrpcCase:
    """A ModelInferRequest with every field random (typed contents of every kind, raw buffers
    of random lengths, random datatypes and shapes, parameters of each kind)."""
    pb = _pb()
    target = draw(st.one_of(st.sampled_from(served_targets()), st.builds(Target, names, st.one_of(st.none(), names))))
    req = pb.ModelInferRequest(model_name=target.model, model_version=target.version or "")
    model = target.spec
    input_names = st.one_of(names, st.sampled_from(model.features if model else ("X",)))
    for _ in range(draw(st.integers(0, 4))):
        t = req.inputs.add(
            name=draw(input_names),
            datatype=draw(st.one_of(st.sampled_from(V2_DATATYPES), unknown_datatype())),
            shape=draw(
                st.one_of(
                    st.lists(st.integers(-2, 12), max_size=4), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)
                )
            ),
        )
        for fname in draw(st.lists(st.sampled_from(GRPC_FIELDS), max_size=2, unique=True)):
            getattr(t.contents, fname).extend(draw(_field_values(fname)))
        for _ in range(draw(st.integers(0, 2))):
            kind = draw(st.sampled_from(PARAM_KINDS))
            _set_param(
                t.parameters, draw(st.one_of(st.sampled_from(SPECIAL_PARAMS), names)), kind, draw(param_values(kind))
            )
    for _ in range(draw(st.integers(0, 3))):
        req.raw_input_contents.append(draw(st.binary(max_size=400)))
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(PARAM_KINDS))
        _set_param(
            req.parameters, draw(st.one_of(st.sampled_from(SPECIAL_PARAMS), names)), kind, draw(param_values(kind))
        )
    for _ in range(draw(st.integers(0, 2))):
        o = req.outputs.add(name=draw(st.one_of(st.sampled_from(["predict", "predict_proba"]), names)))
        if draw(st.booleans()):
            kind = draw(st.sampled_from(PARAM_KINDS))
            _set_param(
                o.parameters, draw(st.one_of(st.sampled_from(SPECIAL_PARAMS), names)), kind, draw(param_values(kind))
            )
    if draw(st.booleans()):
        req.id = draw(any_ids)
    return GrpcCase(protocol="grpc", target=target, expect=ANY, notes=("chaos proto",), request=req)


@cache
def grpc_cases() -> st.SearchStrategy[GrpcCase]:
    return _weighted((3, grpc_structured()), (1, grpc_chaos()))


# ============================================================================================
# A model with string columns (harness.mixed_model): one tensor per column, BYTES for strings
# ============================================================================================
#
# Valid requests send every column as its own tensor, [N] or PandasCodec's [N, 1], in any order,
# numeric columns in any numeric datatype with gaps (JSON null, NaN in float contents) where the
# schema allows them, string columns as BYTES with gaps (REST null) and unseen values where allowed;
# the server must answer what the pipeline itself answers on those rows. Each invalid request breaks
# one rule of the contract and must be refused with the contract's message (`Case.message`, a part of
# the error text). /predict records of the same rows go the same way.

MIXED_VERSION = "1"
MIXED_OUTPUTS = ("predict", "predict_proba", "decision_function")
LEGACY_OUTPUTS = ("predict", "predict_proba")  # /predict answers predictions and probabilities
MIXED_NUMERIC_DATATYPES = ("FP64", "FP32", "INT64", "INT32")
FLOAT_DATATYPES = ("FP64", "FP32")
# Names that are not the model's columns, for an extra column (never entity_id: a lookup by id).
ODD_COLUMNS = st.one_of(
    st.sampled_from(["zip", "Age", "city ", "X", "features"]),
    names.filter(lambda s: s and s not in mixed_model.COLUMNS and s != "entity_id"),
)


@cache
def mixed_pipeline() -> Any:
    """The fitted pipeline the mixed model was packaged from (harness.mixed_model is deterministic)."""
    return mixed_model.pipeline()


def mixed_targets() -> tuple[Target, ...]:
    return (Target(mixed_model.NAME, None), Target(mixed_model.NAME, MIXED_VERSION))


@dataclass
class MixedColumn:
    """One column's tensor before it is written: values flat, None for a gap, bytes only on gRPC."""

    name: str
    datatype: str  # BYTES for a string column
    shape: list[int]
    values: list[Any]


@dataclass
class MixedDraft:
    target: Target
    columns: list[MixedColumn]  # as sent, in this order
    outputs: list[str] | None  # None: none asked (predict)
    frame: Any  # pandas DataFrame: the rows as the server must read them, for the pipeline's answer
    nest: bool  # REST: an [N, 1] column's data written as [[v], ...]

    def column(self, name: str) -> MixedColumn:
        return next(c for c in self.columns if c.name == name)

    @property
    def n(self) -> int:
        return len(self.frame)

    def answers(self) -> dict[str, np.ndarray]:
        """The pipeline's own answers on the rows (decision_function always: it says which labels are
        too close to call)."""
        p = mixed_pipeline()
        return {name: np.asarray(getattr(p, name)(self.frame)) for name in MIXED_OUTPUTS}


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _gap(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _numeric_column(name: str, values: np.ndarray, datatype: str) -> tuple[list[Any], np.ndarray]:
    """The values as sent in `datatype` (None for a gap) and as the server reads them (float64, NaN)."""
    gaps = np.isnan(values)
    cast = _as_dtype(np.where(gaps, 0.0, values), datatype)
    read = cast.astype(np.float64)
    read[gaps] = np.nan
    return [None if g else v for g, v in zip(gaps.tolist(), cast.tolist())], read


@st.composite
def mixed_requests(draw: st.DrawFn, protocol: str, max_rows: int = 5) -> MixedDraft:
    """A valid per-column request (before writing) and the rows the pipeline must be asked."""
    n = draw(st.integers(1, max_rows))
    frame = mixed_model.rows(n, seed=draw(st.integers(0, 2**16)), gaps=False)
    datatypes = {c: draw(st.sampled_from(MIXED_NUMERIC_DATATYPES)) for c in mixed_model.NUMERIC}
    for _ in range(draw(st.integers(0, 4))):  # a few cells drawn by hypothesis: gaps, unseen plans, extremes
        r, name = draw(st.integers(0, n - 1)), draw(st.sampled_from(("age", "income", "score", "plan")))
        if name == "plan":  # gRPC's BYTES cannot hold a gap
            frame.loc[r, name] = draw(st.one_of(st.just(np.nan), small_text) if protocol == "rest" else small_text)
        elif name in mixed_model.MAY_BE_MISSING and draw(st.booleans()):
            frame.loc[r, name] = np.nan
            if protocol == "grpc" and datatypes[name] not in FLOAT_DATATYPES:
                datatypes[name] = "FP64"  # a gap is NaN in float contents
        else:
            frame.loc[r, name] = draw(valid_scalar(datatypes[name]))
    columns = {}
    for name in mixed_model.NUMERIC:
        sent, read = _numeric_column(name, frame[name].to_numpy(dtype=np.float64), datatypes[name])
        frame[name] = read
        columns[name] = MixedColumn(name, datatypes[name], [n], sent)
    for name in mixed_model.STRINGS:
        columns[name] = MixedColumn(name, "BYTES", [n], [None if _gap(v) else v for v in frame[name]])
    for column in columns.values():
        if draw(st.booleans()):
            column.shape = [n, 1]  # PandasCodec's layout
    order = draw(st.permutations(mixed_model.COLUMNS))
    outputs = draw(st.one_of(st.none(), st.lists(st.sampled_from(MIXED_OUTPUTS), max_size=3)))
    target = draw(st.sampled_from(mixed_targets()))
    return MixedDraft(target, [columns[c] for c in order], outputs, frame, draw(st.booleans()))


MixedMutation = Callable[[MixedDraft, st.DrawFn], tuple[str, str]]  # -> (note, the contract's message)


def _cell(draft: MixedDraft, draw: st.DrawFn, among: Sequence[str]) -> tuple[MixedColumn, int]:
    return draft.column(draw(st.sampled_from(tuple(among)))), draw(st.integers(0, draft.n - 1))


def _where(column: MixedColumn, r: int) -> str:
    """How the contract names a cell: a numeric [N, 1] column is read as a one-column matrix."""
    if column.datatype != "BYTES" and len(column.shape) == 2:
        return f"input '{column.name}': row {r}, column 0 ('{column.name}')"
    return f"input '{column.name}': row {r}"


def x_string_as_numbers(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column = draft.column(draw(st.sampled_from(mixed_model.STRINGS)))
    column.datatype = draw(st.sampled_from(MIXED_NUMERIC_DATATYPES))
    column.values = list(range(draft.n))
    name = column.name
    return "string column in a numeric datatype", (
        f"input '{name}': datatype {column.datatype}, but column '{name}' holds strings; send it as BYTES"
    )


def x_numbers_as_bytes(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column = draft.column(draw(st.sampled_from(mixed_model.NUMERIC)))
    column.datatype, column.values = "BYTES", [str(v) for v in column.values]
    return "numeric column as BYTES", f"input '{column.name}': datatype BYTES is not supported"


def x_text_in_numbers(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column, r = _cell(draft, draw, mixed_model.NUMERIC)
    column.values[r] = draw(small_text)
    return "text in a numeric column", f"{_where(column, r)}: expected a number, got a string"


def x_number_in_strings(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column, r = _cell(draft, draw, mixed_model.STRINGS)
    column.values[r] = draw(st.one_of(st.integers(-(2**31), 2**31), st.floats(-1e6, 1e6), st.booleans()))
    return "a number in a string column", f"input '{column.name}': row {r}: expected a string, got "


def x_null_where_none_may_be(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column, r = _cell(draft, draw, ("score", "city"))
    column.values[r] = None
    rule = "null is not a number, and" if column.name == "score" else "null, and"
    return "null where none may be", f"{_where(column, r)}: {rule} column '{column.name}' may not be missing"


def x_nan_where_none_may_be(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column, r = _cell(draft, draw, ("score",))
    if column.datatype not in FLOAT_DATATYPES:
        column.datatype = "FP64"
    column.values[r] = math.nan
    return "NaN where none may be", f"{_where(column, r)}: NaN is not allowed"


def x_unseen_city(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column, r = _cell(draft, draw, ("city",))
    value = draw(small_text.filter(lambda s: s not in mixed_model.CITIES))
    column.values[r] = value
    return "an unseen category where refused", f"input 'city': row {r}: {value!r:.{SHOWN_CHARS}} is not a category"


def x_not_utf8(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column, r = _cell(draft, draw, mixed_model.STRINGS)
    value = b"\xff" + draw(st.binary(max_size=6))
    column.values[r] = value
    return "bytes that are not UTF-8", f"input '{column.name}': row {r}: the bytes {value!r} are not UTF-8 text"


def x_wide_column(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column = draft.column(draw(st.sampled_from(mixed_model.COLUMNS)))
    column.shape, column.values = [draft.n, 2], [v for v in column.values for _ in range(2)]
    return "a column of shape [N, 2]", "send one tensor per column"


def x_rows_disagree(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column = draft.column(draw(st.sampled_from(mixed_model.COLUMNS)))
    column.values = [*column.values, column.values[0]]
    column.shape = [draft.n + 1, *column.shape[1:]]
    return "columns of different lengths", "rows but input"


def x_missing_column(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column = draft.columns.pop(draw(st.integers(0, len(draft.columns) - 1)))
    return "a missing column", f"missing feature input(s): '{column.name}'"


def x_extra_column(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    name = draw(ODD_COLUMNS)
    one_d = all(len(c.shape) == 1 for c in draft.columns)
    extra = MixedColumn(name, "BYTES", [draft.n], ["x"] * draft.n)
    draft.columns.insert(draw(st.integers(0, len(draft.columns))), extra)
    # Beside an [N, 1] column, a tensor that is no column makes the layout unreadable as columns.
    return "an extra column", f"input '{name}': unknown feature name" if one_d else "send one tensor per column"


def x_twice(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    column = draft.column(draw(st.sampled_from(mixed_model.COLUMNS)))
    draft.columns.append(MixedColumn(column.name, column.datatype, list(column.shape), list(column.values)))
    return "a column twice", f"input '{column.name}': feature given more than once"


def x_one_matrix(draft: MixedDraft, draw: st.DrawFn) -> tuple[str, str]:
    numeric = [draft.column(c) for c in mixed_model.NUMERIC]
    rows = [[0.0 if _gap(v) else float(v) for v in row] for row in zip(*(c.values for c in numeric))]
    draft.columns = [c for c in draft.columns if c not in numeric]
    draft.columns.insert(0, MixedColumn("X", "FP64", [draft.n, len(numeric)], [v for row in rows for v in row]))
    return "the numeric columns as one matrix", "send one tensor per column"


BOTH_MUTATIONS: list[MixedMutation] = [
    x_string_as_numbers,
    x_numbers_as_bytes,
    x_unseen_city,
    x_wide_column,
    x_rows_disagree,
    x_missing_column,
    x_extra_column,
    x_twice,
    x_one_matrix,
]
MIXED_MUTATIONS: dict[str, list[MixedMutation]] = {
    "rest": [*BOTH_MUTATIONS, x_text_in_numbers, x_number_in_strings, x_null_where_none_may_be],
    "grpc": [*BOTH_MUTATIONS, x_nan_where_none_may_be, x_not_utf8],
}


def _mixed_case(draw: st.DrawFn, protocol: str) -> tuple[MixedDraft, str, tuple[str, ...], str]:
    """A valid draft, half the time broken by one mutation: (draft, expect, notes, message)."""
    draft = draw(mixed_requests(protocol))
    if draw(st.booleans()):
        return draft, OK, ("valid per-column",), ""
    mutation = draw(st.sampled_from(MIXED_MUTATIONS[protocol]))
    note, message = mutation(draft, draw)
    return draft, REJECT, (note,), message


def _expected(draft: MixedDraft, expect: str, answered: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The Case fields of the oracle (OK cases only): the outputs that must come back (`answered`, else
    those the draft asks for) and the pipeline's answers."""
    if expect != OK:
        return {}
    outputs = answered or (tuple(dict.fromkeys(draft.outputs)) if draft.outputs else ("predict",))
    return {"outputs": outputs, "answers": draft.answers()}


def _rest_data(column: MixedColumn, nest: bool) -> list[Any]:
    values = [None if _gap(v) else v for v in column.values]
    if len(column.shape) == 2 and nest:
        width = column.shape[1]
        return [values[i : i + width] for i in range(0, len(values), width)]
    return values


@st.composite
def mixed_rest_cases(draw: st.DrawFn) -> RestCase:
    draft, expect, notes, message = _mixed_case(draw, "rest")
    # As PandasCodec sends a DataFrame: its content types named, which change nothing.
    codec = draw(st.booleans())
    inputs = [
        {"name": c.name, "shape": c.shape, "datatype": c.datatype, "data": _rest_data(c, draft.nest)}
        | ({"parameters": {"content_type": "str"}} if codec and c.datatype == "BYTES" else {})
        for c in draft.columns
    ]
    body: dict[str, Any] = {"inputs": inputs} | ({"parameters": {"content_type": "pd"}} if codec else {})
    if draft.outputs is not None:
        body["outputs"] = [{"name": o} for o in draft.outputs]
    return RestCase(
        "rest",
        draft.target,
        expect,
        notes,
        **_expected(draft, expect),
        message=message,
        body=dumps(body).encode(),
    )


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _raw_contents(column: MixedColumn) -> bytes:
    if column.datatype == "BYTES":
        return b"".join(len(b).to_bytes(4, "little") + b for b in map(_bytes, column.values))
    return _float_values(column).astype(raw_dtype(column.datatype)).tobytes()


def _float_values(column: MixedColumn) -> np.ndarray:
    return np.array([math.nan if _gap(v) else v for v in column.values], dtype=np.float64)


@st.composite
def mixed_grpc_cases(draw: st.DrawFn) -> GrpcCase:
    draft, expect, notes, message = _mixed_case(draw, "grpc")
    pb = _pb()
    req = pb.ModelInferRequest(model_name=draft.target.model, model_version=draft.target.version or "")
    raw, codec = draw(st.booleans()), draw(st.booleans())
    if codec:  # as PandasCodec sends a DataFrame: its content types named, which change nothing
        req.parameters["content_type"].string_param = "pd"
    for column in draft.columns:
        tensor = req.inputs.add(name=column.name, datatype=column.datatype, shape=column.shape)
        if codec and column.datatype == "BYTES":
            tensor.parameters["content_type"].string_param = "str"
        if raw:
            req.raw_input_contents.append(_raw_contents(column))
        elif column.datatype == "BYTES":
            tensor.contents.bytes_contents.extend(map(_bytes, column.values))
        else:
            values = _float_values(column).astype(NUMERIC_DATATYPES[column.datatype]).tolist()
            getattr(tensor.contents, GRPC_CONTENTS_FIELD[column.datatype]).extend(values)
    for o in draft.outputs or ():
        req.outputs.add(name=o)
    return GrpcCase("grpc", draft.target, expect, notes, **_expected(draft, expect), message=message, request=req)


# ---- /predict records ({"instances": [...]}) and rows ({"features": [...]}) of the same model

LegacyMutation = Callable[[list[Any], st.DrawFn], tuple[str, str]]


def _record_cell(records: list[Any], draw: st.DrawFn, among: Sequence[str]) -> tuple[int, str]:
    return draw(st.integers(0, len(records) - 1)), draw(st.sampled_from(tuple(among)))


def r_unknown_key(records: list[Any], draw: st.DrawFn) -> tuple[str, str]:
    r, key = draw(st.integers(0, len(records) - 1)), draw(ODD_COLUMNS)
    records[r][key] = 1.0
    return "an unknown column", f"input 'instances': row {r}: unknown column '{key}'"


def r_missing_key(records: list[Any], draw: st.DrawFn) -> tuple[str, str]:
    r, name = _record_cell(records, draw, mixed_model.COLUMNS)
    del records[r][name]
    return "a missing column", f"input 'instances': row {r}: missing column '{name}'"


def r_text_in_numbers(records: list[Any], draw: st.DrawFn) -> tuple[str, str]:
    r, name = _record_cell(records, draw, mixed_model.NUMERIC)
    records[r][name] = draw(small_text)
    return "text in a numeric column", f"input '{name}': row {r}: expected a number, got a string"


def r_number_in_strings(records: list[Any], draw: st.DrawFn) -> tuple[str, str]:
    r, name = _record_cell(records, draw, mixed_model.STRINGS)
    records[r][name] = draw(st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6)))
    return "a number in a string column", f"input '{name}': row {r}: expected a string, got "


def r_null_where_none_may_be(records: list[Any], draw: st.DrawFn) -> tuple[str, str]:
    r, name = _record_cell(records, draw, ("score", "city"))
    records[r][name] = None
    return "null where none may be", f"input '{name}': row {r}: null"


def r_unseen_city(records: list[Any], draw: st.DrawFn) -> tuple[str, str]:
    r = draw(st.integers(0, len(records) - 1))
    value = draw(small_text.filter(lambda s: s not in mixed_model.CITIES))
    records[r]["city"] = value
    return "an unseen category where refused", f"input 'city': row {r}: {value!r:.{SHOWN_CHARS}} is not a category"


def r_not_an_object(records: list[Any], draw: st.DrawFn) -> tuple[str, str]:
    r = draw(st.integers(0, len(records) - 1))
    records[r] = draw(st.one_of(st.lists(st.integers(0, 9), max_size=5), st.integers(), small_text, st.none()))
    return "a record that is no object", f"input 'instances': row {r}: expected an object of column: value"


LEGACY_MUTATIONS: list[LegacyMutation] = [
    r_unknown_key,
    r_missing_key,
    r_text_in_numbers,
    r_number_in_strings,
    r_null_where_none_may_be,
    r_unseen_city,
    r_not_an_object,
]


@st.composite
def legacy_mixed_cases(draw: st.DrawFn) -> RestCase:
    """POST /predict/<mixed> with records (or rows, in the model's column order), valid or broken once."""
    draft = draw(mixed_requests("rest"))
    values = {c.name: [None if _gap(v) else v for v in c.values] for c in draft.columns}
    order = [c.name for c in draft.columns]  # records' keys in any order
    records: list[Any] = [{name: values[name][r] for name in order} for r in range(draft.n)]
    expect, notes, message = OK, ("valid records",), ""
    if draw(st.booleans()):
        mutation = draw(st.sampled_from(LEGACY_MUTATIONS))
        note, message = mutation(records, draw)
        expect, notes = REJECT, (note,)
    body: dict[str, Any] = {"instances": records}
    if expect == OK and draw(st.booleans()):
        body = {"features": [[record[c] for c in mixed_model.COLUMNS] for record in records]}
        notes = ("valid rows",)
    return RestCase(
        "rest",
        Target(mixed_model.NAME, None),
        expect,
        notes,
        **_expected(draft, expect, LEGACY_OUTPUTS),
        message=message,
        body=dumps(body).encode(),
        path=f"/predict/{mixed_model.NAME}",
    )
