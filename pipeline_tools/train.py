"""Regenerate every shipped model from scikit-learn's bundled datasets (no downloads).

    python -m pipeline_tools.train [--out models]

Each version is fitted here and written by `pipeline_tools.package.write_model_dir`, the same path a
user's own pipeline takes, with the training data as the reference for its feature ranges.
Training is deterministic, so a rerun predicts exactly what the committed artifacts predict.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from pipeline_tools.package import write_model_dir


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    load_data: Callable[[], Any]
    make_model: Callable[[], Any]


SPECS = [
    ModelSpec("diabetes", "1", load_diabetes, LinearRegression),
    ModelSpec("diabetes", "2", load_diabetes, lambda: Ridge(alpha=0.5)),
    ModelSpec("breast-cancer", "1", load_breast_cancer, lambda: LogisticRegression(max_iter=5000)),
]


def train_one(spec: ModelSpec, out_dir: Path) -> Path:
    data = spec.load_data()
    x = np.asarray(data.data, dtype=np.float64)
    scaler = StandardScaler().fit(x)
    model = spec.make_model().fit(scaler.transform(x), np.asarray(data.target))
    return write_model_dir(
        (scaler, model),
        spec.name,
        spec.version,
        out_dir,
        features=[str(f) for f in data.feature_names],
        reference=x,
        force=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    for spec in SPECS:
        print(f"wrote {train_one(spec, args.out)}")


if __name__ == "__main__":
    main()
