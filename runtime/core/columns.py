"""A pipeline's fitted preprocessing compiled into numpy, bit-identical to scikit-learn's `transform`.

The pipeline form serves a whole fitted Pipeline; calling it costs a DataFrame, a ColumnTransformer
and every step's input checks per request, far more than the arithmetic. What folds exactly compiles
here into one function over the contract's matrix (float64 [N, F], or object [N, F] with str or NaN
in string columns) that computes, operation by operation, the float64 matrix scikit-learn would hand
the final estimator. Each step type compiles through its entry in `COMPILERS` (the scalers through
their step registry entry's `exact` arithmetic); a step without one, or a configuration an entry is
not sure of, raises `NotCompiled` and the whole model is served by scikit-learn. The predictor still
checks the compiled answers against the pipeline's own at load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder

from runtime.core.steps.registry import TRANSFORMERS

# One compiled step: its input block as an array -> its output block.
Fn = Callable[[np.ndarray], np.ndarray]
PASSTHROUGH = "passthrough"  # a Pipeline step that does nothing
DROP = "drop"  # a ColumnTransformer's transformer that is left out


class NotCompiled(Exception):
    """A step that does not compile exactly; the message names it and says why."""


@dataclass(frozen=True)
class Block:
    """What flows between compiled steps. Per column whether it may hold strings: a block without any
    is a float64 array, one with some an object array (floats in its numeric columns, as a mixed
    DataFrame's values are). `names` are the column names the step sees where scikit-learn hands it a
    DataFrame; `sparse` marks values scikit-learn would hand on as a sparse matrix."""

    strings: tuple[bool, ...]
    names: tuple[str, ...] | None = None
    sparse: bool = False

    @property
    def numeric(self) -> bool:
        return not any(self.strings)

    @property
    def width(self) -> int:
        return len(self.strings)


# (fitted step, its input block) -> the function computing its output and the output block.
Compile = Callable[[Any, Block], tuple[Fn, Block]]


@dataclass(frozen=True)
class CompiledPipeline:
    """The pipeline's preprocessing as one function, and the final estimator that takes its output.
    `sparse`: scikit-learn hands the estimator a sparse matrix of these values, which only a path that
    compares values (trees) answers bit for bit as it does; arithmetic may sum them otherwise."""

    prepare: Fn
    estimator: Any
    sparse: bool


def compile_pipeline(pipeline: Pipeline, inputs: Block) -> CompiledPipeline:
    """The Pipeline's steps before its estimator, compiled; raises NotCompiled."""
    *steps, (_, estimator) = pipeline.steps
    prepare, block = _chain([step for _, step in steps], inputs)
    if not block.numeric:
        raise NotCompiled(f"{_name(estimator)} would take string columns")
    if hasattr(estimator, "feature_names_in_") or getattr(estimator, "n_features_in_", block.width) != block.width:
        raise NotCompiled(f"{_name(estimator)} was fitted on other columns than the steps before it write")
    return CompiledPipeline(prepare, estimator, block.sparse)


def compile_step(step: Any, block: Block) -> tuple[Fn, Block]:
    if block.sparse:
        raise NotCompiled(f"{_name(step)} would take a sparse matrix")
    # A step set to output a DataFrame hands on the same values; where a later step would select
    # columns of it by name, the block (unnamed) does not compile.
    return _compiler_of(step)(step, block)


def _compiler_of(step: Any) -> Compile:
    own = COMPILERS.get(type(step))
    if own is not None:
        return own
    if TRANSFORMERS.of(step) is None:
        raise NotCompiled(f"{_name(step)} has no compiled form")
    return _registered_arithmetic


def _name(step: Any) -> str:
    return type(step).__name__


def _chain(steps: Sequence[Any], block: Block) -> tuple[Fn, Block]:
    """Steps one after another ('passthrough' and None steps skipped)."""
    fns: list[Fn] = []
    for step in steps:
        if step is None or (isinstance(step, str) and step == PASSTHROUGH):
            continue
        fn, block = compile_step(step, block)
        fns.append(fn)

    def run(x: np.ndarray) -> np.ndarray:
        for fn in fns:
            x = fn(x)
        return x

    return (fns[0] if len(fns) == 1 else run), block


def _unnamed(block: Block) -> Block:
    """A step's output: a plain array, without names."""
    return replace(block, names=None)


def _require_numeric(step: Any, block: Block) -> None:
    if not block.numeric:
        raise NotCompiled(f"{_name(step)} would take string columns")


def _nested_pipeline(pipeline: Any, block: Block) -> tuple[Fn, Block]:
    return _chain([step for _, step in pipeline.steps], block)


def _registered_arithmetic(step: Any, block: Block) -> tuple[Fn, Block]:
    """A scaler, as its registry entry says scikit-learn computes it."""
    _require_numeric(step, block)
    kind = TRANSFORMERS.of(step)
    arithmetic = kind.exact(step) if kind is not None else None
    if arithmetic is None:
        raise NotCompiled(f"{_name(step)} as configured is not compiled")
    return arithmetic, _unnamed(block)


# ---- ColumnTransformer ----------------------------------------------------------------------------


def _column_transformer(ct: Any, block: Block) -> tuple[Fn, Block]:
    """Each transformer on its columns, stacked in the fitted order (the remainder last): the values of
    scikit-learn's dense stack, or of its sparse one (marked sparse)."""
    if ct.transformer_weights:
        raise NotCompiled("ColumnTransformer has transformer_weights")
    parts: list[tuple[Fn, Block]] = []
    for name, transformer, columns in ct.transformers_:
        if isinstance(transformer, str) and transformer == DROP:
            continue
        if np.isscalar(columns):
            raise NotCompiled(f"ColumnTransformer's {name!r} selects one column as a vector")
        positions = _positions(ct, _input_indices(ct, columns), block)
        if not positions:
            continue
        selected = Block(
            strings=tuple(block.strings[i] for i in positions),
            names=tuple(block.names[i] for i in positions) if block.names is not None else None,
        )
        # A fitted 'passthrough' is an identity FunctionTransformer.
        fn, out = compile_step(transformer, selected)
        parts.append((_selecting(np.asarray(positions, dtype=np.intp), selected.numeric, fn), out))
    if not parts:
        raise NotCompiled("ColumnTransformer selects no columns")
    stacked = Block(strings=tuple(s for _, out in parts for s in out.strings), sparse=bool(ct.sparse_output_))
    if stacked.sparse and not stacked.numeric:
        raise NotCompiled("ColumnTransformer stacks string columns into a sparse matrix")
    fns = [fn for fn, _ in parts]

    def run(x: np.ndarray) -> np.ndarray:
        # np.hstack's own result for these 2-D blocks, without its per-call argument handling.
        return np.concatenate([fn(x) for fn in fns], axis=1)

    return run, stacked


def _input_indices(ct: Any, columns: Any) -> list[int]:
    """The input columns a fitted transformer's column selection names, as indices: names, integers
    or a boolean mask (a callable or slice selection does not compile)."""
    if callable(columns) or isinstance(columns, slice):
        raise NotCompiled("ColumnTransformer selects columns by a callable or a slice")
    n = int(ct.n_features_in_)
    selection = np.asarray(list(columns))
    if selection.dtype == bool and len(selection) == n:
        return [int(i) for i in np.flatnonzero(selection)]
    if selection.dtype.kind in "iu" and all(-n <= i < n for i in selection.tolist()):
        return [int(i) % n for i in selection.tolist()]
    fitted = getattr(ct, "feature_names_in_", None)
    if selection.dtype.kind in "UO" and fitted is not None:
        names = [str(f) for f in fitted]
        if all(isinstance(c, str) and c in names for c in selection.tolist()):
            return [names.index(c) for c in selection.tolist()]
    raise NotCompiled(f"ColumnTransformer selects columns as {selection.tolist()[:5]!r}")


def _positions(ct: Any, indices: list[int], block: Block) -> list[int]:
    """The block's columns a fitted transformer reads: by name where the ColumnTransformer was fitted
    on a DataFrame and is handed one (as scikit-learn selects them), else by position."""
    fitted_names = getattr(ct, "feature_names_in_", None)
    if fitted_names is None or block.names is None:
        if fitted_names is not None or ct.n_features_in_ != block.width:
            raise NotCompiled("ColumnTransformer takes other columns than it was fitted on")
        return indices
    wanted = [str(fitted_names[i]) for i in indices]
    missing = [n for n in wanted if n not in block.names]
    if missing:
        raise NotCompiled(f"ColumnTransformer reads columns {missing} it is not given")
    return [block.names.index(n) for n in wanted]


def _selecting(positions: np.ndarray, numeric: bool, fn: Fn) -> Fn:
    """`fn` on the selected columns; numeric ones as float64, as a DataFrame of float64 columns gives them."""

    def run(x: np.ndarray) -> np.ndarray:
        part = x[:, positions]
        if numeric and part.dtype != np.float64:
            part = part.astype(np.float64)
        return fn(part)

    return run


# ---- FunctionTransformer ----------------------------------------------------------------------------


def _function_transformer(step: Any, block: Block) -> tuple[Fn, Block]:
    """The identity (a fitted 'passthrough') or a numpy ufunc, which maps each value on its own."""
    func = step.func
    if step.kw_args or not (func is None or isinstance(func, np.ufunc)):
        raise NotCompiled("FunctionTransformer with a function other than a numpy ufunc")
    # Without validation the step hands its input on as it came, a DataFrame keeping its names.
    out = block if not step.validate else _unnamed(block)
    if func is None:
        return (lambda x: x), out
    _require_numeric(step, block)
    return func, out


# ---- SimpleImputer --------------------------------------------------------------------------------


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _simple_imputer(imputer: Any, block: Block) -> tuple[Fn, Block]:
    """Every gap filled with the column's learned statistic."""
    if imputer.add_indicator or not _is_nan(imputer.missing_values):
        raise NotCompiled("SimpleImputer with an indicator or a missing value other than NaN")
    statistics = np.asarray(imputer.statistics_)
    if any(s != s for s in statistics.tolist()):
        # scikit-learn drops (or keeps empty) a column it learned nothing for.
        raise NotCompiled("SimpleImputer learned no value for a column")
    if block.numeric:
        # scikit-learn fills in the dtype it was fitted on (an integer column's mean truncated): the
        # check at load finds such an imputer differs, and scikit-learn serves it.
        try:
            fill = statistics.astype(np.float64)
        except (TypeError, ValueError):
            raise NotCompiled("SimpleImputer fills numeric columns with text") from None
        return (lambda x: np.where(np.isnan(x), fill, x)), _unnamed(block)
    filler = statistics.astype(object)

    def run(x: np.ndarray) -> np.ndarray:
        # As scikit-learn's mask of an object array: a value unequal to itself (NaN) is missing.
        return np.where(x != x, filler, x)

    return run, _unnamed(block)


# ---- encoders: a value -> its category's index ------------------------------------------------------

UNKNOWN = -1


def _indexer(categories: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Values -> their index in the fitted categories (NaN to a missing category where one was seen),
    UNKNOWN for any other value."""
    values = categories.tolist()
    missing = _missing_position(categories)
    if categories.dtype.kind in "iuf":
        known = categories[: len(values) if missing == UNKNOWN else missing].astype(np.float64)
        if missing not in (UNKNOWN, len(values) - 1) or np.any(np.diff(known) <= 0):
            raise NotCompiled("an encoder's numeric categories are not sorted")
        return _numeric_indexer(known, missing)
    if categories.dtype.kind != "O":
        raise NotCompiled(f"an encoder's categories are {categories.dtype}")
    lookup = {v: i for i, v in enumerate(values) if i != missing}
    if len(lookup) != len(values) - (missing != UNKNOWN):
        raise NotCompiled("an encoder holds a missing category twice")

    def index(column: np.ndarray) -> np.ndarray:
        return np.fromiter(
            (lookup.get(v, UNKNOWN) if v == v else missing for v in column.tolist()), dtype=np.intp, count=len(column)
        )

    return index


def _missing_position(categories: np.ndarray) -> int:
    """Where the fitted categories hold the missing one (NaN or None, seen in training), else UNKNOWN."""
    return next((i for i, v in enumerate(categories.tolist()) if v is None or v != v), UNKNOWN)


def _numeric_indexer(known: np.ndarray, missing: int) -> Callable[[np.ndarray], np.ndarray]:
    def index(column: np.ndarray) -> np.ndarray:
        x = np.asarray(column, dtype=np.float64)
        found = np.searchsorted(known, x).clip(max=max(len(known) - 1, 0))
        hit = known[found] == x if len(known) else np.zeros(len(x), dtype=bool)
        codes = np.where(hit, found, UNKNOWN)
        codes[np.isnan(x)] = missing
        return codes

    return index


def _indexers(encoder: Any, block: Block) -> list[Callable[[np.ndarray], np.ndarray]]:
    max_categories, min_frequency = encoder.get_params()["max_categories"], encoder.get_params()["min_frequency"]
    if (max_categories is not None and max_categories >= 1) or min_frequency is not None:
        raise NotCompiled(f"{_name(encoder)} groups infrequent categories")
    if np.dtype(encoder.dtype) != np.float64:
        raise NotCompiled(f"{_name(encoder)} outputs {np.dtype(encoder.dtype)}")
    if len(encoder.categories_) != block.width:
        raise NotCompiled(f"{_name(encoder)} was fitted on {len(encoder.categories_)} columns")
    return [_indexer(np.asarray(c)) for c in encoder.categories_]


def _unknown_error(encoder: Any, column: int) -> ValueError:
    # scikit-learn's own error: the contract refuses unseen values before they get here.
    return ValueError(f"Found unknown categories in column {column} during transform")


def _one_hot(encoder: Any, block: Block) -> tuple[Fn, Block]:
    """A 1 in the value's category column, none for an ignored unknown value."""
    if encoder.drop is not None or encoder.handle_unknown not in ("ignore", "error"):
        raise NotCompiled(f"OneHotEncoder(drop={encoder.drop!r}, handle_unknown={encoder.handle_unknown!r})")
    indexers = _indexers(encoder, block)
    widths = [len(c) for c in encoder.categories_]
    offsets = np.cumsum([0, *widths[:-1]]).astype(np.intp)
    total = int(sum(widths))
    refuse_unknown = encoder.handle_unknown == "error"

    def run(x: np.ndarray) -> np.ndarray:
        # Every column's codes first, then the ones set at once: each numpy call is paid per request,
        # not per column.
        codes = np.empty((len(x), len(indexers)), dtype=np.intp)
        for j, index in enumerate(indexers):
            codes[:, j] = index(x[:, j])
        known = codes != UNKNOWN
        if refuse_unknown and not known.all():
            raise _unknown_error(encoder, int(np.flatnonzero(~known.all(axis=0))[0]))
        out = np.zeros((len(x), total), dtype=np.float64)
        # Each known value's position in the flat output: its row's start, its column's offset, its code.
        at = np.arange(0, len(x) * total, total, dtype=np.intp)[:, None] + offsets + codes
        out.reshape(-1)[at[known]] = 1.0
        return out

    return run, Block(strings=(False,) * total, sparse=bool(encoder.sparse_output))


def _ordinal(encoder: Any, block: Block) -> tuple[Fn, Block]:
    """The value's category index; a gap's encoded_missing_value and an unknown's unknown_value."""
    if encoder.handle_unknown not in ("use_encoded_value", "error"):
        raise NotCompiled(f"OrdinalEncoder(handle_unknown={encoder.handle_unknown!r})")
    indexers = _indexers(encoder, block)
    positions = [_missing_position(np.asarray(c)) for c in encoder.categories_]
    missing = {j: p for j, p in enumerate(positions) if p != UNKNOWN}
    refuse_unknown = encoder.handle_unknown == "error"

    def run(x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), len(indexers)), dtype=np.float64)
        for j, index in enumerate(indexers):
            codes = index(x[:, j])
            unknown = codes == UNKNOWN
            if refuse_unknown and unknown.any():
                raise _unknown_error(encoder, j)
            out[:, j] = codes
            if j in missing:
                out[codes == missing[j], j] = encoder.encoded_missing_value
            if not refuse_unknown:
                out[unknown, j] = encoder.unknown_value
        return out

    return run, Block(strings=(False,) * len(indexers))


COMPILERS: dict[type, Compile] = {
    Pipeline: _nested_pipeline,
    ColumnTransformer: _column_transformer,
    SimpleImputer: _simple_imputer,
    OneHotEncoder: _one_hot,
    OrdinalEncoder: _ordinal,
    FunctionTransformer: _function_transformer,
}
