"""A shadow is handed the primary's features only when its own contract would have accepted them
(runtime.service.shadow.schema_mismatch); an incompatible one is skipped, counted and logged once;
classifiers' labels, strings included, are compared for agreement."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from runtime.core.artifacts import load_pipeline
from runtime.core.contract import Categories, Contract
from runtime.service import shadow as shadow_module
from runtime.service.shadow import Shadow, ShadowMismatch, schema_mismatch
from tests.ood_models import write_mixed

_names = itertools.count()
REASON = "column 'city' is numeric for the shadow, string for the primary"

NAMES = ("age", "income", "city")
BASE = Contract(NAMES, ("predict",), 100, (False, True, False), (False, False, True), ())


def _refusing(*cities: str) -> tuple[Categories | None, ...]:
    return (None, None, Categories(frozenset(cities), ", ".join(cities)))


@pytest.mark.parametrize(
    "primary,shadow",
    [
        (BASE, BASE),
        (BASE, dataclasses.replace(BASE, may_be_missing=(True, True, True))),  # the shadow takes more gaps
        (dataclasses.replace(BASE, categories=_refusing("rome")), BASE),  # the shadow takes any city
        (
            dataclasses.replace(BASE, categories=_refusing("rome")),
            dataclasses.replace(BASE, categories=_refusing("rome", "oslo")),
        ),
    ],
)
def test_a_shadow_whose_contract_takes_everything_the_primarys_does_matches(primary, shadow):
    assert schema_mismatch(primary, shadow) is None


@pytest.mark.parametrize(
    "shadow,reason",
    [
        (dataclasses.replace(BASE, feature_names=("age", "city", "income")), "it takes features age, city, income"),
        (
            dataclasses.replace(BASE, string_columns=()),
            "column 'city' is numeric for the shadow, string for the primary",
        ),
        (
            dataclasses.replace(BASE, may_be_missing=()),
            "column 'income' may be missing for the primary, not for the shadow",
        ),
        (dataclasses.replace(BASE, categories=_refusing("rome")), "column 'city' has categories the shadow refuses"),
    ],
)
def test_a_shadow_that_might_refuse_the_primarys_features_does_not_match(shadow, reason):
    problem = schema_mismatch(BASE, shadow)
    assert problem is not None and reason in problem


def test_a_primary_that_takes_more_categories_than_the_shadow_does_not_match():
    primary = dataclasses.replace(BASE, categories=_refusing("rome", "oslo"))
    problem = schema_mismatch(primary, dataclasses.replace(BASE, categories=_refusing("rome")))
    assert problem == "column 'city' has categories the shadow refuses and the primary takes"


def test_packaged_models_match_on_their_schema(tmp_path, models_dir):
    def contract(model_dir: Path) -> Contract:
        return Contract.for_manifest(load_pipeline(model_dir).manifest, 100)

    counting = contract(write_mixed(tmp_path, "counting"))
    tree = contract(write_mixed(tmp_path, "tree", tree=True))
    refusing = contract(write_mixed(tmp_path, "refusing", encoder_unknown="error"))
    diabetes = contract(models_dir / "diabetes" / "1")
    assert schema_mismatch(counting, tree) is None
    assert schema_mismatch(refusing, counting) is None  # every city the primary takes, the shadow does
    assert "city" in (schema_mismatch(counting, refusing) or "")
    assert "takes features" in (schema_mismatch(counting, diabetes) or "")
    # Today's numeric models: the same features, the same (numeric, never missing) columns.
    assert schema_mismatch(diabetes, contract(models_dir / "diabetes" / "2")) is None


def _sample(model: str, event: str) -> float:
    labels = {"model": model, "shadow": "candidate", "event": event}
    return REGISTRY.get_sample_value("pipeline_shadow_events_total", labels) or 0.0


async def _until(model: str, event: str, count: float) -> None:
    for _ in range(200):  # bounded: 2 s
        if _sample(model, event) >= count:
            return
        await asyncio.sleep(0.01)


class _Registry:
    """The shadow `candidate` as `find` sees it: its predictions, or why it cannot take the features."""

    def __init__(self) -> None:
        self.predict: Callable[[np.ndarray], np.ndarray] | None = None
        self.mismatch: str | None = None

    def find(self, name: str) -> Callable[[np.ndarray], np.ndarray] | None:
        if self.mismatch is not None:
            raise ShadowMismatch(self.mismatch)
        return self.predict


def test_an_incompatible_shadow_gets_nothing_its_requests_counted_and_the_reason_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(shadow_module, "TICK_S", 0.01)
    registry, model = _Registry(), f"unit-schema-{next(_names)}"
    handed: list[np.ndarray] = []

    def predict(features: np.ndarray) -> np.ndarray:
        handed.append(features)
        return np.array(["yes"] * len(features))

    registry.mismatch = REASON
    shadow = Shadow(model, "candidate", True, 1.0, 100, 10, find=registry.find)
    rows = np.array([[30.0, np.nan, "rome"]], dtype=object)

    async def scenario() -> None:
        for n in range(1, 4):
            shadow.offer(rows, np.array(["yes"]))
            await _until(model, "incompatible", n)
        registry.mismatch = None  # reloaded with a compatible schema
        registry.predict = predict
        shadow.offer(rows, np.array(["yes"]))
        await _until(model, "evaluated", 1)

    with caplog.at_level(logging.WARNING, logger="runtime.service.shadow"):
        asyncio.run(scenario())
    shadow.close()
    assert _sample(model, "incompatible") == 3 and _sample(model, "skipped") == 0
    assert _sample(model, "evaluated") == 1 and len(handed) == 1
    logged = [r.getMessage() for r in caplog.records if "cannot take its features" in r.getMessage()]
    assert logged == [f"shadow candidate of {model} cannot take its features ({REASON}): its batches are skipped"]


def test_string_labels_are_compared_for_agreement(monkeypatch):
    monkeypatch.setattr(shadow_module, "TICK_S", 0.01)
    model = f"unit-schema-{next(_names)}"
    shadow = Shadow(model, "candidate", True, 1.0, 100, 10, find=lambda name: lambda x: np.array(["yes", "no", "no"]))

    async def scenario() -> None:
        # Labels as a predictor returns them: str arrays (the waiting block keeps them as objects).
        shadow.offer(np.zeros((3, 2)), np.array(["yes", "yes", "no"]))
        await _until(model, "compared", 3)

    asyncio.run(scenario())
    shadow.close()
    assert _sample(model, "compared") == 3 and _sample(model, "agreed") == 2
