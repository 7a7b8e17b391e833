"""The typical value of each input column (pipeline_tools.pipeline_walk.typical_values): what the first
step that reads it learned in training, in the input's units; the packager's example row without
reference data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from pipeline_tools.pipeline_walk import typical_values

RNG = np.random.default_rng(0)
AREA = RNG.uniform(20, 150, 200)
FRAME = pd.DataFrame({"area": AREA, "city": RNG.choice(["paris", "rome", "rome"], 200)})
FRAME.loc[::7, "area"] = np.nan
Y = RNG.normal(size=200)


def test_an_imputers_fill_and_most_frequent_value() -> None:
    prep = make_column_transformer(
        (SimpleImputer(), ["area"]), (make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()), ["city"])
    )
    pipe = make_pipeline(prep, Ridge()).fit(FRAME, Y)
    area, city = typical_values([pipe], 2)
    assert area == pytest.approx(np.nanmean(FRAME.area)) and city == "rome"


def test_a_leading_scalers_centre_not_a_later_steps_statistics() -> None:
    x = np.column_stack([AREA, AREA / 10])
    standard = make_pipeline(StandardScaler(), SimpleImputer(), LinearRegression()).fit(x, Y)
    assert typical_values([standard], 2) == pytest.approx(x.mean(axis=0).tolist())
    min_max = make_pipeline(MinMaxScaler(), LinearRegression()).fit(x, Y)
    assert typical_values(list(min_max), 2) == pytest.approx(((x.min(axis=0) + x.max(axis=0)) / 2).tolist())


def test_a_bare_estimator_learned_no_statistics() -> None:
    assert typical_values([LinearRegression().fit(np.column_stack([AREA, AREA]), Y)], 2) == [None, None]
