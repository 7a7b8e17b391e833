"""Regenerate every shipped model from scikit-learn's bundled datasets (no downloads).

    python -m runtime.train [--out models] [--format skops|joblib]

Each version directory gets its scaler and model artifacts (skops by default: loading them
never runs pickle), manifest.json and model-settings.json.
Training is deterministic, so a rerun predicts exactly what the committed artifacts predict.
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import joblib
import numpy as np
import sklearn
import skops.io
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from runtime.artifacts import MANIFEST_FILE, sha256_hex

IMPLEMENTATION = "runtime.PipelineRuntime"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    load_data: Callable[[], Any]
    make_model: Callable[[], Any]
    kind: str
    with_scaler: bool = True


SPECS = [
    ModelSpec("diabetes", "1", load_diabetes, LinearRegression, "regressor"),
    ModelSpec("diabetes", "2", load_diabetes, lambda: Ridge(alpha=0.5), "regressor"),
    ModelSpec(
        "breast-cancer",
        "1",
        load_breast_cancer,
        lambda: LogisticRegression(max_iter=5000),
        "classifier",
    ),
]


def _dump(obj: Any, version_dir: Path, stem: str, fmt: str) -> dict[str, str]:
    path = version_dir / f"{stem}.{fmt}"
    if fmt == "skops":
        skops.io.dump(obj, path)
    else:
        joblib.dump(obj, path)
    return {"file": path.name, "sha256": sha256_hex(path.read_bytes()), "format": fmt}


def _write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def model_settings(name: str, version: str) -> dict:
    return {
        "name": name,
        "implementation": IMPLEMENTATION,
        "parameters": {"version": version, "uri": ".", "extra": {"max_rows": 10000}},
    }


def train_one(spec: ModelSpec, out_dir: Path, fmt: str = "skops") -> Path:
    data = spec.load_data()
    x = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target)
    version_dir = out_dir / spec.name / spec.version
    version_dir.mkdir(parents=True, exist_ok=True)

    scaler = StandardScaler().fit(x) if spec.with_scaler else None
    model = spec.make_model().fit(scaler.transform(x) if scaler else x, y)

    manifest: dict[str, Any] = {
        "name": spec.name,
        "version": spec.version,
        "kind": spec.kind,
        "estimator": f"{type(model).__module__}.{type(model).__name__}",
        "feature_names": [str(f) for f in data.feature_names],
        "classes": [int(c) for c in model.classes_] if spec.kind == "classifier" else None,
        "trained_with": {
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "model": _dump(model, version_dir, "model", fmt),
        "feature_ranges": {"min": x.min(axis=0).tolist(), "max": x.max(axis=0).tolist()},
    }
    if scaler is not None:
        manifest["scaler"] = _dump(scaler, version_dir, "scaler", fmt)
    _write_json(version_dir / MANIFEST_FILE, manifest)
    _write_json(version_dir / "model-settings.json", model_settings(spec.name, spec.version))
    return version_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--format", choices=["skops", "joblib"], default="skops")
    args = parser.parse_args(argv)
    for spec in SPECS:
        print(f"wrote {train_one(spec, args.out, args.format)}")


if __name__ == "__main__":
    main()
