"""`--reference data.csv`: an empty cell is a gap (not a bound), a column of text is a string column
(no range), a column with no value or text where the model reads numbers is refused; and the command's
printed curl body for a mixed pipeline is one tensor per column that the served contract accepts."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeline_tools.package import PackagingError, read_reference_csv, write_model_dir
from runtime.core.artifacts import load_pipeline
from runtime.core.contract import Contract, Tensor
from runtime.core.predictor import compile_predictor

ROOT = Path(__file__).resolve().parents[2]


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def test_an_empty_cell_is_a_gap_and_text_makes_a_string_column(tmp_path):
    path = _csv(tmp_path, "age, income ,city,extra\n31,,paris,1\n,2500,rome,2\n45,1800,,3\n")
    table = read_reference_csv(path, ["city", "age", "income"])  # the model's order, not the file's
    assert list(table.columns) == ["city", "age", "income"]
    assert table["age"].dtype == np.float64 and table["income"].dtype == np.float64
    assert table["city"].tolist()[:2] == ["paris", "rome"] and math.isnan(table["city"].tolist()[2])
    assert math.isnan(table["income"][0]) and math.isnan(table["age"][1])


def test_only_an_empty_cell_is_a_gap(tmp_path):
    """'NA' or 'null' is a value (pandas would read them as gaps by default): the column is text."""
    table = read_reference_csv(_csv(tmp_path, "a,b\n1,NA\n2,null\n"), ["a", "b"])
    assert table["b"].tolist() == ["NA", "null"]


ROWS = 80


def _mixed_frame(seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, ROWS),
            "income": rng.normal(2000, 500, ROWS),
            "city": rng.choice(["oslo", "paris", "rome"], ROWS),
            "comment": rng.choice(["late", "on time"], ROWS),  # dropped by the pipeline
        }
    )
    frame.loc[::6, "income"] = np.nan
    return frame, (frame["age"] > 40).to_numpy(dtype=int)


def _mixed_pipeline() -> Pipeline:
    prep = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="error"), ["city"]),
        ],
        remainder="drop",
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression())])


def test_gaps_are_not_bounds_and_string_columns_have_no_range(tmp_path):
    frame, y = _mixed_frame()
    frame.head(20).to_csv(tmp_path / "data.csv", index=False)
    names = list(frame.columns)
    reference = read_reference_csv(tmp_path / "data.csv", names)
    target = write_model_dir(_mixed_pipeline().fit(frame, y), "mixed", "1", tmp_path / "models", reference=reference)
    manifest = _manifest(target)
    assert manifest["feature_ranges_source"] == "reference"
    head = frame.head(20)
    assert manifest["feature_ranges"] == {
        "min": [pytest.approx(head["age"].min()), pytest.approx(head["income"].min()), None, None],
        "max": [pytest.approx(head["age"].max()), pytest.approx(head["income"].max()), None, None],
    }
    kinds = {c["name"]: (c["kind"], c["missing"], c.get("categories")) for c in manifest["inputs"]}
    assert kinds == {
        "age": ("numeric", True, None),
        "income": ("numeric", True, None),
        "city": ("string", False, ["oslo", "paris", "rome"]),
        "comment": ("string", True, None),  # text in the reference; dropped, so a gap is harmless
    }


def test_the_recorded_check_rows_keep_the_numeric_columns_numbers(tmp_path):
    frame, y = _mixed_frame()
    target = write_model_dir(_mixed_pipeline().fit(frame, y), "m", "1", tmp_path / "models", reference=frame)
    manifest = _manifest(target)
    for j, name in enumerate(["age", "income"]):
        low, high = manifest["feature_ranges"]["min"][j], manifest["feature_ranges"]["max"][j]
        values = [row[j] for row in manifest["check"]["rows"] if row[j] is not None]
        assert len(set(values)) > 10 and all(low <= v <= high for v in values), name
    assert {row[2] for row in manifest["check"]["rows"]} == {"oslo", "paris", "rome"}


def test_a_column_with_no_value_is_refused(tmp_path):
    frame, y = _mixed_frame()
    frame["income"] = np.nan
    frame.head(5).to_csv(tmp_path / "data.csv", index=False)
    reference = read_reference_csv(tmp_path / "data.csv", list(frame.columns))
    with pytest.raises(PackagingError, match=r"^the reference data has no value at all in column\(s\) 'income'$"):
        write_model_dir(_mixed_pipeline().fit(_mixed_frame()[0], y), "m", "1", tmp_path / "models", reference=reference)
    assert not (tmp_path / "models" / "m" / "1").exists()


def test_text_where_the_model_reads_numbers_is_refused(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 2))
    pipe = make_pipeline(StandardScaler(), Ridge()).fit(x, x[:, 0])
    reference = read_reference_csv(_csv(tmp_path, "x0,x1\n1.5,abc\n2.5,3\n"), ["x0", "x1"])
    with pytest.raises(
        PackagingError, match="^the reference column 'x1' holds text, but the model reads numbers there$"
    ):
        write_model_dir(pipe, "m", "1", tmp_path / "models", reference=reference)


def test_the_command_prints_a_per_column_curl_body_the_contract_accepts(tmp_path):
    frame, y = _mixed_frame()
    pipe = _mixed_pipeline().fit(frame, y)
    joblib.dump(pipe, tmp_path / "pipe.joblib")
    frame.head(20).to_csv(tmp_path / "data.csv", index=False)
    run = subprocess.run(
        [sys.executable, "-m", "pipeline_tools.package", str(tmp_path / "pipe.joblib"), "--name", "mixed"]
        + ["--version", "1", "--out", str(tmp_path / "models"), "--reference", str(tmp_path / "data.csv")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    curl = next(line for line in run.stdout.splitlines() if line.startswith("curl "))
    words = shlex.split(curl)
    assert words[2] == "localhost:8080/v2/models/mixed/versions/1/infer"
    body = json.loads(words[words.index("-d") + 1])
    assert [(i["name"], i["datatype"], i["shape"]) for i in body["inputs"]] == [
        ("age", "FP64", [1]),
        ("income", "FP64", [1]),
        ("city", "BYTES", [1]),
        ("comment", "BYTES", [1]),
    ]
    loaded = load_pipeline(tmp_path / "models" / "mixed" / "1")
    contract = Contract.for_manifest(loaded.manifest, max_rows=10)
    features = contract.parse(None, [Tensor(**i) for i in body["inputs"]]).features
    sent = {i["name"]: i["data"][0] for i in body["inputs"]}
    answer = compile_predictor(loaded).predict(features, ("predict_proba",))["predict_proba"]
    np.testing.assert_allclose(answer, pipe.predict_proba(pd.DataFrame([sent])), rtol=1e-12)
