"""One small model with string columns and gaps, for the suites that serve such a model (the feature
store's, the fuzzers'): a ColumnTransformer (imputer + scaler on numeric columns, a one-hot encoder
on string ones) before a LogisticRegression, fitted on synthetic rows and packaged with
`write_model_dir` like a user's.

Columns, as the packager writes the schema:
- age, income: numeric, may be missing (imputed);
- score: numeric, may not be missing (scaled only);
- city: string, may not be missing, an unseen city refused (handle_unknown="error");
- plan: string, may be missing (imputed with a constant), an unseen plan served (handle_unknown="ignore").
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

from pipeline_tools.package import write_model_dir

NAME = "mixed"
COLUMNS = ("age", "income", "score", "city", "plan")
NUMERIC = ("age", "income", "score")
STRINGS = ("city", "plan")
MAY_BE_MISSING = frozenset({"age", "income", "plan"})
CITIES = ("paris", "rome", "london", "oslo")
PLANS = ("free", "pro", "team")
REFUSED_UNSEEN = frozenset({"city"})  # an unseen value here is refused; in `plan` it is served


def rows(n: int, seed: int = 0, gaps: bool = True) -> pd.DataFrame:
    """n synthetic rows; with `gaps`, a missing value (NaN) now and then where the schema allows one."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n).round(1),
            "income": rng.normal(50, 20, n).round(2),
            "score": rng.uniform(0, 1, n).round(3),
            "city": rng.choice(CITIES, n),
            "plan": rng.choice(PLANS, n).astype(object),
        }
    )
    if gaps:
        frame.loc[::5, "income"] = np.nan
        frame.loc[3::7, "age"] = np.nan
        frame.loc[1::6, "plan"] = np.nan  # as the runtime hands a gap to the pipeline (None is a category)
    return frame


def pipeline() -> Pipeline:
    """The fitted pipeline (deterministic: the same rows and solver every time)."""
    train = rows(400)
    labels = ((train["age"].fillna(40) > 40) ^ (train["city"] == "rome")).astype(int)
    prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income"]),
            ("score", StandardScaler(), ["score"]),
            ("city", OneHotEncoder(handle_unknown="error"), ["city"]),
            (
                "plan",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="none"), OneHotEncoder(handle_unknown="ignore")
                ),
                ["plan"],
            ),
        ]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=1000))]).fit(train, labels)


def write(out: Path, name: str = NAME) -> Path:
    """The packaged model directory out/<name>/1, the fitted pipeline's own schema and reference rows."""
    return write_model_dir(pipeline(), name, "1", out, reference=rows(50, seed=1), force=True)
