"""The compiled pipeline path (runtime.core.columns): chosen where every step compiles, bit-identical
to the scikit-learn pipeline on rows with gaps and unseen categories, and scikit-learn's own path
wherever a step does not compile or its compiled form disagrees."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    KBinsDiscretizer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)
from sklearn.tree import DecisionTreeClassifier

from pipeline_tools.package import write_model_dir
from runtime.core import columns
from runtime.core.artifacts import LoadedPipeline, load_pipeline
from runtime.core.predictor import COMPILED_PIPELINE, Predictor, as_frame, compile_predictor
from runtime.service.service import prediction_path

ROWS = 400
CITIES = ["paris", "rome", "london", "berlin"]
PLANS = ["free", "pro", "team"]
ZONES = [1.0, 2.0, 3.0, 5.0]


def _frame(seed: int, gaps: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 12, ROWS),
            "income": rng.normal(50, 20, ROWS),
            "zone": rng.choice(ZONES, ROWS),
            "city": rng.choice(CITIES, ROWS).astype(object),
            "plan": rng.choice(PLANS, ROWS).astype(object),
        }
    )
    if gaps:
        frame.loc[::7, "income"] = np.nan
        frame.loc[3::11, "city"] = np.nan
    return frame


def _target(frame: pd.DataFrame) -> np.ndarray:
    return ((frame.age > 40) ^ (frame.city == "rome") ^ (frame.zone > 2)).to_numpy().astype(int)


def _ct(*transformers: tuple[str, Any, Any], **kwargs: Any) -> ColumnTransformer:
    return ColumnTransformer(list(transformers), **kwargs)


def _ohe(**kwargs: Any) -> OneHotEncoder:
    return OneHotEncoder(sparse_output=False, **kwargs)


def _filled(value: Any) -> SimpleImputer:
    return SimpleImputer(strategy="constant", fill_value=value)


def _frame_of(rows: np.ndarray, loaded: LoadedPipeline) -> pd.DataFrame:
    """The rows as the pipeline itself is asked them."""
    return as_frame(rows, loaded.manifest.feature_names, [c.kind == "numeric" for c in loaded.manifest.columns])


NUM = ["age", "income"]
# name -> (pipeline, whether the training data has gaps, a regressor)
CASES: dict[str, tuple[Callable[[], Pipeline], bool, bool]] = {
    "scalers-onehot-ignore": (
        lambda: make_pipeline(
            _ct(
                ("std", StandardScaler(), ["age"]),
                ("minmax", MinMaxScaler(), ["income"]),
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
            ),
            GradientBoostingClassifier(n_estimators=20, random_state=0),
        ),
        False,
        False,
    ),
    "imputers-robust-maxabs-onehot-error": (
        lambda: make_pipeline(
            _ct(
                ("num", make_pipeline(SimpleImputer(strategy="median"), RobustScaler()), NUM),
                ("zone", MaxAbsScaler(), ["zone"]),
                ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), _ohe(handle_unknown="error")), ["city"]),
            ),
            LogisticRegression(max_iter=2000),
        ),
        True,
        False,
    ),
    "constant-imputers-nested-pipeline-after": (
        lambda: Pipeline(
            [
                (
                    "prep",
                    _ct(
                        ("num", SimpleImputer(strategy="most_frequent"), NUM),
                        ("cat", make_pipeline(_filled("none"), _ohe(handle_unknown="ignore")), ["city"]),
                    ),
                ),
                ("post", make_pipeline(StandardScaler(), "passthrough")),
                ("clf", LogisticRegression(max_iter=2000)),
            ]
        ),
        True,
        False,
    ),
    "ordinal-unknown-value-remainder-passthrough": (
        lambda: make_pipeline(
            _ct(
                ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["city", "plan"]),
                remainder="passthrough",
            ),
            RandomForestClassifier(n_estimators=10, random_state=0),
        ),
        False,
        False,
    ),
    "ordinal-missing-category-mean-imputer": (
        lambda: make_pipeline(
            _ct(
                ("num", SimpleImputer(), NUM),
                ("cat", OrdinalEncoder(encoded_missing_value=-2), ["city"]),
            ),
            DecisionTreeClassifier(random_state=0),
        ),
        True,
        False,
    ),
    "selection-by-index-remainder-drop-numeric-categories": (
        lambda: make_pipeline(
            _ct(
                ("num", StandardScaler(), [0, 1]),
                ("zone", OneHotEncoder(handle_unknown="ignore"), [2]),
                ("cat", _ohe(handle_unknown="ignore"), [4]),
                remainder="drop",
            ),
            LogisticRegression(max_iter=2000),
        ),
        False,
        False,
    ),
    "sparse-onehot-forest": (
        lambda: make_pipeline(
            _ct(
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "zone", "plan"]),
                remainder="passthrough",
                sparse_threshold=1.0,
            ),
            RandomForestClassifier(n_estimators=10, random_state=0),
        ),
        False,
        False,
    ),
    "regressor-remainder-scaled": (
        lambda: make_pipeline(
            _ct(("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]), remainder=StandardScaler()),
            Ridge(),
        ),
        False,
        True,
    ),
}


def _served(pipeline: Pipeline, frame: pd.DataFrame, y: np.ndarray, tmp_path: Path) -> tuple[LoadedPipeline, Predictor]:
    pipeline.fit(frame, y)
    loaded = load_pipeline(write_model_dir(pipeline, "m", "1", tmp_path, reference=frame))
    return loaded, compile_predictor(loaded)


def _requests(loaded: LoadedPipeline, seed: int) -> np.ndarray:
    """Random rows as the contract hands them over: categories, an unseen value where the model serves
    one and gaps where a column may be missing."""
    rng = np.random.default_rng(seed)
    rows = _frame(seed, gaps=False)[loaded.manifest.feature_names].to_numpy(dtype=object)
    for j, column in enumerate(loaded.manifest.columns):
        if column.categories is not None and column.unseen == "counted":
            rows[rng.random(ROWS) < 0.1, j] = "tokyo" if column.kind == "string" else 4.0
        if column.missing:
            rows[rng.random(ROWS) < 0.15, j] = np.nan
    if not loaded.manifest.has_strings:
        return rows.astype(np.float64)
    return rows


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_compiled_pipeline_is_chosen_and_bit_identical_to_scikit_learn(case, tmp_path):
    build, gaps, regressor = CASES[case]
    frame = _frame(0, gaps)
    y = frame.age.to_numpy() * 0.5 + (frame.city == "rome") if regressor else _target(frame)
    pipeline = build()
    loaded, predictor = _served(pipeline, frame, y, tmp_path)
    assert predictor.kind == COMPILED_PIPELINE, case
    rows = _requests(loaded, seed=1)
    frame_rows = _frame_of(rows, loaded)
    got = predictor.predict(rows, tuple(loaded.manifest.outputs))
    for output in loaded.manifest.outputs:
        want = np.asarray(getattr(pipeline, output)(frame_rows))
        assert got[output].shape == want.shape and np.array_equal(got[output], want), (case, output)


def test_a_numeric_pipeline_without_a_column_transformer_compiles(tmp_path):
    """The issue's imputer + scaler + linear model, on the contract's float64 matrix, gaps included."""
    frame = _frame(0, gaps=True)[NUM]
    pipeline = make_pipeline(make_pipeline(SimpleImputer(), StandardScaler()), LogisticRegression())
    loaded, predictor = _served(pipeline, frame, _target(_frame(0, gaps=True)), tmp_path)
    assert predictor.kind == COMPILED_PIPELINE
    rows = _frame(2, gaps=True)[NUM].to_numpy()
    got = predictor.predict(rows, ("predict", "predict_proba"))
    assert np.array_equal(got["predict_proba"], pipeline.predict_proba(pd.DataFrame(rows, columns=NUM)))
    assert np.array_equal(got["predict"], pipeline.predict(pd.DataFrame(rows, columns=NUM)))


# Preprocessing the packager does not take yet, compiled and compared on its own.
PREPROCESSING: dict[str, Callable[[], Any]] = {
    "constant-numeric-imputer": lambda: _ct(("num", _filled(-1.0), NUM)),
    "keep-empty-features": lambda: SimpleImputer(keep_empty_features=True),
    "onehot-with-a-missing-category": lambda: _ct(("cat", _ohe(handle_unknown="ignore"), ["city", "zone"])),
    "ordinal-numeric-unknown-nan": lambda: _ct(
        ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan), ["zone", "plan"])
    ),
    "passthrough-strings-then-encoder": lambda: make_pipeline(
        _ct(("keep", "passthrough", ["city", "plan"])), _ohe(handle_unknown="ignore")
    ),
}


@pytest.mark.parametrize("case", sorted(PREPROCESSING))
def test_compiled_preprocessing_is_bit_identical_to_its_transform(case):
    frame = _frame(0, gaps=True)
    step = PREPROCESSING[case]()
    numeric = NUM if case == "keep-empty-features" else list(frame.columns)
    train = frame[numeric] if case == "keep-empty-features" else frame
    if case == "keep-empty-features":
        train = train.assign(income=np.nan)
    step.fit(train)
    pipeline = Pipeline([("prep", step), ("clf", "passthrough")])
    strings = tuple(train[c].dtype == object for c in train.columns)
    prepare = columns.compile_pipeline(pipeline, columns.Block(strings, tuple(train.columns))).prepare
    requests = _frame(5, gaps=True)[list(train.columns)]
    requests.loc[::13, "zone" if "zone" in requests else "age"] = 4.0
    if "city" in requests:
        requests.loc[1::9, "city"] = "tokyo"
    matrix = requests.to_numpy(dtype=object) if any(strings) else requests.to_numpy(dtype=np.float64)
    want = step.transform(as_frame(matrix, list(train.columns), [not s for s in strings]))
    got = prepare(matrix)
    assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True), case


def test_a_pipeline_with_a_step_without_an_entry_stays_on_scikit_learn(tmp_path, caplog):
    frame = _frame(0, gaps=False)
    pipeline = make_pipeline(
        _ct(("bins", KBinsDiscretizer(quantile_method="averaged_inverted_cdf"), NUM), ("cat", _ohe(), ["city"])),
        LogisticRegression(),
    )
    with caplog.at_level(logging.INFO, logger="runtime.core.predictor"):
        loaded, predictor = _served(pipeline, frame, _target(frame), tmp_path)
    assert predictor.kind == "sklearn" and predictor.prepare is None
    assert "KBinsDiscretizer has no compiled form" in caplog.text
    rows = _requests(loaded, seed=3)
    want = pipeline.predict_proba(_frame_of(rows, loaded))
    assert np.array_equal(predictor.predict(rows, ("predict_proba",))["predict_proba"], want)


def test_a_compiled_step_that_disagrees_leaves_the_model_on_scikit_learn(tmp_path, monkeypatch, caplog):
    real = columns.COMPILERS[OneHotEncoder]

    def categories_reversed(step: Any, block: columns.Block) -> tuple[columns.Fn, columns.Block]:
        fn, out = real(step, block)
        return (lambda x: fn(x)[:, ::-1]), out

    monkeypatch.setitem(columns.COMPILERS, OneHotEncoder, categories_reversed)
    frame = _frame(0, gaps=False)
    pipeline = make_pipeline(_ct(("num", StandardScaler(), NUM), ("cat", _ohe(), ["city"])), LogisticRegression())
    with caplog.at_level(logging.WARNING, logger="runtime.core.predictor"):
        _, predictor = _served(pipeline, frame, _target(frame), tmp_path)
    assert predictor.kind == "sklearn" and predictor.prepare is None
    assert "not bit-identical to scikit-learn's; serving the pipeline" in caplog.text


def test_a_linear_model_on_a_sparse_column_transformer_output_stays_on_scikit_learn(tmp_path, caplog):
    """Its sparse product sums otherwise than a dense one: only trees, which compare values, take the
    compiled dense matrix in place of scikit-learn's sparse one."""
    frame = _frame(0, gaps=False)
    sparse = _ct(("num", StandardScaler(), NUM), ("cat", OneHotEncoder(), ["city", "plan"]), sparse_threshold=1.0)
    pipeline = make_pipeline(sparse, LogisticRegression())
    with caplog.at_level(logging.WARNING, logger="runtime.core.predictor"):
        _, predictor = _served(pipeline, frame, _target(frame), tmp_path)
    assert predictor.kind == "sklearn" and "not bit-identical" in caplog.text


def test_the_prediction_path_of_a_compiled_pipeline_says_bit_identical():
    assert json.loads(prediction_path(COMPILED_PIPELINE, recorded=True)) == {
        "path": COMPILED_PIPELINE,
        "verified": "bit-identical",
        "against": "scikit-learn pipeline",
    }
