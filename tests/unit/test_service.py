"""The framework-free service (runtime.service.service) driven with no server: a shipped model
directory loaded with its options, Calls answered, a fallback and a shadow found among the loaded
models, and unloading. Each test keeps its own registry of loaded models."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlserver.types import MetadataModelResponse, Parameters
from prometheus_client import REGISTRY
from sklearn.datasets import load_diabetes
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import SplineTransformer

from pipeline_tools.package import write_model_dir
from runtime.core.artifacts import load_pipeline
from runtime.core.call import Answer, Call
from runtime.core.contract import Tensor
from runtime.core.errors import EntityIdError, InternalPredictionError, ModelUnavailable, NonFiniteError
from runtime.core.options import RuntimeOptions
from runtime.core.predictor import Predictor
from runtime.integration import v2
from runtime.service.loaded import Loaded
from runtime.service.service import ModelService

ROOT = Path(__file__).resolve().parents[2]
ROWS = np.asarray(load_diabetes().data[:5])


def _call(rows: np.ndarray = ROWS, request_id: str = "r-1") -> Call:
    return Call(request_id, [Tensor("X", list(rows.shape), "FP64", rows.ravel().tolist())], [], None, None, None)


def _options(**extra: Any) -> RuntimeOptions:
    return RuntimeOptions.from_extra(extra)


async def _load(
    models_dir: Path,
    name: str,
    version: str,
    loaded: Loaded[ModelService],
    kind: type[ModelService] = ModelService,
    **extra: Any,
) -> ModelService:
    return await kind.load(name, models_dir / "diabetes" / version, _options(**extra), loaded=loaded)


def _fail(features: np.ndarray) -> np.ndarray:
    raise ZeroDivisionError("injected fault")


class _Broken(ModelService):
    """The real service, its compiled predictor failing once loaded: every computation is the
    model's own internal error (a 500), which its fallback answers."""

    @classmethod
    async def load(cls, *args: Any, **kwargs: Any) -> ModelService:
        service = await super().load(*args, **kwargs)
        service._predictor = Predictor(service._predictor.kind, {name: _fail for name in service._predictor.outputs})
        return service


def _predictions(answer: Answer) -> list[float]:
    (output,) = answer.outputs
    assert output.name == "predict" and output.shape == [len(ROWS)]
    return output.data


def test_a_shipped_model_answers_a_call_as_scikit_learn_predicts(models_dir):
    pipeline = load_pipeline(models_dir / "diabetes" / "2", _options().load_policy())
    assert pipeline.scaler is not None
    expected = pipeline.model.predict(pipeline.scaler.transform(ROWS))

    async def scenario() -> Answer:
        loaded: Loaded[ModelService] = Loaded()
        service = await _load(models_dir, "diabetes", "2", loaded)
        try:
            assert loaded.get("diabetes") is service
            return await service.answer(_call())
        finally:
            await service.unload()

    answer = asyncio.run(scenario())
    assert (answer.model_name, answer.model_version) == ("diabetes", "2")
    np.testing.assert_allclose(_predictions(answer), expected, rtol=1e-9)
    assert answer.parameters == {} and answer.headers == ()


def test_the_served_version_is_the_configured_one_else_the_manifests(models_dir):
    async def scenario() -> tuple[str, str]:
        loaded: Loaded[ModelService] = Loaded()
        stable = await ModelService.load("stable", models_dir / "diabetes" / "2", _options(), "7", loaded=loaded)
        plain = await _load(models_dir, "plain", "2", loaded)
        versions = (await stable.answer(_call())).model_version, (await plain.answer(_call())).model_version
        await stable.unload()
        await plain.unload()
        return versions

    assert asyncio.run(scenario()) == ("7", "2")


def test_a_failing_model_is_answered_by_its_loaded_fallback(models_dir):
    async def scenario() -> tuple[Answer, Answer]:
        loaded: Loaded[ModelService] = Loaded()
        backup = await _load(models_dir, "backup", "1", loaded)
        primary = await _load(models_dir, "primary", "2", loaded, _Broken, fallback_model="backup")
        rescued, direct = await primary.answer(_call()), await backup.answer(_call())
        await primary.unload()
        await backup.unload()
        return rescued, direct

    rescued, direct = asyncio.run(scenario())
    assert rescued.model_name == "backup" and rescued.model_version == "1"
    assert rescued.parameters == {"served_by": "backup:1", "fallback_reason": "error"}
    assert _predictions(rescued) == _predictions(direct)


def test_without_its_fallback_loaded_a_failing_model_is_unavailable(models_dir):
    async def scenario() -> None:
        loaded: Loaded[ModelService] = Loaded()
        primary = await _load(models_dir, "alone", "2", loaded, _Broken, fallback_model="absent")
        try:
            with pytest.raises(ModelUnavailable, match="its fallback 'absent' is not loaded"):
                await primary.answer(_call())
        finally:
            await primary.unload()

    asyncio.run(scenario())


def test_unloading_leaves_the_registry_and_the_fallback_is_gone(models_dir):
    async def scenario() -> None:
        loaded: Loaded[ModelService] = Loaded()
        backup = await _load(models_dir, "gone-backup", "1", loaded)
        primary = await _load(models_dir, "gone-primary", "2", loaded, _Broken, fallback_model="gone-backup")
        assert (await primary.answer(_call())).model_name == "gone-backup"
        await backup.unload()
        assert loaded.get("gone-backup") is None and loaded.get("gone-primary") is primary
        with pytest.raises(ModelUnavailable, match="not loaded"):
            await primary.answer(_call())
        await primary.unload()
        assert loaded.get("gone-primary") is None

    asyncio.run(scenario())


def test_a_reload_keeps_the_new_version_registered_when_the_old_one_unloads(models_dir):
    async def scenario() -> None:
        loaded: Loaded[ModelService] = Loaded()
        old = await _load(models_dir, "reloaded", "1", loaded)
        new = await _load(models_dir, "reloaded", "2", loaded)
        await old.unload()
        assert loaded.get("reloaded") is new
        await new.unload()
        assert loaded.get("reloaded") is None

    asyncio.run(scenario())


def test_a_gap_the_fallback_may_not_take_is_refused_by_its_contract_naming_the_column(models_dir, tmp_path):
    """The fallback is looked up when it is needed, so the rule is the request's: the fallback's own
    contract checks what it is handed, and a gap where its schema has none is the caller's 400."""
    diabetes = load_diabetes(as_frame=True)
    # A spline has no compiled form: the pipeline serves itself, checked against its recorded answers.
    gappy = make_pipeline(SimpleImputer(), SplineTransformer(n_knots=4), LinearRegression())
    gappy.fit(diabetes.data, diabetes.target)
    directory = write_model_dir(gappy, "gappy", "1", tmp_path)
    rows = ROWS.ravel().tolist()
    rows[3 * ROWS.shape[1] + 2] = None  # row 3, 'bmi'
    with_gap = Call("gap", [Tensor("X", list(ROWS.shape), "FP64", rows)], [], None, None, None)

    async def scenario() -> Answer:
        loaded: Loaded[ModelService] = Loaded()
        backup = await _load(models_dir, "strict-backup", "1", loaded)
        primary = await _Broken.load("gappy", directory, _options(fallback_model="strict-backup"), loaded=loaded)
        try:
            with pytest.raises(
                NonFiniteError,
                match=r"row 3, column 2 \('bmi'\): null is not a number, and column 'bmi' may not be missing",
            ):
                await primary.answer(with_gap)
            return await primary.answer(_call())
        finally:
            await primary.unload()
            await backup.unload()

    assert asyncio.run(scenario()).parameters == {"served_by": "strict-backup:1", "fallback_reason": "error"}


def test_the_prediction_path_says_what_computes_the_answers_and_what_they_were_checked_against(models_dir, tmp_path):
    diabetes = load_diabetes(as_frame=True)
    # A spline has no compiled form: the pipeline serves itself, checked against its recorded answers.
    gappy = make_pipeline(SimpleImputer(), SplineTransformer(n_knots=4), LinearRegression())
    gappy.fit(diabetes.data, diabetes.target)
    directory = write_model_dir(gappy, "whole", "1", tmp_path)

    async def scenario() -> tuple[str, str]:
        whole = await ModelService.load("whole", directory, _options(), loaded=Loaded())
        compiled = await _load(models_dir, "compiled", "2", Loaded())
        await whole.unload()
        await compiled.unload()
        return whole.prediction_path, compiled.prediction_path

    whole, compiled = map(json.loads, asyncio.run(scenario()))
    assert whole == {
        "path": "sklearn",
        "verified": "allclose",
        "against": "original pipeline",
        "rtol": 1e-7,
        "atol": 1e-10,
    }
    assert compiled == {
        "path": "folded-linear",
        "verified": "allclose",
        "against": "scikit-learn",
        "rtol": 1e-9,
        "atol": 1e-12,
    }
    metadata = MetadataModelResponse(name="m", platform="", parameters=Parameters(content_type="np"))
    described = v2.with_prediction_path(v2.with_classes(metadata, [0, 1]), json.dumps(whole))
    assert described.parameters is not None
    kept = described.parameters.model_dump(exclude_none=True)
    assert kept == {"content_type": "np", "classes": "[0, 1]", "prediction_path": json.dumps(whole)}


def test_a_failing_model_without_a_fallback_is_an_internal_error(models_dir):
    async def scenario() -> None:
        service = await _load(models_dir, "broken", "2", Loaded(), _Broken)
        try:
            with pytest.raises(InternalPredictionError):
                await service.answer(_call())
        finally:
            await service.unload()

    asyncio.run(scenario())


def test_a_request_by_entity_id_without_a_feature_store_is_refused(models_dir):
    call = Call("ids", [Tensor("entity_id", [1], "BYTES", ["patient-1"])], [], None, None, None)

    async def scenario() -> None:
        service = await _load(models_dir, "no-store", "2", Loaded())
        try:
            with pytest.raises(EntityIdError, match="has no feature store; send the features themselves"):
                await service.answer(call)
        finally:
            await service.unload()

    asyncio.run(scenario())


def test_the_shadow_is_found_among_the_loaded_models(models_dir):
    def evaluated() -> float:
        labels = {"model": "shadowed", "shadow": "candidate", "event": "evaluated"}
        return REGISTRY.get_sample_value("pipeline_shadow_events_total", labels) or 0.0

    async def scenario() -> float:
        loaded: Loaded[ModelService] = Loaded()
        candidate = await _load(models_dir, "candidate", "1", loaded)
        primary = await _load(models_dir, "shadowed", "2", loaded, shadow_model="candidate")
        before = evaluated()
        await primary.answer(_call())
        deadline = time.monotonic() + 10.0
        while evaluated() == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await primary.unload()
        await candidate.unload()
        return evaluated() - before

    assert asyncio.run(scenario()) == 1.0


def test_the_service_imports_no_mlserver():
    probe = "import runtime.service.service, sys; assert not any(m.startswith('mlserver') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True)
