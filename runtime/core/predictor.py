"""The prediction path, compiled once at load.

The model's entry in the step registry (runtime.core.steps) may declare a fast path: a linear
model folds the scaler before it into its coefficients (one matrix product instead of two
scikit-learn calls with their input checks), a random forest or extra-trees ensemble runs its own
trees in a plain loop. Anything else runs scikit-learn's own estimator with the checks our contract
has already made switched off; so does a pipeline packaged whole (the manifest's pipeline form),
through the Pipeline's own methods, checked at load against the original pipeline's answers the
manifest recorded (allclose: nothing is compiled, but another machine's BLAS may round differently).
Each compiled output is verified against plain scikit-learn at load
and dropped, with a log line, if it disagrees.

A pipeline-form model whose every step compiles (runtime.core.columns: a ColumnTransformer of
scalers, imputers and encoders, ...) is served compiled: the preprocessing in numpy, then the final
estimator's fast path or its own method, without the DataFrame and the per-step checks. It is served
so only when every output is bit-identical to the Pipeline's own on the reference rows; else the
whole model stays on scikit-learn's path.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import Any

import numpy as np
import pandas as pd
import sklearn

from runtime.core.artifacts import LoadedPipeline, Manifest, ReferenceCheck
from runtime.core.columns import Block, NotCompiled, compile_pipeline
from runtime.core.errors import ArtifactError, first_line
from runtime.core.outputs import OutputFn, offered_outputs, require_finite
from runtime.core.steps.kinds import Preceding
from runtime.core.steps.registry import ESTIMATORS, TRANSFORMERS

logger = logging.getLogger("runtime.core.predictor")

REFERENCE_ROWS = 256
RTOL = 1e-9
ATOL = 1e-12
# The pipeline form against the original's recorded answers.
CHECK_RTOL, CHECK_ATOL = 1e-7, 1e-10
# A pipeline-form model whose preprocessing compiles, bit-identical to the Pipeline.
COMPILED_PIPELINE = "compiled-pipeline"


@dataclass(frozen=True)
class Predictor:
    """Named output functions over a validated float64 matrix."""

    # "folded-linear", "tree-loop" or "compiled-pipeline" when every output is compiled, else "sklearn"
    kind: str
    outputs: dict[str, OutputFn]
    # Computed once per request before the outputs (a compiled pipeline's preprocessing).
    prepare: OutputFn | None = None
    # A regressor's: the deciles of its predictions on the reference rows, computed with the check (the
    # buckets its predictions are counted in unless pinned, runtime.service), shared like the predictor.
    deciles: np.ndarray | None = field(default=None, compare=False)

    def predict(self, features: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        # Overflow is detected below and refused; numpy's warning would only add a log line.
        with np.errstate(over="ignore", invalid="ignore"):
            x = self.prepare(features) if self.prepare is not None else features
            results = {name: self.outputs[name](x) for name in names}
        for values in results.values():
            if values.dtype.kind == "f":
                require_finite(values)
        return results


# Compiled predictors by the verified content and seed they were compiled and checked from
# (LoadedPipeline.verified): a model loaded from the same content (same artifact bytes, by their
# hashes) shares the predictor another model already checked, the same result; weak, so it goes
# with the last model serving it.
_SHARED: weakref.WeakValueDictionary[tuple[str, int], Predictor] = weakref.WeakValueDictionary()


def shared_predictor(pipeline: LoadedPipeline, seed: int = 0) -> Predictor:
    """compile_predictor's, or the one already compiled from the same verified content."""
    if pipeline.verified is None:
        return compile_predictor(pipeline, seed)
    key = (pipeline.verified, seed)
    predictor = _SHARED.get(key)
    if predictor is None:
        predictor = compile_predictor(pipeline, seed)
        _SHARED[key] = predictor
    return predictor


def compile_predictor(pipeline: LoadedPipeline, seed: int = 0) -> Predictor:
    """Per output, the fast path's function where it matches scikit-learn on reference rows, else
    scikit-learn's own; a regressor's with the deciles of its predictions on those rows."""
    rows = cache(partial(reference_rows, pipeline, seed))  # made once, where needed
    predictor = _checked(pipeline, rows)
    if pipeline.manifest.kind != "regressor" or "predict" not in predictor.outputs:
        return predictor
    values = predictor.predict(rows(), ("predict",))["predict"]
    return replace(predictor, deciles=np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)).round(6)))


def _checked(pipeline: LoadedPipeline, rows: Callable[[], np.ndarray]) -> Predictor:
    plain = _sklearn_outputs(pipeline)
    if pipeline.manifest.check is not None:
        _check_recorded(pipeline.manifest, Predictor(kind="sklearn", outputs=plain))
    if pipeline.manifest.form == "pipeline":
        compiled = _compiled_pipeline(pipeline, plain, rows)
        return compiled if compiled is not None else Predictor(kind="sklearn", outputs=plain)
    compiled_kind, folded = _fast_path_outputs(pipeline)
    if not folded:
        return Predictor(kind="sklearn", outputs=plain)
    reference = rows()
    outputs = dict(plain)
    for name, fn in folded.items():
        if _agrees(plain[name], fn, reference):
            outputs[name] = fn
        else:
            logger.warning(
                "%s fast path for output %r disagrees with scikit-learn; serving it with scikit-learn instead",
                compiled_kind,
                name,
            )
    kind = compiled_kind if all(outputs[n] is folded.get(n) for n in outputs) else "sklearn"
    return Predictor(kind=kind, outputs=outputs)


def recorded_rows(check: ReferenceCheck, manifest: Manifest) -> np.ndarray:
    """The recorded rows as the contract hands them over: float64 with NaN for null, or for a model with
    string columns an object matrix (floats, str, NaN for null)."""
    if not manifest.has_strings:
        return np.array(check.rows, dtype=np.float64)
    return np.array([[np.nan if v is None else v for v in row] for row in check.rows], dtype=object)


def _check_recorded(manifest: Manifest, predictor: Predictor) -> None:
    """The served answers on the recorded rows equal the original pipeline's, or the load fails."""
    check = manifest.check
    assert check is not None
    rows = recorded_rows(check, manifest)
    try:
        served = predictor.predict(rows, tuple(check.answers))
    except Exception as exc:  # a model that cannot answer its own reference rows must not serve
        raise ArtifactError(
            f"the pipeline fails on its recorded reference rows ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    for output, answer in check.answers.items():
        if not agrees_with_answers(served[output], np.asarray(answer)):
            raise ArtifactError(f"the pipeline's {output} differs from the original's recorded answers")


def agrees_with_answers(got: np.ndarray, want: np.ndarray) -> bool:
    """Labels exactly, numbers within CHECK_RTOL/ATOL."""
    if got.shape != want.shape:
        return False
    if want.dtype.kind in "fc":
        return bool(np.allclose(got, want, rtol=CHECK_RTOL, atol=CHECK_ATOL, equal_nan=True))
    return bool(got.tolist() == want.tolist())


def _agrees(reference_fn: OutputFn, candidate: OutputFn, rows: np.ndarray) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        expected = reference_fn(rows)
    got = _attempt(candidate, rows)
    return got is not None and _same(expected, got)


def _same(expected: np.ndarray, got: np.ndarray) -> bool:
    if expected.shape != got.shape:
        return False
    if expected.dtype.kind in "fc":
        return bool(np.allclose(got, expected, rtol=RTOL, atol=ATOL))
    return bool(np.array_equal(got, expected))


def reference_rows(pipeline: LoadedPipeline, seed: int) -> np.ndarray:
    """Rows to check the compiled path on: inside the manifest's per-feature ranges (with their
    corners) when it has them, else drawn around what the scaler learned, else standard normal; a
    categorical column cycles through its categories (and one unseen value, where unseen values are
    served); a column that may be missing also gets gaps. Object rows for a model with string columns."""
    manifest = pipeline.manifest
    numbers = _numeric_reference(pipeline, seed)
    if not any(c.categories is not None or c.kind == "string" for c in manifest.columns):
        return with_gaps(numbers, manifest.may_be_missing)
    rows = numbers.astype(object) if manifest.has_strings else numbers
    for j, column in enumerate(manifest.columns):
        if column.kind == "numeric" and column.categories is None:
            continue  # a plain numeric column keeps its numbers
        values: list[Any] = list(column.categories or [])
        if column.unseen == "counted" or not values:
            values.append(UNSEEN_STRING if column.kind == "string" else UNSEEN_NUMBER)
        rows[:, j] = [values[i % len(values)] for i in range(len(rows))]
    return with_gaps(rows, manifest.may_be_missing)


# Values no training set holds: a categorical column's reference rows include one, where the pipeline
# serves unseen values, so the check covers how it treats them.
UNSEEN_STRING = "\x00unseen"
UNSEEN_NUMBER = -987654321.0


def _numeric_reference(pipeline: LoadedPipeline, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ranges = pipeline.manifest.feature_ranges
    n = pipeline.manifest.n_features
    if ranges is not None:
        # A string column has no range: its values are set from its categories.
        low = np.array([0.0 if v is None else v for v in ranges.min])
        high = np.array([0.0 if v is None else v for v in ranges.max])
        inside = rng.uniform(low, high, size=(REFERENCE_ROWS, low.size))
        return np.vstack([low, high, (low + high) / 2, inside])
    standard = rng.normal(size=(REFERENCE_ROWS, n))
    if pipeline.scaler is not None:
        standard = np.asarray(pipeline.scaler.inverse_transform(standard), dtype=np.float64)
    return standard


def with_gaps(rows: np.ndarray, missing: tuple[bool, ...]) -> np.ndarray:
    """The rows plus a copy with every third value of each column that may be missing set to NaN, so
    a check covers the gaps the contract lets through."""
    if not any(missing):
        return rows
    gapped = rows.copy()
    for col in np.flatnonzero(missing):
        gapped[col % 3 :: 3, col] = np.nan
    return np.vstack([rows, gapped])


def _sklearn_outputs(pipeline: LoadedPipeline) -> dict[str, OutputFn]:
    scaler, model = pipeline.scaler, pipeline.model
    # A pipeline fitted on a DataFrame may select its columns by name (a ColumnTransformer): it gets
    # one, in the manifest's order; a compiled-form estimator has forgotten its names at load.
    names = getattr(model, "feature_names_in_", None)
    numeric = [c.kind == "numeric" for c in pipeline.manifest.columns]

    def call(method: str) -> OutputFn:
        bound = getattr(model, method)

        def run(features: np.ndarray) -> np.ndarray:
            # The contract already guarantees a float64 [N, F] matrix, finite but for the allowed gaps.
            with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
                x = scaler.transform(features) if scaler is not None else features
                if names is not None:
                    return np.asarray(bound(as_frame(x, names, numeric)))
                return np.asarray(bound(x))

        return run

    return {name: call(name) for name in offered_outputs(pipeline.manifest)}


def as_frame(features: np.ndarray, names: Any, numeric: list[bool]) -> pd.DataFrame:
    """The validated matrix as the DataFrame a pipeline fitted on one takes: float64 numeric columns
    and, for a model with string columns, object ones holding str (NaN for a gap)."""
    if features.dtype != object:
        return pd.DataFrame(features, columns=names, copy=False)
    columns = {
        name: features[:, j].astype(np.float64) if is_numeric else features[:, j]
        for j, (name, is_numeric) in enumerate(zip(names, numeric, strict=True))
    }
    return pd.DataFrame(columns, copy=False)


def _fast_path_outputs(pipeline: LoadedPipeline) -> tuple[str, dict[str, OutputFn]]:
    """The outputs the model's fast path compiles, with the path's name; none without a fast path."""
    kind = ESTIMATORS.of(pipeline.model)
    if kind is None or kind.fast_path is None:
        return "sklearn", {}
    scaler = pipeline.scaler
    preceding = Preceding(pipeline.manifest.n_features, scaler, TRANSFORMERS.of(scaler) if scaler is not None else None)
    return kind.fast_path.name, kind.fast_path.build(pipeline.model, preceding, offered_outputs(pipeline.manifest))


def _compiled_pipeline(
    pipeline: LoadedPipeline, plain: dict[str, OutputFn], reference: Callable[[], np.ndarray]
) -> Predictor | None:
    """The pipeline's preprocessing compiled and, per output, the first of the estimator's fast path
    and its own method that is bit-identical to the Pipeline on the reference rows; None (scikit-learn
    serves the whole model) where a step does not compile or an output has no such candidate."""
    manifest = pipeline.manifest
    names = tuple(manifest.feature_names) if hasattr(pipeline.model, "feature_names_in_") else None
    try:
        compiled = compile_pipeline(pipeline.model, Block(tuple(c.kind == "string" for c in manifest.columns), names))
    except NotCompiled as reason:
        logger.info("%s is served by scikit-learn's pipeline: %s", manifest.name, reason)
        return None
    rows = reference()
    prepared = _attempt(compiled.prepare, rows)
    outputs: dict[str, OutputFn] = {}
    for name in offered_outputs(manifest):
        chosen = None
        if prepared is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                expected = plain[name](rows)
            candidates = _estimator_candidates(compiled.estimator, prepared.shape[1], name, compiled.sparse)
            chosen = next((fn for fn in candidates if _same_bits(expected, _attempt(fn, prepared))), None)
        if chosen is None:
            logger.warning(
                "%s: the compiled pipeline's %s is not bit-identical to scikit-learn's; serving the pipeline",
                manifest.name,
                name,
            )
            return None
        outputs[name] = chosen
    return Predictor(kind=COMPILED_PIPELINE, outputs=outputs, prepare=compiled.prepare)


def _attempt(fn: OutputFn, x: np.ndarray) -> np.ndarray | None:
    """fn(x), or None (logged) where the compiled code cannot even run: a disagreement."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return fn(x)
    except Exception:
        logger.exception("compiled path failed on the reference rows")
        return None


def _same_bits(expected: np.ndarray, got: np.ndarray | None) -> bool:
    return got is not None and expected.shape == got.shape and bool(np.array_equal(expected, got))


def _estimator_candidates(estimator: Any, n_features: int, output: str, sparse: bool) -> list[OutputFn]:
    """The estimator's output over the compiled matrix: its registry fast path where that computes
    scikit-learn's bits, then its own method with scikit-learn's checks (already made by the contract
    and the compiled steps) off, unless the pipeline hands the estimator a sparse matrix (then its own
    arithmetic on the dense one may round otherwise)."""
    candidates: list[OutputFn] = []
    kind = ESTIMATORS.of(estimator)
    if kind is not None and kind.fast_path is not None and kind.fast_path.bit_identical:
        fast = kind.fast_path.build(estimator, Preceding(n_features, None, None), (output,))
        candidates.extend(fn for name, fn in fast.items() if name == output)
    if sparse:
        return candidates
    method = getattr(estimator, output)

    def own(x: np.ndarray) -> np.ndarray:
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return np.asarray(method(x))

    candidates.append(own)
    return candidates
