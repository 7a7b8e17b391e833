"""The pipelines users really have (issue 26's acceptance matrix), fitted on one small deterministic
table with numeric gaps and string columns, and the request rows each one is served: gaps where its
schema allows them, categories its encoders never saw where they would not raise on one.

    for case in MATRIX:
        fitted = case.fitted()                     # the scikit-learn pipeline, fitted (cached)
        rows = case.rows(200)                      # a DataFrame of case.columns
        expected = fitted.predict(rows)

One table for every suite that needs such models (the integration matrix, fuzzing): what varies by
case is a row here, not a branch in a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    StandardScaler,
    TargetEncoder,
)
from sklearn.svm import SVC

NUMERIC = ("age", "income", "tenure", "score", "visits")
STRINGS = ("city", "plan")
CITIES = ("paris", "rome", "london", "berlin", "madrid")
PLANS = ("basic", "plus", "pro")
# Values no encoder saw in training.
UNSEEN = {"city": "tokyo", "plan": "platinum"}
TRAIN_ROWS = 400
SEED = 26
# Every GAP_EVERY-th row of a column that may be missing is a gap, offset by the column's position so
# gaps of different columns fall on different rows.
GAP_EVERY = 7
UNSEEN_EVERY = 9


def table(n: int, seed: int) -> pd.DataFrame:
    """n rows of every column, no gap: positive numbers (log1p takes them) and strings."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(40, 12, n).clip(18, 90).round(1),
            "income": rng.lognormal(10.5, 0.5, n).round(2),
            "tenure": rng.integers(0, 30, n).astype(np.float64),
            "score": rng.uniform(0, 1, n),
            "visits": rng.poisson(5, n).astype(np.float64),
            "city": rng.choice(CITIES, n),
            "plan": rng.choice(PLANS, n),
        }
    )


def labels(frame: pd.DataFrame) -> np.ndarray:
    """A class that depends on numbers and strings alike, as strings (BYTES answers)."""
    signal = (frame["age"].fillna(40) - 40) / 12 + frame["score"].fillna(0.5) * 2 - 1
    signal = signal + frame["city"].isin(["paris", "rome"]).to_numpy() * 0.8 - 0.4
    return np.where(signal > 0, "churn", "stay")


def target(frame: pd.DataFrame) -> np.ndarray:
    """A number for the regressors."""
    return np.asarray(frame["age"].fillna(40) * 0.5 + np.log(frame["income"].fillna(30000)) * 3 + frame["tenure"])


def with_gaps(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """The frame with every GAP_EVERY-th value of `columns` missing: NaN, as pandas reads a gap of a
    CSV in numbers and strings alike (and as the runtime hands a gap to the pipeline)."""
    out = frame.copy()
    for offset, column in enumerate(columns):
        out.loc[out.index[offset % GAP_EVERY :: GAP_EVERY], column] = np.nan
    return out


def with_unseen(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    out = frame.copy()
    for offset, column in enumerate(columns):
        index = out.index[(offset + 3) % UNSEEN_EVERY :: UNSEEN_EVERY]
        out.loc[index, column] = UNSEEN[column]
    return out


@dataclass(frozen=True)
class Case:
    """One pipeline of the matrix: how it is built, the columns it reads, which of them may be missing
    (its schema must say exactly these), where its encoders take unseen values."""

    name: str
    build: Callable[[], Any]
    columns: tuple[str, ...]
    missing: tuple[str, ...] = ()  # the columns the schema lets be missing
    unseen: tuple[str, ...] = ()  # string columns whose encoder takes a value it never saw
    refused: tuple[str, ...] = ()  # string columns whose encoder raises on one
    classifier: bool = True
    train_gaps: tuple[str, ...] = ()  # columns with gaps in the training rows too

    @property
    def numeric_only(self) -> bool:
        return not any(c in STRINGS for c in self.columns)

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("predict", "predict_proba") if self.classifier else ("predict",)

    def fitted(self) -> Any:
        """Fitted once per what the fit depends on (a renamed copy of a case shares it)."""
        return _fitted(self.build, self.columns, self.train_gaps, self.classifier)

    def training(self) -> pd.DataFrame:
        return _training(self.columns, self.train_gaps)

    def rows(self, n: int, seed: int = SEED + 1, string_gaps: bool = True) -> pd.DataFrame:
        """n request rows: gaps where the schema allows them (in string columns too unless not
        `string_gaps`: gRPC's BYTES contents cannot hold one), unseen categories where taken."""
        gaps = tuple(c for c in self.missing if string_gaps or c not in STRINGS)
        frame = with_unseen(with_gaps(table(n, seed), gaps), self.unseen)
        return frame[list(self.columns)]


def _training(columns: tuple[str, ...], gaps: tuple[str, ...]) -> pd.DataFrame:
    return with_gaps(table(TRAIN_ROWS, SEED), gaps)[list(columns)]


@cache
def _fitted(build: Callable[[], Any], columns: tuple[str, ...], gaps: tuple[str, ...], classifier: bool) -> Any:
    full = table(TRAIN_ROWS, SEED)
    return build().fit(_training(columns, gaps), labels(full) if classifier else target(full))


def _nested() -> Pipeline:
    """A Pipeline inside a ColumnTransformer: a string column's gaps filled, then one-hot encoded."""
    return Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income"]),
                        (
                            "cat",
                            make_pipeline(
                                SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
                            ),
                            ["city"],
                        ),
                    ]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    )


MATRIX: tuple[Case, ...] = (
    Case(
        "imputed-logistic",
        lambda: make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()),
        ("age", "income", "score"),
        missing=("age", "income", "score"),
        train_gaps=("income",),
    ),
    Case(
        "columns-gb",
        lambda: Pipeline(
            [
                (
                    "prep",
                    ColumnTransformer(
                        [
                            ("num", StandardScaler(), ["age", "income"]),
                            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                        ]
                    ),
                ),
                ("clf", GradientBoostingClassifier(n_estimators=20, random_state=0)),
            ]
        ),
        ("age", "income", "city"),
        unseen=("city",),
    ),
    Case(
        "poly-ridge",
        lambda: make_pipeline(PolynomialFeatures(2), StandardScaler(), Ridge()),
        ("age", "income", "tenure"),
        classifier=False,
    ),
    Case(
        "pca-svc",
        lambda: make_pipeline(StandardScaler(), PCA(5), SVC(probability=True, random_state=0)),
        NUMERIC,
    ),
    Case(
        "ordinal-forest",
        lambda: Pipeline(
            [
                (
                    "prep",
                    ColumnTransformer(
                        [
                            ("cat", OrdinalEncoder(handle_unknown="error"), ["city", "plan"]),
                            ("num", "passthrough", ["age", "tenure"]),
                        ]
                    ),
                ),
                ("clf", RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0)),
            ]
        ),
        ("age", "tenure", "city", "plan"),
        refused=("city", "plan"),
    ),
    Case(
        "knn",
        lambda: make_pipeline(KNNImputer(n_neighbors=3), StandardScaler(), KNeighborsClassifier(5)),
        ("age", "income", "visits"),
        missing=("age", "income", "visits"),
        train_gaps=("age",),
    ),
    Case(
        "target-hgb",
        lambda: Pipeline(
            [
                (
                    "prep",
                    ColumnTransformer(
                        [
                            ("cat", TargetEncoder(cv=KFold(5, shuffle=True, random_state=0)), ["city", "plan"]),
                            ("num", "passthrough", ["age", "score"]),
                        ]
                    ),
                ),
                ("clf", HistGradientBoostingClassifier(max_iter=20, random_state=0)),
            ]
        ),
        ("age", "score", "city", "plan"),
        # age and score reach HistGradientBoosting as they are, which takes a gap.
        missing=("city", "age", "score"),
        unseen=("city", "plan"),
        train_gaps=("city",),
    ),
    Case(
        "union",
        lambda: make_pipeline(
            SimpleImputer(),
            FeatureUnion([("scaled", StandardScaler()), ("pca", make_pipeline(StandardScaler(), PCA(2)))]),
            LogisticRegression(),
        ),
        ("age", "income", "tenure", "score"),
        missing=("age", "income", "tenure", "score"),
    ),
    Case(
        "nested",
        _nested,
        ("age", "income", "city"),
        missing=("age", "income", "city"),
        unseen=("city",),
        train_gaps=("city", "income"),
    ),
    Case(
        "log1p",
        lambda: make_pipeline(FunctionTransformer(np.log1p), StandardScaler(), Ridge()),
        ("income", "visits", "tenure"),
        classifier=False,
    ),
)

CASES = {case.name: case for case in MATRIX}


def refused_function_pipeline() -> Pipeline:
    """FunctionTransformer with arbitrary code: the packager refuses it, naming the step."""
    frame = table(50, SEED)[["age", "income"]]
    return make_pipeline(FunctionTransformer(lambda x: x), LogisticRegression()).fit(frame, labels(table(50, SEED)))
