"""The shipped models (models/<name>/<version>/): what is served, the version a request naming
none gets, the artifacts loaded with runtime.core.artifacts (the runtime's own loader, MLServer-free),
expected predictions with plain scikit-learn on the loaded objects, and the parity check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.core.artifacts import LoadedPipeline, Manifest, load_pipeline, read_manifest

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"

DIABETES = "diabetes"
BREAST_CANCER = "breast-cancer"

PARITY_RTOL = 1e-9
PROBA_ATOL = 1e-15  # probabilities live in [0, 1]; this is far below 1e-9 of a row's sum


# ------------------------------------------------------------------------------ the catalogue


@dataclass(frozen=True)
class ShippedModel:
    name: str
    versions: tuple[str, ...]
    default_version: str  # what a request naming no version gets
    kind: str  # "regressor" | "classifier"
    features: tuple[str, ...]
    low: tuple[float, ...]  # the manifest's feature_ranges
    high: tuple[float, ...]
    outputs: tuple[str, ...]  # what the manifest offers


def _version_dirs() -> list[tuple[str, str, Path]]:
    """(name, version, directory) of every model-settings.json under models/<name>/<version>/."""
    out = []
    for ms in sorted(MODELS_DIR.glob("*/*/model-settings.json")):
        cfg = json.loads(ms.read_text())
        out.append((cfg["name"], str(cfg.get("parameters", {}).get("version") or ms.parent.name), ms.parent))
    return out


def alias_files() -> list[Path]:
    """The unversioned aliases: a model-settings.json in models/<name>/ beside the versions, whose
    uri names the version a request naming none gets (MLServer would otherwise pick the newest).
    There, its folder is the model's name, so MLServer has no name/folder mismatch to warn about."""
    return sorted(MODELS_DIR.glob("*/model-settings.json"))


def _aliases() -> dict[str, str]:
    """Unversioned aliases: name -> the version directory served."""
    out = {}
    for ms in alias_files():
        cfg = json.loads(ms.read_text())
        out[cfg.get("name") or ms.parent.name] = Path(cfg["parameters"]["uri"]).name
    return out


def _describable(manifests: list[Manifest]) -> bool:
    """Whether the harness can draw rows for a model: every version with the same features, all
    numeric, with ranges. A model packaged without them (e.g. a user's, without --reference) is
    still served; the harness just does not generate requests for it."""
    first = manifests[0]
    return all(
        m.feature_ranges is not None and not m.has_strings and m.feature_names == first.feature_names for m in manifests
    )


@cache
def shipped_models() -> dict[str, ShippedModel]:
    """The models under models/ the harness drives (_describable), by name."""
    found: dict[str, list[tuple[str, Manifest]]] = {}
    for name, version, directory in _version_dirs():
        found.setdefault(name, []).append((version, read_manifest(directory)))
    aliases = _aliases()
    out = {}
    for name, versions in found.items():
        manifests = [m for _, m in versions]
        if not _describable(manifests):
            continue
        m = manifests[0]
        assert m.feature_ranges is not None  # _describable
        low, high = m.feature_ranges.band()
        ordered = tuple(sorted((v for v, _ in versions), key=lambda v: (len(v), v)))
        out[name] = ShippedModel(
            name=name,
            versions=ordered,
            default_version=aliases.get(name, ordered[-1]),
            kind=m.kind,
            features=tuple(m.feature_names),
            low=tuple(low.tolist()),
            high=tuple(high.tolist()),
            outputs=tuple(m.outputs),
        )
    return out


def served_models() -> list[tuple[str, str | None]]:
    """(name, version) of every shipped version, plus (name, None) for the unversioned alias(es):
    what the repository's server must report ready."""
    out: list[tuple[str, str | None]] = [(n, v) for n, v, _ in _version_dirs()]
    out.extend((name, None) for name in _aliases())
    return out


def default_version(name: str) -> str:
    return shipped_models()[name].default_version


# ------------------------------------------------------------------------------ expectations


@dataclass(frozen=True)
class Pipeline:
    """One model version's artifacts, loaded and verified by runtime.core.artifacts.load_pipeline."""

    name: str
    version: str
    loaded: LoadedPipeline

    @property
    def manifest(self) -> Manifest:
        return self.loaded.manifest

    @property
    def scaler(self) -> Any:
        return self.loaded.scaler

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def feature_names(self) -> list[str]:
        return list(self.manifest.feature_names)

    @property
    def n_features(self) -> int:
        return self.manifest.n_features

    @property
    def is_classifier(self) -> bool:
        return self.manifest.kind == "classifier"

    def scaled(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return self.scaler.transform(x) if self.scaler is not None else x

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(self.scaled(x)))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.output("predict_proba", x)

    def output(self, name: str, x: np.ndarray) -> np.ndarray:
        """Any output the manifest offers, as scikit-learn computes it."""
        values = np.asarray(getattr(self.model, name)(self.scaled(x)))
        return values if name == "predict" else values.astype(np.float64)

    def sklearn_pipeline(self) -> Any:
        """The scaler and model as one scikit-learn Pipeline (what the stock runtime serves)."""
        from sklearn.pipeline import Pipeline as SkPipeline

        steps = ([("scaler", self.scaler)] if self.scaler is not None else []) + [("model", self.model)]
        return SkPipeline(steps)


@cache
def pipeline(name: str, version: str) -> Pipeline:
    return Pipeline(name, version, load_pipeline(MODELS_DIR / name / version))


def default_pipeline(name: str) -> Pipeline:
    return pipeline(name, default_version(name))


@cache
def dataset(name: str) -> np.ndarray:
    """The bundled scikit-learn dataset the model was trained on (float64 [N, F], read-only)."""
    from sklearn.datasets import load_breast_cancer, load_diabetes

    loader = {DIABETES: load_diabetes, BREAST_CANCER: load_breast_cancer}[name]
    x = np.asarray(loader().data, dtype=np.float64)
    x.setflags(write=False)
    return x


def sample_rows(name: str, n: int, offset: int = 0) -> np.ndarray:
    """n real rows of the dataset from `offset` on, wrapping around (a fresh, writable array)."""
    x = dataset(name)
    idx = (np.arange(n) + offset) % len(x)
    return np.ascontiguousarray(x[idx])


def assert_parity(actual: npt.ArrayLike, expected: npt.ArrayLike, what: str = "predict") -> None:
    """Labels exactly; values within a relative 1e-9 (probabilities also absolute 1e-15)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.dtype.kind in "iub":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        atol = PROBA_ATOL if what == "predict_proba" else 0.0
        np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=PARITY_RTOL, atol=atol, err_msg=what)
