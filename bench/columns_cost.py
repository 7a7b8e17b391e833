"""Per-call cost of the `columns` model's prediction at 1 and 100 rows: scikit-learn's Pipeline on a
DataFrame (what the pipeline form served before, and about what the stock runtime runs) against the
compiled pipeline (runtime.core.columns) on the contract's object matrix.

    PYTHONPATH=. .venv/bin/python -m bench.columns_cost
"""

from __future__ import annotations

import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.common import bench_pipeline, columns_table
from pipeline_tools.package import write_model_dir
from runtime.core.artifacts import load_pipeline
from runtime.core.predictor import as_frame, compile_predictor

OUTPUTS = ("predict", "predict_proba")


def per_call_us(fn: Callable[[], object], repeat: int = 7) -> float:
    """The fastest of `repeat` runs' mean time per call, in microseconds."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat, number)) / number * 1e6


def main() -> None:
    pipeline, frame = bench_pipeline("columns"), columns_table()[0]
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_pipeline(write_model_dir(pipeline, "columns", "1", Path(tmp)))
    compiled = compile_predictor(loaded)
    names = loaded.manifest.feature_names
    numeric = [c.kind == "numeric" for c in loaded.manifest.columns]
    print(f"compiled path: {compiled.kind}")
    print(f"{'rows':>5} {'sklearn pipeline us':>20} {'compiled us':>12} {'speed-up':>9}")
    for rows in (1, 100):
        matrix = frame[names].iloc[:rows].to_numpy(dtype=object)

        def by_sklearn(x: np.ndarray = matrix) -> None:
            for output in OUTPUTS:
                getattr(pipeline, output)(as_frame(x, names, numeric))

        def by_compiled(x: np.ndarray = matrix) -> None:
            compiled.predict(x, OUTPUTS)

        sklearn_us = per_call_us(by_sklearn)
        compiled_us = per_call_us(by_compiled)
        print(f"{rows:>5} {sklearn_us:>20.1f} {compiled_us:>12.1f} {sklearn_us / compiled_us:>8.1f}x")


if __name__ == "__main__":
    main()
