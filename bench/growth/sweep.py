"""Axis `sweep`: pipeline size — a random forest of 10, 100 and 1,000 trees (depth 8, as bench.run's
forest) on the diabetes data, and a linear model (scaler + ridge) on 10, 100 and 1,000 synthetic
features; 1 row and 100 rows per request over REST JSON at concurrency 2. Each model's servers (this
runtime, stock, KServe) start together, are measured, and are stopped before the next model's."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench import common
from bench.growth import fleet

TREES = (10, 100, 1_000)
FEATURES = (10, 100, 1_000)
ROWS = (1, 100)
SEED = 0


@dataclass(frozen=True)
class SweepModel:
    name: str  # e.g. "forest-100"
    family: str  # forest | linear
    size: int  # trees or features
    fit: Callable[[], tuple[Any, np.ndarray]]  # the fitted pipeline and rows to send


def _forest(trees: int) -> tuple[Any, np.ndarray]:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_diabetes(return_X_y=True)
    forest = RandomForestRegressor(n_estimators=trees, max_depth=8, random_state=SEED, n_jobs=1)
    return make_pipeline(StandardScaler(), forest).fit(x, y), common.bench_rows(max(ROWS))


def _linear(features: int) -> tuple[Any, np.ndarray]:
    from sklearn.datasets import make_regression
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = make_regression(n_samples=2_000, n_features=features, noise=1.0, random_state=SEED)
    return make_pipeline(StandardScaler(), Ridge()).fit(x, y), x[: max(ROWS)]


MODELS = [SweepModel(f"forest-{n}", "forest", n, functools.partial(_forest, n)) for n in TREES] + [
    SweepModel(f"linear-{n}", "linear", n, functools.partial(_linear, n)) for n in FEATURES
]


def point_name(model: str, rows: int) -> str:
    return f"{model} {rows} row" + ("s" if rows > 1 else "")


def run(settings: fleet.Settings) -> list[dict[str, Any]]:
    out = []
    for model in MODELS:
        fitted, X = model.fit()
        points = [fleet.make_point(settings, point_name(model.name, n), X[:n], fitted) for n in ROWS]
        group = fleet.contenders(settings, fitted, model.name, binary=False)
        for rec in fleet.measure_points(group, points, settings, "sweep"):
            out.append({**rec, "model": model.name, "family": model.family, "size": model.size})
    return out
