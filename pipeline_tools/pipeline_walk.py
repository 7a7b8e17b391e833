"""A fitted pipeline packaged whole (the manifest's pipeline form): every object in it checked, and
what it tells about each input column (whether it may be missing, holds strings, is categorical).

Every step must be a scikit-learn type, fitted, and accepted by its step registry entry where it has
one. A FunctionTransformer is accepted only with numpy ufuncs: its function is code the runtime would
load and run, and only a ufunc is known to do nothing but map arrays to arrays.

A column may be missing when the first step that reads it (past the scalers, which keep NaN as it is)
fills the gap itself (an imputer) or takes NaN as a value (an estimator whose registry entry says so).
Anything else, including the columns a ColumnTransformer passes through, may not be missing.
An encoder (one-hot, ordinal, target) makes its columns categorical: strings where it learned strings,
its training categories recorded, an unseen value refused where it would raise on one; an imputer in
front of it (one column to one) passes its categories through.
What the first step that reads a column learned of it in training (an imputer's fill, a leading
scaler's centre) is the column's typical value: the packager's example row when it has no reference data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import KNNImputer, MissingIndicator, SimpleImputer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, TargetEncoder

from runtime.core.artifacts import SKLEARN_PREFIX
from runtime.core.steps.kinds import Transformer, fitted_by_sklearn
from runtime.core.steps.registry import ESTIMATORS, TRANSFORMERS

SKIPPED = (None, "passthrough", "drop")


class StepRefusedError(ValueError):
    """One step the runtime cannot serve, named in one line."""


def steps(name: str, obj: Any) -> Iterator[tuple[str, Any]]:
    """Every object of the pipeline, depth first, each named by its path ('prep/num/scale')."""
    yield name, obj
    if isinstance(obj, Pipeline):
        children = [(n, s) for n, s in obj.steps]
    elif isinstance(obj, FeatureUnion):
        children = [(n, s) for n, s in obj.transformer_list]
    elif isinstance(obj, ColumnTransformer):
        fitted = getattr(obj, "transformers_", obj.transformers)
        children = [(n, s) for n, s, _ in fitted]
    else:
        return
    for child_name, child in children:
        if not isinstance(child, str) and child is not None:
            yield from steps(f"{name}/{child_name}" if name else child_name, child)


def check_steps(pipeline: Any) -> None:
    """Refuse, in one line naming the step, anything the runtime could not load or serve safely."""
    for name, step in steps("", pipeline):
        label = f"'{name or 'estimator'}' ({type(step).__name__})"
        if not type(step).__module__.startswith(SKLEARN_PREFIX):
            raise StepRefusedError(f"{label} is not a scikit-learn type; only scikit-learn steps can be loaded safely")
        if isinstance(step, FunctionTransformer):
            for attr in ("func", "inverse_func"):
                func = getattr(step, attr)
                if func is not None and not isinstance(func, np.ufunc):
                    raise StepRefusedError(
                        f"{label}: {attr} {getattr(func, '__qualname__', type(func).__name__)} is not a numpy ufunc; "
                        "arbitrary code cannot be loaded safely"
                    )
        kind = ESTIMATORS.of(step) or TRANSFORMERS.of(step)
        problem = kind.refuse(step) if kind is not None else None
        if problem is not None:
            raise StepRefusedError(problem)
        if not isinstance(step, (Pipeline, FeatureUnion, ColumnTransformer)) and not fitted_by_sklearn(step):
            raise StepRefusedError(f"{label} is not fitted; fit it first")


@dataclass(frozen=True)
class ColumnFacts:
    """What the pipeline tells about one input column: whether a gap may reach it, whether it holds
    strings, and, for a categorical column, its training categories and what an unseen value does."""

    missing: bool = False
    string: bool = False
    categories: list[Any] | None = None
    unseen: str = "counted"  # or "refused": the encoder raises on an unseen value
    # In the input's units: an imputer's fill, a leading scaler's centre. An example for a person, not
    # a rule of the contract: two columns with the same rules are equal whatever their typical values.
    typical: float | str | None = field(default=None, compare=False)


def column_facts(step: Any, n: int) -> list[ColumnFacts]:
    """Per input column of `step` (n of them), what the first step that reads it decides."""
    if isinstance(step, Pipeline):
        return _pipeline(step.steps, n)
    if isinstance(step, ColumnTransformer):
        return _column_transformer(step, n)
    if isinstance(step, FeatureUnion):
        branches = [column_facts(s, n) for _, s in step.transformer_list if s not in SKIPPED]
        return [_union(column) for column in zip(*branches, strict=True)] if branches else [ColumnFacts()] * n
    reader = next((read for cls, read in COLUMN_READERS.items() if isinstance(step, cls)), None)
    if reader is not None:
        return reader(step, n)
    kind = ESTIMATORS.of(step)
    return [ColumnFacts(missing=kind is not None and kind.takes_nan)] * n


def may_be_missing(step: Any, n: int) -> list[bool]:
    """Per input column of `step`, whether a missing value (NaN) may reach it."""
    return [facts.missing for facts in column_facts(step, n)]


def typical_values(pipeline_steps: list[Any], n: int) -> list[float | str | None]:
    """Per input column of the steps in order (n columns), its typical value (ColumnFacts.typical)."""
    return [f.typical for f in _pipeline([(str(i), step) for i, step in enumerate(pipeline_steps)], n)]


def _pipeline(pipeline_steps: list[tuple[str, Any]], n: int) -> list[ColumnFacts]:
    centre: list[float] | None = None
    for index, (_, inner) in enumerate(pipeline_steps):
        if inner in SKIPPED:
            continue
        scaler = TRANSFORMERS.of(inner)
        if scaler is not None:
            # The scalers keep NaN as NaN: what follows decides; but only the first one's centre is
            # in the input's units.
            centre = centre or _centre(scaler, inner, n)
            continue
        if isinstance(inner, ColumnTransformer):
            facts = _column_transformer(inner, n, passed_gaps=_takes_gaps(pipeline_steps[index + 1 :]))
        else:
            facts = column_facts(inner, n)
        if isinstance(inner, SimpleImputer) and not inner.add_indicator and _keeps_columns(inner):
            # The imputer fills the gaps one column to one: the categories are the next step's.
            after = _pipeline(pipeline_steps[index + 1 :], n)
            string = _fills_text(inner)
            facts = [
                replace(a, missing=f.missing, string=a.string or string, typical=f.typical)
                for f, a in zip(facts, after, strict=True)
            ]
        return _centred(facts, centre)
    return _centred([ColumnFacts()] * n, centre)


def _centre(kind: Transformer, scaler: Any, n: int) -> list[float]:
    """The middle of what the scaler learned: its band's, else what it maps to zero (the mean)."""
    ranges, _ = kind.ranges(scaler)
    if ranges is not None:
        low, high = ranges.band()
        return [float(v) for v in (low + high) / 2]
    return [float(v) for v in scaler.inverse_transform(np.zeros((1, n)))[0]]


def _centred(facts: list[ColumnFacts], centre: list[float] | None) -> list[ColumnFacts]:
    if centre is None:
        return facts
    return [replace(f, typical=c) for f, c in zip(facts, centre, strict=True)]


def _keeps_columns(imputer: SimpleImputer) -> bool:
    """Whether every column comes out of the imputer (scikit-learn drops one it saw only gaps in)."""
    statistics = imputer.statistics_
    return bool(imputer.keep_empty_features or statistics.dtype == object or not np.isnan(statistics).any())


def _fills_text(imputer: SimpleImputer) -> bool:
    """Whether the imputer fills text: its statistics are objects for a constant fill of numbers too."""
    return any(isinstance(v, str) for v in imputer.statistics_.tolist())


def _union(branches: tuple[ColumnFacts, ...]) -> ColumnFacts:
    """A column every branch of a FeatureUnion reads: a gap must suit them all, an unseen value too."""
    categorical = [b for b in branches if b.categories is not None]
    typical = [b.typical for b in branches if b.typical is not None]
    return ColumnFacts(
        missing=all(b.missing for b in branches),
        string=any(b.string for b in branches),
        categories=categorical[0].categories if categorical else None,
        unseen="refused" if any(b.unseen == "refused" for b in branches) else "counted",
        typical=typical[0] if typical else None,
    )


def _imputer(step: Any, n: int) -> list[ColumnFacts]:
    string = isinstance(step, SimpleImputer) and _fills_text(step)
    missing = _is_nan(step.missing_values)
    fills = _fills(step) if isinstance(step, SimpleImputer) and _keeps_columns(step) else [None] * n
    return [ColumnFacts(missing=missing, string=string, typical=fill) for fill in fills]


def _fills(imputer: SimpleImputer) -> list[float | str | None]:
    """What the imputer fills each column's gaps with (its mean, median, most frequent or constant)."""
    return [v if isinstance(v, str) else None if _is_nan(float(v)) else float(v) for v in imputer.statistics_.tolist()]


def _encoder(step: Any, n: int) -> list[ColumnFacts]:
    """An encoder's columns: categorical, strings where it learned strings; a gap is taken where it
    saw one in training (a category of its own), an unseen value refused where it would raise."""
    handle = getattr(step, "handle_unknown", "value")
    refuses = handle == "error" and not isinstance(step, TargetEncoder)
    facts = []
    for categories in step.categories_:
        seen = [c for c in categories.tolist() if not _is_nan(c) and c is not None]
        gap_seen = len(seen) < len(categories)
        if isinstance(step, OrdinalEncoder) and _is_nan(step.encoded_missing_value):
            gap_seen = False  # passed on as NaN: the step after it would have to take it
        string = any(isinstance(c, str) for c in seen)
        values = [str(c) for c in seen] if string else [float(c) for c in seen]
        facts.append(ColumnFacts(gap_seen, string, values, "refused" if refuses else "counted"))
    return facts


# The steps that read input columns themselves and what they decide about them, by type.
COLUMN_READERS: dict[type, Callable[[Any, int], list[ColumnFacts]]] = {
    SimpleImputer: _imputer,
    KNNImputer: _imputer,
    MissingIndicator: _imputer,
    OneHotEncoder: _encoder,
    OrdinalEncoder: _encoder,
    TargetEncoder: _encoder,
}


def _takes_gaps(rest: list[tuple[str, Any]]) -> bool:
    """Whether every column the rest of a pipeline reads may hold a gap (HistGradientBoosting, say):
    then a column a ColumnTransformer passes through as it is may hold one too."""
    width = next((getattr(step, "n_features_in_", None) for _, step in rest if step not in SKIPPED), None)
    return width is not None and all(f.missing for f in _pipeline(rest, width))


def _column_transformer(step: ColumnTransformer, n: int, passed_gaps: bool = False) -> list[ColumnFacts]:
    """Per input column, what the transformer reading it decides; a column passed through as it is
    (a "passthrough" transformer or remainder) may hold a gap when what follows takes one (`passed_gaps`)."""
    facts = [ColumnFacts()] * n
    indices: dict[str, Any] = step._transformer_to_input_indices
    for name, transformer, _ in step.transformers_:
        columns = list(indices.get(name, []))
        if transformer == "drop":
            inner = [ColumnFacts(missing=True)] * len(columns)  # never read
        elif transformer == "passthrough" or _is_identity(transformer):
            inner = [ColumnFacts(missing=passed_gaps)] * len(columns)
        else:
            inner = column_facts(transformer, len(columns))
        for column, flag in zip(columns, inner, strict=True):
            facts[column] = flag
    return facts


def _is_identity(transformer: Any) -> bool:
    """A FunctionTransformer without a function: how a fitted ColumnTransformer holds a passthrough
    remainder."""
    return isinstance(transformer, FunctionTransformer) and transformer.func is None and not transformer.validate


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and bool(np.isnan(value))
