"""Package a fitted scikit-learn pipeline as a model directory this runtime serves.

    python -m pipeline_tools.package PIPELINE_FILE --name NAME --version VERSION [--out models]
        [--features a,b,c] [--reference data.csv] [--force]

PIPELINE_FILE holds a fitted scikit-learn `Pipeline`, a `(scaler, model)` tuple or a bare estimator,
saved with joblib/pickle (.joblib, .pkl) or skops (.skops). An optional registered scaler then a
registered estimator is packaged in the compiled form (scaler and model artifacts, served by the
compiled fast paths); any other pipeline of scikit-learn types over numeric columns is packaged whole
(the pipeline form, served by scikit-learn; the original's answers on reference rows are recorded in
the manifest and checked at every load).
Reading a pickle is the user's own, local act here; the directory written needs no pickle again:
skops artifacts, with exactly the types they hold recorded in the manifest, and the input schema
(each column's name, kind and whether it may be missing).
`write_model_dir()` does the same from Python (notebooks, training jobs, pipeline_tools.train).
The command then prints a curl call for the port `make serve` listens on, with a realistic row (from
--reference, else the training statistics) and the answer the runtime computes for it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import sklearn
import skops.io
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline

from pipeline_tools.pipeline_walk import ColumnFacts, StepRefusedError, check_steps, column_facts, typical_values
from runtime.core.artifacts import (
    MANIFEST_FILE,
    FeatureRanges,
    InputColumn,
    LoadedPipeline,
    Manifest,
    ReferenceCheck,
    class_labels,
    final_estimator,
    load_pipeline,
    sha256_hex,
    trusted_type,
    type_path,
)
from runtime.core.contract import Contract, Tensor
from runtime.core.errors import ArtifactError, PipelineError, first_line
from runtime.core.outputs import offered_outputs
from runtime.core.predictor import as_frame, compile_predictor, reference_rows
from runtime.core.response import encode_outputs, output_specs
from runtime.core.steps.kinds import Estimator, StepKind, Transformer
from runtime.core.steps.registry import ESTIMATORS, TRANSFORMERS

IMPLEMENTATION = "runtime.PipelineRuntime"
PIPELINE_SUFFIXES = (".joblib", ".pkl", ".pickle", ".skops")
CLASSIFIER_OUTPUTS = ("predict_proba", "decision_function")
# How many reference rows (and the original pipeline's answers) a pipeline-form manifest records.
CHECK_ROWS = 32
MAX_ROWS = 10_000  # parameters.extra.max_rows of the model-settings.json written


class PackagingError(Exception):
    """A pipeline that cannot be packaged: one line for the user, exit code 2."""


@dataclass(frozen=True)
class Parts:
    scaler: Any | None
    model: Any  # the estimator (the pipeline's final step in the pipeline form)
    # Their step registry entries (the scaler's is None without a scaler; the model's is None for an
    # estimator the registry does not know, served in the pipeline form).
    scaler_kind: Transformer | None
    model_kind: Estimator | None
    # The pipeline form: the whole fitted pipeline, packaged as one artifact; None in the compiled form.
    whole: Pipeline | None = None

    @property
    def served(self) -> Any:
        """What the model artifact holds: the whole pipeline, or the estimator."""
        return self.whole if self.whole is not None else self.model

    @property
    def n_features(self) -> int:
        return int(self.served.n_features_in_)


# ------------------------------------------------------------------------------ reading


def read_pipeline_file(path: Path) -> Any:
    """The object in a joblib/pickle or skops file (skops: scikit-learn types only)."""
    if path.suffix not in PIPELINE_SUFFIXES:
        raise PackagingError(f"{path}: expected a {', '.join(PIPELINE_SUFFIXES)} file")
    if not path.is_file():
        raise PackagingError(f"{path}: no such file")
    try:
        if path.suffix == ".skops":
            untrusted = skops.io.get_untrusted_types(file=path)
            foreign = [t for t in untrusted if not trusted_type(t)]
            if foreign:
                raise PackagingError(f"{path}: holds types outside scikit-learn: {foreign}")
            return skops.io.load(path, trusted=untrusted)
        return joblib.load(path)
    except PackagingError:
        raise
    except Exception as exc:  # whatever the file is, the user gets one line
        raise PackagingError(f"{path}: cannot be read as a {path.suffix} file ({type(exc).__name__}: {exc})") from None


def split_pipeline(obj: Any) -> Parts:
    """The compiled form's (scaler or None, estimator) from a Pipeline, a (scaler, model) tuple or an
    estimator when it has that shape, else the whole pipeline (the pipeline form)."""
    if isinstance(obj, Pipeline):
        steps = [(name, step) for name, step in obj.steps if step not in (None, "passthrough")]
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        steps = [(f"item {i}", step) for i, step in enumerate(obj) if step is not None]
    elif hasattr(obj, "fit") and hasattr(obj, "get_params"):
        steps = [("estimator", obj)]
    else:
        raise PackagingError(
            f"a {type(obj).__name__} is not a scikit-learn Pipeline, estimator or (scaler, model) tuple"
        )
    if not steps:
        raise PackagingError("the pipeline has no estimator")
    *leading, (_, model) = steps
    estimators = [name for name, step in steps if ESTIMATORS.family(step) is not None]
    if len(estimators) > 1:
        raise PackagingError(f"more than one estimator ({', '.join(estimators)}); package one model")
    scaler_kind = TRANSFORMERS.family(leading[0][1]) if len(leading) == 1 else None
    model_kind = ESTIMATORS.family(model)
    if model_kind is None or len(leading) > 1 or (leading and scaler_kind is None):
        return _whole(obj if isinstance(obj, Pipeline) else Pipeline(steps))
    kinds: list[StepKind] = [scaler_kind] if scaler_kind is not None else []
    _check_steps(steps, [*kinds, model_kind])
    return Parts(leading[0][1] if leading else None, model, scaler_kind, model_kind)


def _whole(pipeline: Pipeline) -> Parts:
    """The pipeline form, once every object in it is one the runtime can load and serve."""
    try:
        check_steps(pipeline)
    except StepRefusedError as exc:
        raise PackagingError(str(exc)) from None
    model = final_estimator(pipeline)
    if not hasattr(model, "predict"):
        raise PackagingError(f"the pipeline ends in a {type(model).__name__}, which does not predict")
    return Parts(None, model, None, ESTIMATORS.of(model), pipeline)


def _check_steps(steps: list[tuple[str, Any]], kinds: list[StepKind]) -> None:
    """What each step's registry entry refuses, then whether it is fitted, then its exact type."""
    for (_, step), kind in zip(steps, kinds, strict=True):
        problem = kind.refuse(step)
        if problem is not None:
            raise PackagingError(problem)
    for (name, step), kind in zip(steps, kinds, strict=True):
        if not kind.fitted(step):
            raise PackagingError(f"'{name}' ({type(step).__name__}) is not fitted; fit it first")
    # Exact types only: a subclass may override what the compiled path folds away.
    for (_, step), kind in zip(steps, kinds, strict=True):
        if type(step) is not kind.cls:
            raise PackagingError(f"{type_path(step)} is a subclass; package the scikit-learn class itself")


# ------------------------------------------------------------------------------ features, ranges


def feature_names(parts: Parts, given: Sequence[str] | None) -> list[str]:
    """The names the pipeline was fitted with, else `given`, else x0..xN-1."""
    n = parts.n_features
    if parts.scaler_kind is not None and parts.model_kind is not None:
        n = parts.model_kind.reads(parts.model)
        if parts.scaler_kind.writes(parts.scaler) != n:
            raise PackagingError(
                f"the scaler expects {parts.scaler_kind.reads(parts.scaler)} features but the estimator {n}"
            )
    fitted = getattr(parts.scaler if parts.scaler is not None else parts.served, "feature_names_in_", None)
    names = [str(f) for f in fitted] if fitted is not None else None
    if given is not None:
        given = [g.strip() for g in given]
        if len(given) != n:
            raise PackagingError(f"--features names {len(given)} features but the pipeline expects {n}")
        if names is not None and names != given:
            raise PackagingError(f"--features {given} differ from the names the pipeline was fitted with {names}")
        names = given
    names = names or [f"x{i}" for i in range(n)]
    if len(set(names)) != n or any(not f or "," in f for f in names):
        raise PackagingError(f"feature names must be unique, non-empty and free of commas: {names}")
    return names


def read_reference_csv(path: Path, names: Sequence[str]) -> pd.DataFrame:
    """The CSV's columns named `names` (its header), in that order: numbers where a column holds only
    numbers (an empty cell is a missing value), strings otherwise."""
    try:
        table = pd.read_csv(path, skipinitialspace=True, keep_default_na=False, na_values=[""])
    except OSError as exc:
        raise PackagingError(f"--reference {path}: {exc.strerror}") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise PackagingError(f"--reference {path}: not a CSV table ({first_line(exc)})") from None
    if table.empty:
        raise PackagingError(f"--reference {path}: expected a header row and at least one data row")
    table.columns = [str(c).strip() for c in table.columns]
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise PackagingError(f"--reference {path}: no column for feature(s) {missing}; header: {list(table.columns)}")
    return table[list(names)]


def reference_frame(reference: np.ndarray | pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Reference rows as a DataFrame of the features, in order (a matrix is taken as numbers)."""
    if isinstance(reference, pd.DataFrame):
        absent = [n for n in names if n not in reference.columns]
        if absent:
            raise PackagingError(f"the reference data has no column for feature(s) {absent}")
        return reference[list(names)]
    matrix = np.asarray(reference, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(names) or not len(matrix):
        raise PackagingError(f"the reference data has shape {list(matrix.shape)}, expected [rows, {len(names)}]")
    return pd.DataFrame(matrix, columns=list(names))


def feature_ranges(
    parts: Parts, reference: pd.DataFrame | None, string: Sequence[bool]
) -> tuple[FeatureRanges | None, str]:
    """The out-of-distribution bands and their source: the reference data (no band for a string
    column), else what the scaler learned (as its registry entry records it), else none."""
    if reference is not None:
        empty = [f"'{n}'" for n, gaps in reference.isna().all(axis=0).items() if gaps]
        if empty:
            raise PackagingError(f"the reference data has no value at all in column(s) {', '.join(empty)}")
        low: list[float | None] = []
        high: list[float | None] = []
        for (name, values), is_string in zip(reference.items(), string, strict=True):
            if is_string:
                low.append(None)
                high.append(None)
                continue
            try:
                numbers = pd.to_numeric(values).astype(np.float64)
            except (ValueError, TypeError):
                raise PackagingError(f"the reference column '{name}' is not numbers, as the model's is") from None
            # A gap in the reference data is a missing value, not a bound.
            low.append(float(numbers.min()))
            high.append(float(numbers.max()))
        return FeatureRanges(min=low, max=high), "reference"
    if parts.scaler_kind is None:
        return None, "none"
    return parts.scaler_kind.ranges(parts.scaler)


def input_schema(parts: Parts, names: Sequence[str], reference: pd.DataFrame | None) -> list[InputColumn]:
    """Each column's kind, whether it may be missing and its categories: as the pipeline tells, a
    column of strings in the reference data being a string column too."""
    if parts.whole is not None:
        facts = column_facts(parts.whole, parts.n_features)
    else:  # the estimator takes NaN itself, or not (the scalers keep NaN as it is)
        facts = [ColumnFacts(missing=parts.model_kind is not None and parts.model_kind.takes_nan)] * len(names)
    columns = []
    for j, (name, fact) in enumerate(zip(names, facts, strict=True)):
        string = fact.string or (reference is not None and _holds_strings(reference.iloc[:, j]))
        if string and parts.whole is None:  # the compiled form reads numbers in every column
            raise PackagingError(f"the reference column '{name}' holds text, but the model reads numbers there")
        categories = fact.categories
        if string and categories is not None:
            categories = [str(c) for c in categories]
        columns.append(
            InputColumn(
                name=name,
                kind="string" if string else "numeric",
                missing=fact.missing,
                categories=categories,
                unseen=fact.unseen if categories is not None else "counted",
            )
        )
    return columns


def _holds_strings(values: pd.Series) -> bool:
    return bool(values.dtype == object and values.map(lambda v: isinstance(v, str)).any())


# ------------------------------------------------------------------------------ writing


def _dump(obj: Any, directory: Path, stem: str) -> dict[str, Any]:
    data = skops.io.dumps(obj)
    types = sorted(skops.io.get_untrusted_types(data=data))
    foreign = [t for t in types if not trusted_type(t)]
    if foreign:
        raise PackagingError(
            f"{type(obj).__name__} holds types outside scikit-learn {foreign}; the runtime would refuse it"
        )
    (directory / f"{stem}.skops").write_bytes(data)
    return {"file": f"{stem}.skops", "sha256": sha256_hex(data), "format": "skops", "types": types}


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def model_settings(name: str, version: str) -> dict[str, Any]:
    return {
        "name": name,
        "implementation": IMPLEMENTATION,
        "parameters": {"version": version, "uri": ".", "extra": {"max_rows": MAX_ROWS}},
    }


def build_manifest(
    parts: Parts,
    name: str,
    version: str,
    names: list[str],
    ranges: tuple[FeatureRanges | None, str],
    directory: Path,
    schema: list[InputColumn],
) -> Manifest:
    served = parts.served
    classifier = is_classifier(served)
    outputs = ["predict"]
    if classifier:
        outputs += [o for o in CLASSIFIER_OUTPUTS if hasattr(served, o)]
    doc: dict[str, Any] = {
        "name": name,
        "version": version,
        "kind": "classifier" if classifier else "regressor",
        "estimator": type_path(parts.model),
        "feature_names": names,
        "form": "pipeline" if parts.whole is not None else "compiled",
        "inputs": [c.model_dump() for c in schema],
        "classes": class_labels(served) if classifier else None,
        "outputs": outputs,
        "trained_with": {
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "model": _dump(served, directory, "model"),
        "feature_ranges": ranges[0].model_dump() if ranges[0] is not None else None,
        "feature_ranges_source": ranges[1],
    }
    if parts.scaler is not None:
        doc["scaler"] = _dump(parts.scaler, directory, "scaler")
    try:
        return Manifest.model_validate(doc)
    except ValueError as exc:
        raise PackagingError(f"the pipeline does not make a valid manifest: {exc}") from None


def reference_check(parts: Parts, manifest: Manifest) -> ReferenceCheck | None:
    """The pipeline form's promise: the original pipeline's answers on reference rows (with gaps where
    the schema allows them), recorded in the manifest and checked at every load."""
    if parts.whole is None:
        return None  # the compiled form is checked against scikit-learn at every load
    rows = reference_rows(LoadedPipeline(manifest, None, parts.whole), seed=0)
    rows = rows[:: max(1, len(rows) // CHECK_ROWS)]
    names = getattr(parts.whole, "feature_names_in_", None)
    numeric = [c.kind == "numeric" for c in manifest.columns]
    original_input = as_frame(rows, names, numeric) if names is not None else rows
    try:
        with np.errstate(all="ignore"):
            answers = {o: np.asarray(getattr(parts.whole, o)(original_input)) for o in offered_outputs(manifest)}
    except Exception as exc:  # whatever fails, the user gets one line
        raise PackagingError(
            f"the pipeline fails on reference rows ({type(exc).__name__}: {first_line(exc)}); "
            "pass --reference with rows it serves"
        ) from None
    return ReferenceCheck(
        rows=[[_recorded(v) for v in row] for row in rows.tolist()],
        answers={o: a.tolist() for o, a in answers.items()},
    )


def _recorded(value: Any) -> float | str | None:
    if isinstance(value, str):
        return value
    return None if np.isnan(value) else float(value)


def write_model_dir(
    pipeline: Any,
    name: str,
    version: str,
    out: Path = Path("models"),
    *,
    features: Sequence[str] | None = None,
    reference: np.ndarray | pd.DataFrame | None = None,
    force: bool = False,
) -> Path:
    """Write out/NAME/VERSION complete (artifacts, manifest.json, model-settings.json), load it
    back through the runtime's own loader and return it; nothing is left behind on failure."""
    for label, value in (("name", name), ("version", version)):
        if not value or "/" in value or value.startswith("."):
            raise PackagingError(f"--{label} {value!r}: expected a plain directory name")
    parts = split_pipeline(pipeline)
    names = feature_names(parts, features)
    target = Path(out) / name / version
    if target.exists() and not force:
        raise PackagingError(f"{target} already exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
    try:
        frame = reference_frame(reference, names) if reference is not None else None
        schema = input_schema(parts, names, frame)
        ranges = feature_ranges(parts, frame, [c.kind == "string" for c in schema])
        manifest = build_manifest(parts, name, version, names, ranges, staging, schema)
        check = reference_check(parts, manifest)
        if check is not None:
            manifest = Manifest.model_validate({**manifest.model_dump(), "check": check.model_dump()})
        _write_json(staging / MANIFEST_FILE, manifest.model_dump(mode="json", exclude_none=True))
        _write_json(staging / "model-settings.json", model_settings(name, version))
        try:
            compile_predictor(load_pipeline(staging))
        except ArtifactError as exc:
            raise PackagingError(f"the packaged model does not load: {exc}") from None
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# `make serve` listens where MLSERVER_HTTP_PORT says, 8080 unless set (the Makefile's `?=`): the hint
# follows the same variable, so an exported port reaches both.
DEFAULT_HTTP_PORT = 8080
EXAMPLE_TEXT = "text"  # a string column with no categories takes any text


def serve_port() -> int:
    return int(os.environ.get("MLSERVER_HTTP_PORT") or DEFAULT_HTTP_PORT)


@dataclass(frozen=True)
class Example:
    """One row for the printed curl call, where it comes from, and the runtime's answer to it."""

    row: list[Any]
    source: str
    body: dict[str, Any]
    answer: str  # the outputs the runtime computes for it, as JSON, or why it would refuse the row


def example_row(loaded: LoadedPipeline, reference: pd.DataFrame | None = None) -> tuple[list[Any], str]:
    """A realistic row and where it comes from: the first complete row of the reference data, else
    the training statistics (the ranges' middle, an imputer's fill, a scaler's centre; a categorical
    column's first category), else zeros, said so."""
    manifest = loaded.manifest
    if reference is not None:
        complete = reference.dropna()
        first = (complete if len(complete) else reference).iloc[0]
        return [_json_value(v) for v in first.tolist()], "the first complete row of --reference"
    compiled = [s for s in (loaded.scaler, loaded.model) if s is not None]
    steps = [loaded.model] if manifest.form == "pipeline" else compiled
    typical = typical_values(steps, manifest.n_features)
    ranges = manifest.feature_ranges
    unbounded: list[float | None] = [None] * manifest.n_features
    lows, highs = (ranges.min, ranges.max) if ranges is not None else (unbounded, unbounded)
    row: list[Any] = []
    for column, low, high, usual in zip(manifest.columns, lows, highs, typical, strict=True):
        if column.categories:
            row.append(column.categories[0])
        elif column.kind == "string":
            row.append(usual if isinstance(usual, str) else EXAMPLE_TEXT)
        elif low is not None and high is not None:
            row.append(_short((low + high) / 2))
        else:
            row.append(_short(usual) if isinstance(usual, float) else None)
    if None not in row:
        return row, "the training statistics"
    return [0.0 if v is None else v for v in row], (
        "zeros where the model learned no statistics; pass --reference data.csv for a realistic row"
    )


def _short(value: float) -> float:
    """Six significant digits: a row a person reads and types."""
    return float(f"{value:.6g}")


def _json_value(value: Any) -> Any:
    """A reference cell as JSON: str, a float, or null for a gap."""
    if isinstance(value, str):
        return value
    return None if pd.isna(value) else float(value)


def example_body(manifest: Manifest, row: list[Any]) -> dict[str, Any]:
    """A V2 request of one row: one [1, F] tensor, or one tensor per column with strings."""
    if not manifest.has_strings:
        return {"inputs": [{"name": "features", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
    tensors = [
        {"name": c.name, "shape": [1], "datatype": "BYTES" if c.kind == "string" else "FP64", "data": [v]}
        for c, v in zip(manifest.columns, row, strict=True)
    ]
    return {"inputs": tensors}


def runtime_answer(loaded: LoadedPipeline, body: dict[str, Any]) -> str:
    """The outputs the runtime's own contract and predictor give for the body, as the server sends them."""
    manifest = loaded.manifest
    try:
        parsed = Contract.for_manifest(manifest, MAX_ROWS).parse(None, [Tensor(**t) for t in body["inputs"]])
        results = compile_predictor(loaded).predict(parsed.features, parsed.outputs)
    except PipelineError as exc:
        return f"refused: {exc}"
    outputs = [vars(o) for o in encode_outputs(results, output_specs(manifest))]
    return json.dumps({"outputs": outputs}, separators=(",", ":"))


def example(model_dir: Path, reference: pd.DataFrame | None = None) -> Example:
    loaded = load_pipeline(model_dir)
    row, source = example_row(loaded, reference)
    body = example_body(loaded.manifest, row)
    return Example(row, source, body, runtime_answer(loaded, body))


def curl_command(body: dict[str, Any], name: str, version: str, port: int) -> str:
    return (
        f"curl -s localhost:{port}/v2/models/{name}/versions/{version}/infer "
        f"-H 'content-type: application/json' -d {shlex.quote(json.dumps(body))}"
    )


def print_hint(target: Path, name: str, version: str, reference: pd.DataFrame | None) -> None:
    shown = example(target, reference)
    print("serve it with `make serve` (or `mlserver start .`), then:")
    print(curl_command(shown.body, name, version, serve_port()))
    print(f"# the row: {shown.source}; the runtime answers it with")
    print(f"# {shown.answer}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline_tools.package", description=__doc__.splitlines()[0])
    parser.add_argument("pipeline_file", type=Path, metavar="PIPELINE_FILE")
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--features", help="comma-separated feature names (when the pipeline has none)")
    parser.add_argument("--reference", type=Path, help="CSV with a header of feature names: the ranges")
    parser.add_argument("--force", action="store_true", help="replace an existing version directory")
    args = parser.parse_args(argv)
    try:
        pipeline = read_pipeline_file(args.pipeline_file)
        features = args.features.split(",") if args.features else None
        parts_names = feature_names(split_pipeline(pipeline), features)
        reference = read_reference_csv(args.reference, parts_names) if args.reference else None
        target = write_model_dir(
            pipeline,
            args.name,
            args.version,
            args.out,
            features=features,
            reference=reference,
            force=args.force,
        )
    except PackagingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {target}")
    print_hint(target, args.name, args.version, reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
