"""Mixed-type models for the per-column out-of-distribution and shadow tests: age and income (numeric,
imputed, so either may be missing) and city (a string column one-hot encoded), string labels.

`encoder_unknown`: the OneHotEncoder's handle_unknown, "ignore" (an unseen city is served and counted)
or "error" (refused by the contract). Small and seeded: packaging one takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from pipeline_tools.package import write_model_dir

CITIES = ("london", "paris", "rome")
COLUMNS = ("age", "income", "city")


def training_frame(rows: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.uniform(20, 60, rows),
            "income": rng.uniform(10, 90, rows),
            "city": rng.choice(CITIES, rows),
        }
    )
    labels = np.where(frame["age"] + (frame["city"] == "rome") * 10 > 45, "yes", "no")
    frame.loc[::7, "income"] = np.nan
    return frame, labels


def mixed_pipeline(encoder_unknown: str = "ignore", tree: bool = False) -> Pipeline:
    prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown=encoder_unknown), ["city"]),
        ]
    )
    estimator = DecisionTreeClassifier(max_depth=3, random_state=0) if tree else LogisticRegression()
    frame, labels = training_frame()
    return Pipeline([("prep", prep), ("clf", estimator)]).fit(frame, labels)


def write_mixed(out: Path, name: str, encoder_unknown: str = "ignore", tree: bool = False) -> Path:
    """The packaged model directory out/name/1, with feature ranges from the training frame."""
    frame, _ = training_frame()
    return write_model_dir(mixed_pipeline(encoder_unknown, tree), name, "1", out, reference=frame)
