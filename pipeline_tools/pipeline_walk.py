"""A fitted pipeline packaged whole (the manifest's pipeline form): every object in it checked, and
which of its input columns may be missing.

Every step must be a scikit-learn type, fitted, and accepted by its step registry entry where it has
one. A FunctionTransformer is accepted only with numpy ufuncs: its function is code the runtime would
load and run, and only a ufunc is known to do nothing but map arrays to arrays.

A column may be missing when the first step that reads it (past the scalers, which keep NaN as it is)
fills the gap itself (an imputer) or takes NaN as a value (an estimator whose registry entry says so).
Anything else, including the columns a ColumnTransformer passes through, may not be missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import KNNImputer, MissingIndicator, SimpleImputer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer

from runtime.core.artifacts import SKLEARN_PREFIX
from runtime.core.steps.kinds import fitted_by_sklearn
from runtime.core.steps.registry import ESTIMATORS, TRANSFORMERS

IMPUTERS = (SimpleImputer, KNNImputer, MissingIndicator)
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


def may_be_missing(step: Any, n: int) -> list[bool]:
    """Per input column of `step` (n of them), whether a missing value (NaN) may reach it."""
    if isinstance(step, Pipeline):
        for _, inner in step.steps:
            if inner in SKIPPED or TRANSFORMERS.of(inner) is not None:
                continue  # the scalers keep NaN as NaN: what follows decides
            return may_be_missing(inner, n)
        return [False] * n
    if isinstance(step, ColumnTransformer):
        return _column_transformer(step, n)
    if isinstance(step, FeatureUnion):
        branches = [may_be_missing(s, n) for _, s in step.transformer_list if s not in SKIPPED]
        return [all(column) for column in zip(*branches, strict=True)] if branches else [False] * n
    if isinstance(step, IMPUTERS):
        return [_is_nan(step.missing_values)] * n
    kind = ESTIMATORS.of(step)
    return [kind is not None and kind.takes_nan] * n


def _column_transformer(step: ColumnTransformer, n: int) -> list[bool]:
    missing = [False] * n
    indices: dict[str, Any] = step._transformer_to_input_indices
    for name, transformer, _ in step.transformers_:
        columns = list(indices.get(name, []))
        if transformer == "drop":
            flags = [True] * len(columns)  # never read
        elif transformer == "passthrough":
            flags = [False] * len(columns)
        else:
            flags = may_be_missing(transformer, len(columns))
        for column, flag in zip(columns, flags, strict=True):
            missing[column] = flag
    return missing


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)
