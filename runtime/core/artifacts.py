"""The model directory: its manifest, artifact hashes and safe loading.

A model version directory holds `manifest.json`, the model artifact and optionally a scaler
artifact (the compiled form), or the whole fitted pipeline as one model artifact (the pipeline form,
for any other pipeline of scikit-learn types), each in skops format (the default: only types on a
trusted list are ever built) or joblib (pickle: safe only because its sha256 is pinned). Every
artifact is read into memory, hashed, compared with the manifest and only then deserialised from
those same bytes, so a file swapped after the check is never deserialised; bytes another loaded
model was already verified and deserialised from (the same sha256) give that model's object.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import joblib
import numpy as np
import sklearn
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from sklearn.pipeline import Pipeline

from runtime.core.errors import ArtifactError, validation_problems

MANIFEST_FILE = "manifest.json"

logger = logging.getLogger("runtime.core.artifacts")

# A type recorded in a manifest is accepted only from this package (or from trusted_types).
SKLEARN_PREFIX = "sklearn."
NUMPY_PREFIX = "numpy."
# Types outside scikit-learn that fitted scikit-learn steps hold as data: an imputer's fitted dtype, a
# SplineTransformer's B-splines (with the array conversion they reference), never code that runs more.
FITTED_DATA_TYPES = frozenset(
    {"numpy.dtype", "scipy.interpolate._bsplines.BSpline", "scipy._lib.array_api_compat.numpy._aliases.asarray"}
)


def trusted_type(name: str) -> bool:
    """A scikit-learn type, a type fitted steps hold as data, or a numpy ufunc (a FunctionTransformer's
    np.log1p): code that only ever maps arrays to arrays."""
    if name.startswith(SKLEARN_PREFIX) or name in FITTED_DATA_TYPES:
        return True
    if not name.startswith(NUMPY_PREFIX) or name.count(".") != 1:
        return False
    return isinstance(getattr(np, name.removeprefix(NUMPY_PREFIX), None), np.ufunc)


class ArtifactRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str
    sha256: str
    # No default: a manifest must say whether its artifact is skops or (pinned) pickle.
    format: Literal["skops", "joblib"]
    # The types beyond skops' defaults the artifact holds, recorded at packaging: the loader
    # accepts exactly these.
    types: list[str] = []


@dataclass(frozen=True)
class LoadPolicy:
    """What a load may accept beyond the safe defaults; set from parameters.extra."""

    extra_trusted_types: tuple[str, ...] = ()
    allow_sklearn_version_mismatch: bool = False


class FeatureRanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # None for a string column, which has no range.
    min: list[float | None]
    max: list[float | None]

    def band(self) -> tuple[np.ndarray, np.ndarray]:
        """The bounds as float64 arrays, unbounded (-inf, +inf) for a string column."""
        low = np.array([-np.inf if v is None else v for v in self.min], dtype=np.float64)
        high = np.array([np.inf if v is None else v for v in self.max], dtype=np.float64)
        return low, high


class InputColumn(BaseModel):
    """One input column of the schema: its name, its kind (numbers, or strings sent as BYTES), whether
    a value may be missing (sent as JSON null or NaN), which holds only where the pipeline itself fills
    or takes the gap, and for a categorical column the categories seen in training, outside which a
    value is refused (`unseen: "refused"`, where the encoder would raise) or served and counted as out of
    distribution (`"counted"`)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["numeric", "string"] = "numeric"
    missing: bool = False
    categories: list[str] | list[float] | None = None
    unseen: Literal["refused", "counted"] = "counted"

    @model_validator(mode="after")
    def _consistent(self) -> InputColumn:
        if self.categories is not None:
            numbers = all(isinstance(c, (int, float)) for c in self.categories)
            if numbers == (self.kind == "string") and self.categories:
                raise ValueError(f"column '{self.name}': categories must be of the column's kind ({self.kind})")
        elif self.unseen == "refused":
            raise ValueError(f"column '{self.name}': unseen values can only be refused given the categories")
        return self


class ReferenceCheck(BaseModel):
    """Rows the packager asked the original pipeline, with its answers per output: a pipeline-form model
    is checked against them at every load, as a compiled one is checked against scikit-learn."""

    model_config = ConfigDict(extra="forbid")

    rows: list[list[float | str | None]]  # None: a missing value
    answers: dict[str, list[Any]]


class Manifest(BaseModel):
    """What a model version promises; written by `pipeline_tools.package`, checked at every load."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    kind: Literal["regressor", "classifier"]
    estimator: str
    feature_names: list[str]
    # Class labels as the estimator holds them: integers, or strings (answered as BYTES).
    classes: list[int] | list[str] | None = None
    outputs: list[Literal["predict", "predict_proba", "decision_function"]]
    trained_with: dict[str, str]
    model: ArtifactRef
    scaler: ArtifactRef | None = None
    # "compiled": `scaler` (optional) then `model`, the estimator; "pipeline": `model` holds the whole
    # fitted pipeline (any scikit-learn types) and `estimator` names its final step.
    form: Literal["compiled", "pipeline"] = "compiled"
    # The input schema; a manifest without one has numeric columns none of which may be missing.
    inputs: list[InputColumn] | None = None
    # The pipeline form's promise: the original pipeline's answers on reference rows.
    check: ReferenceCheck | None = None
    # Per-feature bands of the out-of-distribution check, and where they came from.
    feature_ranges: FeatureRanges | None = None
    feature_ranges_source: Literal["reference", "scaler", "none"]

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        n = len(self.feature_names)
        if len(set(self.feature_names)) != n:
            raise ValueError("feature_names must be unique")
        if any("," in f or not f for f in self.feature_names):
            raise ValueError("feature names must be non-empty and free of commas (metadata joins them)")
        ranges = self.feature_ranges
        if ranges is not None and (len(ranges.min) != n or len(ranges.max) != n):
            raise ValueError("feature_ranges must have one min and one max per feature")
        if (self.kind == "classifier") != (self.classes is not None):
            raise ValueError("classes must be given for classifiers and only for them")
        if "predict" not in self.outputs or len(set(self.outputs)) != len(self.outputs):
            raise ValueError("outputs must name predict, and each output once")
        if self.kind == "regressor" and set(self.outputs) != {"predict"}:
            raise ValueError("a regressor offers predict only")
        if self.inputs is not None and [c.name for c in self.inputs] != self.feature_names:
            raise ValueError("inputs must name the feature_names, in their order")
        if self.form == "pipeline" and self.scaler is not None:
            raise ValueError("a pipeline-form manifest holds its scaler inside the model artifact")
        if self.check is not None and any(len(row) != n for row in self.check.rows):
            raise ValueError("check rows must hold one value per feature")
        if self.form == "compiled" and self.has_strings:
            raise ValueError("string columns are served in the pipeline form only")
        return self

    @property
    def columns(self) -> list[InputColumn]:
        return self.inputs if self.inputs is not None else [InputColumn(name=f) for f in self.feature_names]

    @property
    def may_be_missing(self) -> tuple[bool, ...]:
        """Per feature, whether a missing value is accepted there."""
        return tuple(c.missing for c in self.columns)

    @property
    def has_strings(self) -> bool:
        """Whether any input column holds strings: requests then come one tensor per column."""
        return any(c.kind == "string" for c in self.columns)

    @property
    def string_labels(self) -> bool:
        return self.classes is not None and len(self.classes) > 0 and isinstance(self.classes[0], str)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


@dataclass(frozen=True)
class LoadedPipeline:
    manifest: Manifest
    scaler: Any | None
    model: Any
    # Set by load_pipeline: the sha256 of what was verified, the manifest (its artifacts' hashes
    # included) but for the name and version it is served under. None for a pipeline assembled otherwise.
    verified: str | None = None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(model_dir: Path) -> Manifest:
    path = model_dir / MANIFEST_FILE
    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: manifest is missing") from None
    except (ValueError, ValidationError) as exc:
        raise ArtifactError(f"{path}: invalid manifest: {validation_problems(exc)}") from None


def read_verified(model_dir: Path, ref: ArtifactRef) -> bytes:
    """The artifact's bytes, only if they hash to what the manifest pins."""
    path = model_dir / ref.file
    if path.resolve().parent != model_dir.resolve():
        raise ArtifactError(f"{path}: artifacts must sit directly in the model directory")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: artifact is missing") from None
    actual = sha256_hex(data)
    if actual != ref.sha256:
        raise ArtifactError(f"{path}: sha256 mismatch (manifest {ref.sha256}, file {actual}); refusing to load it")
    return data


def accepted_types(ref: ArtifactRef, policy: LoadPolicy) -> set[str]:
    """The recorded scikit-learn types, plus whatever the model's settings trust explicitly."""
    recorded = {t for t in ref.types if trusted_type(t)}
    return recorded | set(policy.extra_trusted_types)


@contextlib.contextmanager
def _pytest_hidden() -> Iterator[None]:
    """pytest, where installed (a development environment) and not yet imported, made unimportable."""
    if "pytest" in sys.modules:
        yield
        return
    sys.modules["pytest"] = None  # type: ignore[assignment]  # None: `import pytest` raises ImportError
    try:
        yield
    finally:
        del sys.modules["pytest"]


@functools.cache
def skops_io() -> ModuleType:
    """skops.io, with pytest hidden: skops.io lists every scikit-learn estimator at import, through
    scikit-learn's test helpers, which import pytest where it is installed; serving never uses them.
    The server imports it at start, before any model loads (runtime.integration.install, with a
    faster module lookup), so a model's load timer measures its own load and a missing or broken
    skops fails the start; other users (the packaging tools, tests) import it at first use."""
    try:
        with _pytest_hidden():
            import skops.io
    except ImportError as exc:
        raise ArtifactError(f"skops artifacts need skops.io, which cannot be imported: {exc}") from None
    return sys.modules[skops.io.__name__]


# A verified artifact's object by (sha256, format, accepted types, manifest form): deserialising is a
# function of the bytes (hashed at every load) and the types accepted, so models loaded from the same
# bytes (copies of one version, one pipeline under many names) share one object, never modified once
# loaded; weak, so it goes with the last model holding it.
_VERIFIED: weakref.WeakValueDictionary[tuple[str, str, frozenset[str], str], Any] = weakref.WeakValueDictionary()


def _load_verified(model_dir: Path, ref: ArtifactRef, policy: LoadPolicy, form: str) -> Any:
    data = read_verified(model_dir, ref)
    accepted = accepted_types(ref, policy) if ref.format == "skops" else set()
    key = (ref.sha256, ref.format, frozenset(accepted), form)
    cached = _VERIFIED.get(key)
    if cached is not None:
        return cached
    loaded = _deserialise(model_dir, ref, data, accepted)
    if form == "compiled":
        # The pipeline form keeps its names: a ColumnTransformer may select columns by them.
        _forget_column_names(loaded)
    with contextlib.suppress(TypeError):  # an object that cannot be referenced weakly is not shared
        _VERIFIED[key] = loaded
    return loaded


def _deserialise(model_dir: Path, ref: ArtifactRef, data: bytes, accepted: set[str]) -> Any:
    if ref.format == "joblib":
        return joblib.load(io.BytesIO(data))
    skops = skops_io()
    try:
        # skops audits the whole tree before it builds anything, trusting its defaults and `accepted`.
        return skops.loads(data, trusted=sorted(accepted))
    except skops.exceptions.UntrustedTypesFoundException:
        untrusted = [t for t in skops.get_untrusted_types(data=data) if t not in accepted]
    raise ArtifactError(
        f"{model_dir / ref.file}: refusing untrusted types {untrusted}: the manifest does not "
        "record them as scikit-learn types (package the model with `python -m pipeline_tools.package`); "
        "add them to parameters.extra.trusted_types only if you trust this artifact's author"
    )


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def check_sklearn_version(manifest: Manifest, policy: LoadPolicy) -> None:
    """Pickled estimators are only promised to work on the scikit-learn minor that wrote them."""
    trained = manifest.trained_with.get("scikit-learn", "unknown")
    installed = sklearn.__version__
    if _minor(trained) == _minor(installed):
        return
    message = f"artifacts were trained with scikit-learn {trained} but {installed} is installed"
    if not policy.allow_sklearn_version_mismatch:
        raise ArtifactError(f"{message}; retrain them or set parameters.extra.allow_sklearn_version_mismatch")
    logger.warning("%s; loading anyway because allow_sklearn_version_mismatch is set", message)


def _check_feature_count(name: str, estimator: Any, expected: int) -> None:
    got = getattr(estimator, "n_features_in_", None)
    if got != expected:
        raise ArtifactError(f"{name} expects {got} features but the manifest names {expected}")


def type_path(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def class_labels(model: Any) -> list[Any]:
    """The estimator's class labels as JSON values (numpy scalars unwrapped)."""
    return [c.item() if hasattr(c, "item") else c for c in getattr(model, "classes_", [])]


def final_estimator(obj: Any) -> Any:
    """The last step of a (nested) Pipeline; the object itself otherwise."""
    while isinstance(obj, Pipeline):
        obj = obj.steps[-1][1]
    return obj


def _check_model(model: Any, manifest: Manifest) -> None:
    if manifest.form == "pipeline" and not isinstance(model, Pipeline):
        raise ArtifactError(f"model {manifest.model.file} is a {type_path(model)}, the manifest says a Pipeline")
    estimator = final_estimator(model)
    if type_path(estimator) != manifest.estimator:
        holds = "is" if estimator is model else "ends in"
        raise ArtifactError(
            f"model {manifest.model.file} {holds} a {type_path(estimator)}, the manifest says {manifest.estimator}"
        )
    missing = [o for o in manifest.outputs if not hasattr(model, o)]
    if missing:
        raise ArtifactError(f"the manifest offers {missing} but the model has no such method")
    if manifest.kind != "classifier":
        return
    classes = class_labels(model)
    if classes != manifest.classes:
        raise ArtifactError(f"model classes {classes} differ from the manifest's {manifest.classes}")


def load_pipeline(model_dir: Path, policy: LoadPolicy = LoadPolicy()) -> LoadedPipeline:
    """Verify and load one model version directory, or raise ArtifactError naming the problem."""
    manifest = read_manifest(model_dir)
    check_sklearn_version(manifest, policy)
    scaler = _load_verified(model_dir, manifest.scaler, policy, manifest.form) if manifest.scaler else None
    model = _load_verified(model_dir, manifest.model, policy, manifest.form)
    if manifest.scaler is not None:
        _check_feature_count(f"scaler {manifest.scaler.file}", scaler, manifest.n_features)
    _check_feature_count(f"model {manifest.model.file}", model, manifest.n_features)
    _check_model(model, manifest)
    verified = sha256_hex(manifest.model_dump_json(exclude={"name", "version"}).encode())
    return LoadedPipeline(manifest=manifest, scaler=scaler, model=model, verified=verified)


def _forget_column_names(estimator: Any) -> None:
    """The contract hands over columns in the manifest's order, as a matrix: scikit-learn's own
    name check (fitted on a DataFrame) would only warn on every request."""
    if estimator is not None and hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_
