"""The step registry (runtime.core.steps): what it holds, that every entry round-trips (fitted with
each of its example settings, packaged, loaded, compiled and compared with scikit-learn), and that
the predictor, the packager and the out-of-distribution check switch on no step type of their own."""

from __future__ import annotations

import ast
import importlib
import logging
import re
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from sklearn.base import is_classifier
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline_tools.package import write_model_dir
from runtime.core.artifacts import load_pipeline
from runtime.core.ood import OodDetector
from runtime.core.predictor import compile_predictor
from runtime.core.steps.kinds import StepKind
from runtime.core.steps.registry import ESTIMATORS, TRANSFORMERS, Registry
from tests.unit.conftest import ROOT

ROWS = 40

# What the README promises: every supported step type, in its order, with the fast path it gets.
SUPPORTED_SCALERS = ["StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler"]
SUPPORTED_ESTIMATORS = {
    "LinearRegression": "folded-linear",
    "Ridge": "folded-linear",
    "Lasso": "folded-linear",
    "ElasticNet": "folded-linear",
    "SGDRegressor": "folded-linear",
    "LogisticRegression": "folded-linear",
    "SGDClassifier": "folded-linear",
    "DecisionTreeRegressor": None,
    "DecisionTreeClassifier": None,
    "RandomForestRegressor": "tree-loop",
    "ExtraTreesRegressor": "tree-loop",
    "RandomForestClassifier": "tree-loop",
    "ExtraTreesClassifier": "tree-loop",
    "GradientBoostingRegressor": "boosted-stages",
    "GradientBoostingClassifier": "boosted-stages",
    "HistGradientBoostingRegressor": None,
    "HistGradientBoostingClassifier": None,
    "KNeighborsRegressor": None,
    "KNeighborsClassifier": None,
    "SVR": None,
    "SVC": None,
}
# Per transformer example: whether it folds into a linear model, and whether it keeps statistics that
# bound the out-of-distribution check when the manifest has no reference data.
TRANSFORMER_EXAMPLES = {
    "StandardScaler-defaults": (True, True),
    "StandardScaler-with_mean=False": (True, True),
    "StandardScaler-with_std=False": (True, False),
    "MinMaxScaler-defaults": (True, True),
    "MinMaxScaler-clip=True": (False, True),
    "MaxAbsScaler-defaults": (True, True),
    "RobustScaler-defaults": (True, True),
    "RobustScaler-with_centering=False": (True, False),
}
STEP_MODULES = ("preprocessing", "linear_model", "tree", "ensemble", "neighbors", "svm")
CONSUMERS = ("runtime/core/predictor.py", "runtime/core/ood.py", "pipeline_tools/package.py")


def test_the_registry_holds_every_supported_step_type_with_its_fast_path():
    assert [kind.name for kind in TRANSFORMERS] == SUPPORTED_SCALERS
    fast_paths = {kind.name: kind.fast_path.name if kind.fast_path else None for kind in ESTIMATORS}
    assert fast_paths == SUPPORTED_ESTIMATORS and list(fast_paths) == list(SUPPORTED_ESTIMATORS)


@pytest.mark.parametrize("module_name", STEP_MODULES)
def test_each_module_declares_the_steps_of_its_scikit_learn_package(module_name):
    module = importlib.import_module(f"runtime.core.steps.{module_name}")
    assert module.KINDS
    for kind in module.KINDS:
        assert kind.cls.__module__.startswith(f"sklearn.{module_name}."), kind.name
        assert kind in (*TRANSFORMERS, *ESTIMATORS), f"{kind.name} is declared but not registered"


# ------------------------------------------------------------------------------ round trips


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    return load_diabetes(return_X_y=True)


def _binary_strings() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    return x, np.where(y == 1, "benign", "malignant")


def _multiclass_ints() -> tuple[np.ndarray, np.ndarray]:
    return load_wine(return_X_y=True)


def _example_id(kind: StepKind, index: int) -> str:
    settings = ",".join(f"{key}={value}" for key, value in kind.examples[index].items())
    return f"{kind.name}-{settings or 'defaults'}"


def _cases(registry: Registry[Any]) -> list[Any]:
    return [
        pytest.param(kind, index, id=_example_id(kind, index))
        for kind in registry
        for index in range(len(kind.examples))
    ]


def test_the_transformer_examples_are_the_tabled_ones():
    assert [_example_id(kind, i) for kind in TRANSFORMERS for i in range(len(kind.examples))] == list(
        TRANSFORMER_EXAMPLES
    )


def _rows(x: np.ndarray) -> np.ndarray:
    """Training rows and the same rows moved far outside the training range (where a step that
    is not affine, such as a clipping one, would betray a fold)."""
    spread = x.std(axis=0)
    return np.vstack([x[:ROWS], x[:ROWS] + 10 * spread, x[:ROWS] - 10 * spread])


def _round_trip(tmp_path: Path, pipe: Any, rows: np.ndarray, caplog: pytest.LogCaptureFixture) -> str:
    """Package, load and compile `pipe`; assert it answers what scikit-learn answers on `rows`;
    return the predictor's kind."""
    with caplog.at_level(logging.WARNING, logger="runtime.core.predictor"):
        pipeline = load_pipeline(write_model_dir(pipe, "m", "1", tmp_path))
        compiled = compile_predictor(pipeline)
    assert "disagrees with scikit-learn" not in caplog.text
    got = compiled.predict(rows, tuple(pipeline.manifest.outputs))
    for output in pipeline.manifest.outputs:
        expected = np.asarray(getattr(pipe, output)(rows))
        if expected.dtype.kind in "fc":
            np.testing.assert_allclose(got[output], expected, rtol=1e-9, atol=1e-12, err_msg=output)
        else:
            np.testing.assert_array_equal(got[output], expected, err_msg=output)
    return compiled.kind


@pytest.mark.parametrize("kind,index", _cases(TRANSFORMERS))
def test_every_transformer_round_trips_folded_exactly_where_it_is_affine(tmp_path, caplog, kind, index):
    x, y = _diabetes()
    pipe = make_pipeline(kind.cls(**kind.examples[index]), LinearRegression()).fit(x, y)
    predictor_kind = _round_trip(tmp_path, pipe, _rows(x), caplog)
    folds = TRANSFORMER_EXAMPLES[_example_id(kind, index)][0]
    assert predictor_kind == ("folded-linear" if folds else "sklearn")
    assert (kind.affine(pipe[0]) is not None) == folds


@pytest.mark.parametrize("kind,index", _cases(TRANSFORMERS))
def test_every_transformer_keeps_statistics_that_bound_its_training_data(tmp_path, kind, index):
    x, y = _diabetes()
    pipe = make_pipeline(kind.cls(**kind.examples[index]), LinearRegression()).fit(x, y)
    detector = OodDetector.from_pipeline(load_pipeline(write_model_dir(pipe, "m", "1", tmp_path)), 3.0)
    centre = np.median(x, axis=0, keepdims=True)
    far = centre + 1e3 * np.abs(x).max(axis=0)
    assert detector.check(centre, with_flags=False).rows == 0
    keeps = TRANSFORMER_EXAMPLES[_example_id(kind, index)][1]
    assert detector.check(far, with_flags=False).per_feature.tolist() == [int(keeps)] * x.shape[1]


def _estimator_data(kind: StepKind) -> list[tuple[np.ndarray, np.ndarray]]:
    if not is_classifier(kind.cls()):
        return [_diabetes()]
    return [_binary_strings(), _multiclass_ints()]


@pytest.mark.parametrize("kind,index", _cases(ESTIMATORS))
def test_every_estimator_round_trips_on_its_fast_path_or_scikit_learn(tmp_path, caplog, kind, index):
    for number, (x, y) in enumerate(_estimator_data(kind)):
        pipe = make_pipeline(StandardScaler(), kind.cls(**kind.examples[index])).fit(x, y)
        predictor_kind = _round_trip(tmp_path / str(number), pipe, _rows(x), caplog)
        fast_path = kind.fast_path.name if kind.fast_path is not None else "sklearn"
        # An entry's first example is served wholly by its fast path; another may leave some
        # outputs to scikit-learn (SGDClassifier's modified_huber probabilities).
        assert predictor_kind == fast_path if index == 0 else predictor_kind in (fast_path, "sklearn")


# ------------------------------------------------------------------------------ lookups


def test_a_step_no_entry_covers_has_none():
    assert TRANSFORMERS.of(PCA(2)) is None and TRANSFORMERS.family(PCA(2)) is None
    assert ESTIMATORS.of(StandardScaler()) is None and TRANSFORMERS.family(Ridge()) is None


def test_a_subclass_has_no_entry_of_its_own_but_belongs_to_its_parents_family():
    class MyScaler(StandardScaler):
        pass

    parent = TRANSFORMERS.of(StandardScaler())
    assert parent is not None and parent.cls is StandardScaler
    assert TRANSFORMERS.of(MyScaler()) is None
    assert TRANSFORMERS.family(MyScaler()) is parent


def test_a_step_type_registered_twice_is_refused():
    kinds = list(ESTIMATORS)
    with pytest.raises(ValueError, match="registered twice"):
        Registry([*kinds, kinds[0]])


# ------------------------------------------------------------------------------ no switches left


def _code(path: Path) -> tuple[set[str], set[str]]:
    """A module's identifiers, attributes and words of its string constants (comments and docstrings
    aside), and the modules it imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(cast(ast.Expr, node.body[0]).value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None
    }
    words: set[str] = set()
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.alias):
            words.add(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.update(re.findall(r"\w+", node.value))
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    return words, imported


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_the_consumers_name_no_step_type_and_import_no_step_module(consumer):
    words, imported = _code(ROOT / consumer)
    step_types = {kind.name for kind in (*TRANSFORMERS, *ESTIMATORS)}
    assert not words & step_types, f"{consumer} switches on step types {sorted(words & step_types)}"
    step_modules = {m for m in imported if m.split(".")[:2] in (["sklearn", s] for s in STEP_MODULES)}
    assert not step_modules, f"{consumer} imports scikit-learn's step modules {sorted(step_modules)}"
    assert "runtime.core.steps.registry" in imported, f"{consumer} does not read the step registry"
