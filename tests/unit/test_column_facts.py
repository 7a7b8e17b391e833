"""What the pipeline walk tells about each input column (`column_facts`): whether a gap may reach it,
whether it holds strings, its training categories, and whether an unseen value is refused (the encoder
raises) or counted (the encoder takes it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler, TargetEncoder

from pipeline_tools.pipeline_walk import ColumnFacts, column_facts

ROWS = 60
RNG = np.random.default_rng(0)
FRAME = pd.DataFrame(
    {
        "age": RNG.normal(40, 10, ROWS),
        "city": RNG.choice(["paris", "rome", "london"], ROWS),
        "rooms": RNG.choice([1, 2, 3], ROWS),
    }
)
Y = RNG.integers(0, 2, ROWS)
CITIES = ["london", "paris", "rome"]
CITY = ColumnFacts(string=True, categories=CITIES, unseen="refused")  # an encoder that raises on 'tokyo'
NUMBER = ColumnFacts()


def gapped(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    copy = frame.copy()
    copy.loc[::5, column] = np.nan
    return copy


def facts(step: Any, x: pd.DataFrame) -> list[ColumnFacts]:
    return column_facts(step.fit(x, Y), x.shape[1])


CITY_ONLY = FRAME[["city"]]
CITY_GAPS = gapped(FRAME, "city")[["city"]]

ONE_COLUMN = [
    ("OneHotEncoder error", OneHotEncoder(handle_unknown="error"), CITY_ONLY, CITY),
    (
        "OneHotEncoder ignore",
        OneHotEncoder(handle_unknown="ignore"),
        CITY_ONLY,
        ColumnFacts(string=True, categories=CITIES),
    ),
    (
        "OneHotEncoder infrequent_if_exist",
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5),
        CITY_ONLY,
        ColumnFacts(string=True, categories=CITIES),
    ),
    # A gap seen in training is a category of its own: it may be missing, and is not shown as a category.
    (
        "OneHotEncoder error, NaN seen",
        OneHotEncoder(handle_unknown="error"),
        CITY_GAPS,
        ColumnFacts(True, True, CITIES, "refused"),
    ),
    ("OrdinalEncoder error", OrdinalEncoder(), CITY_ONLY, CITY),
    # OrdinalEncoder passes a gap on as NaN (encoded_missing_value): what follows would have to take it.
    ("OrdinalEncoder error, NaN seen", OrdinalEncoder(), CITY_GAPS, CITY),
    (
        "OrdinalEncoder use_encoded_value",
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
        CITY_ONLY,
        ColumnFacts(string=True, categories=CITIES),
    ),
    (
        "OrdinalEncoder use_encoded_value, NaN seen and encoded",
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2),
        CITY_GAPS,
        ColumnFacts(True, True, CITIES),
    ),
    ("TargetEncoder", TargetEncoder(), CITY_ONLY, ColumnFacts(string=True, categories=CITIES)),
    ("TargetEncoder, NaN seen", TargetEncoder(), CITY_GAPS, ColumnFacts(True, True, CITIES)),
    (
        "numeric categories",
        OneHotEncoder(handle_unknown="error"),
        FRAME[["rooms"]],
        ColumnFacts(categories=[1.0, 2.0, 3.0], unseen="refused"),
    ),
    (
        "SimpleImputer then OneHotEncoder: the encoder's categories, the imputer's gap",
        make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="error")),
        CITY_GAPS,
        ColumnFacts(True, True, CITIES, "refused"),
    ),
    (
        "SimpleImputer by a constant then OneHotEncoder: the constant is a category",
        make_pipeline(SimpleImputer(strategy="constant", fill_value="none"), OneHotEncoder(handle_unknown="error")),
        CITY_GAPS,
        ColumnFacts(True, True, sorted([*CITIES, "none"]), "refused"),
    ),
    (
        "FeatureUnion: refused where any branch raises",
        FeatureUnion(
            [
                ("onehot", OneHotEncoder(handle_unknown="error")),
                ("ordinal", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)),
            ]
        ),
        CITY_ONLY,
        CITY,
    ),
    (
        "FeatureUnion: counted where every branch takes it",
        FeatureUnion([("a", OneHotEncoder(handle_unknown="ignore")), ("b", TargetEncoder())]),
        CITY_ONLY,
        ColumnFacts(string=True, categories=CITIES),
    ),
    (
        "FeatureUnion: a gap where every branch takes it",
        FeatureUnion([("imputed", SimpleImputer(strategy="most_frequent")), ("onehot", OneHotEncoder())]),
        CITY_GAPS,
        ColumnFacts(True, True, CITIES, "refused"),
    ),
    (
        "FeatureUnion: a gap only where every branch takes it",
        FeatureUnion(
            [
                ("imputed", SimpleImputer(strategy="most_frequent")),
                ("ordinal", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)),  # NaN on
            ]
        ),
        CITY_GAPS,
        ColumnFacts(False, True, CITIES, "counted"),
    ),
]


@pytest.mark.parametrize("label,step,x,expected", ONE_COLUMN, ids=[c[0] for c in ONE_COLUMN])
def test_one_column(label, step, x, expected):
    assert facts(step, x) == [expected], label


def test_the_facts_are_plain_python():
    (fact,) = facts(make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()), CITY_GAPS)
    assert fact.missing is True and fact.string is True
    assert all(type(c) is str for c in fact.categories or [])
    (numeric,) = facts(OneHotEncoder(), FRAME[["rooms"]])
    assert all(type(c) is float for c in numeric.categories or [])


def _prep(remainder: Any) -> ColumnTransformer:
    return ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age"]),
            (
                "cat",
                make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="error")),
                ["city"],
            ),
        ],
        remainder=remainder,
    )


def test_column_transformer_in_a_pipeline_with_a_dropped_remainder():
    pipe = Pipeline([("prep", _prep("drop")), ("clf", LogisticRegression())])
    assert facts(pipe, gapped(gapped(FRAME, "age"), "city")) == [
        ColumnFacts(missing=True),  # the imputer fills it
        ColumnFacts(True, True, CITIES, "refused"),
        ColumnFacts(missing=True),  # dropped: never read, so a gap is harmless
    ]


def test_column_transformer_remainder_passthrough_and_a_transformer():
    passthrough = facts(Pipeline([("prep", _prep("passthrough")), ("clf", LogisticRegression())]), FRAME)
    assert passthrough[2] == NUMBER  # reaches the model as it is: no gap
    taking = facts(Pipeline([("prep", _prep("passthrough")), ("clf", HistGradientBoostingClassifier())]), FRAME)
    assert taking[2] == ColumnFacts(missing=True)  # passed through as it is to a model that takes gaps
    # Through a scaler (which keeps NaN) to a model that takes gaps, too; not when one column behind does not.
    scaled = Pipeline(
        [("prep", _prep("passthrough")), ("s", StandardScaler()), ("clf", HistGradientBoostingClassifier())]
    )
    assert facts(scaled, FRAME)[2] == ColumnFacts(missing=True)
    inner = ColumnTransformer([("n", StandardScaler(), [0])], remainder="passthrough")
    partly = Pipeline([("prep", _prep("passthrough")), ("more", inner), ("clf", LogisticRegression())])
    assert facts(partly, FRAME)[2] == NUMBER
    imputed = facts(_prep(SimpleImputer()), FRAME)
    assert imputed[2] == ColumnFacts(missing=True)


def test_column_transformer_drop_transformer():
    step = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]), ("gone", "drop", ["rooms"])])
    assert facts(step, FRAME) == [
        ColumnFacts(missing=True),  # the remainder, dropped by default
        ColumnFacts(string=True, categories=CITIES),
        ColumnFacts(missing=True),
    ]


def test_an_estimator_that_takes_nan_makes_every_column_missing():
    numbers = FRAME[["age", "rooms"]]
    assert facts(HistGradientBoostingClassifier(max_iter=5), numbers) == [ColumnFacts(missing=True)] * 2
    assert facts(LogisticRegression(), numbers) == [NUMBER] * 2


def test_a_constant_fill_of_numbers_keeps_its_columns_numeric():
    """scikit-learn keeps a constant fill's statistics as objects even for numbers."""
    table = pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": [4.0, 5.0, np.nan]})
    imputer = SimpleImputer(strategy="constant", fill_value=0.0).fit(table)
    assert imputer.statistics_.dtype == object
    assert [f.string for f in column_facts(imputer, 2)] == [False, False]
    assert [f.missing for f in column_facts(imputer, 2)] == [True, True]
