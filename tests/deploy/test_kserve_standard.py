"""kserve/standard/: the Standard-mode overlays (spec.canary[], KServe >= 0.20) render, validate strictly
against the v0.20.0 CRDs (and, where they use spec.canary or a predictor name, are refused by v0.16.0's),
pass KServe v0.20.0's admission rules (pipeline_tools.rollout.canary_rules), every check the Serverless overlays pass
(CHECKS), and the canary checks below; each step is an update the webhook accepts from the step before.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline_tools.rollout import canary_rules as rules
from pipeline_tools.rollout.patches import MODEL_FORMAT
from pipeline_tools.rollout.steps import CANARY_PERCENTS
from tests.deploy.deploy_support import (
    CANARY_OVERLAYS,
    CANARY_RELEASE,
    FIRST_CANARY,
    LAST_CANARY,
    OLDEST_RELEASE,
    STANDARD_OVERLAYS,
    by_kind,
    effective_canary_predictor,
    model_dir_for,
    model_settings,
    render,
    schema_errors,
    served_model_name,
)
from tests.deploy.test_kserve_manifests import CHECKS, Objects, parent_and_key

SERVICES = ("diabetes", "diabetes-grpc")
# overlay -> (stable predictor's name, its models/diabetes version, [(canary, version, percent, minReplicas)])
ROLLOUT_STATES: dict[str, tuple[str | None, str, list[tuple[str, str, int, int | None]]]] = {
    "standard/base": (None, "1", []),
    "standard/dark-launch": (None, "1", [("v2", "2", 0, 1)]),
    **{
        overlay: (None, "1", [("v2", "2", p, None)])
        for overlay, p in zip(CANARY_OVERLAYS, CANARY_PERCENTS, strict=True)
    },
    "standard/promote": ("v2", "2", []),
    "standard/rollback": (None, "1", []),
}
# Each step, and the step it is applied over (rollback may follow any canary step; the last one here).
CHAIN = ["standard/base", "standard/dark-launch", *CANARY_OVERLAYS, "standard/promote"]
STEPS = [*zip(CHAIN, CHAIN[1:], strict=False), (LAST_CANARY, "standard/rollback")]


def services(overlay: str) -> dict[str, dict[str, Any]]:
    return by_kind(render(overlay), "InferenceService")


def canary_model_problems(objects: Objects) -> list[str]:
    """Each canary serves a model of this repository under the stable service's model name, in the
    stable predictor's format: what KServe deploys is the canary laid over the stable predictor."""
    problems = []
    for name, isvc in by_kind(objects, "InferenceService").items():
        stable = isvc["spec"]["predictor"]
        for canary in isvc["spec"].get("canary") or []:
            predictor = effective_canary_predictor(stable, canary["predictor"])
            label = f"{name}/canary {predictor.get('name')}"
            model_dir = model_dir_for(predictor["model"]["storageUri"])
            if not (model_dir / "model-settings.json").is_file():
                problems.append(f"{label}: storageUri names no model directory in models/")
                continue
            settings = model_settings(model_dir)
            served = served_model_name({"metadata": isvc["metadata"], "spec": {"predictor": predictor}})
            if (settings["name"], settings["parameters"]["version"]) != (served, model_dir.name):
                problems.append(f"{label}: {model_dir} holds {settings['name']} {settings['parameters']['version']}")
            if predictor["model"]["modelFormat"] != stable["model"]["modelFormat"]:
                problems.append(f"{label}: modelFormat differs from the stable predictor's")
    return problems


def admission_problems(objects: Objects) -> list[str]:
    return [
        f"{name}: {problem}"
        for name, isvc in by_kind(objects, "InferenceService").items()
        for problem in rules.webhook_problems(isvc) + rules.controller_problems(isvc)
    ]


STANDARD_CHECKS = [*CHECKS, canary_model_problems, admission_problems]


@pytest.mark.parametrize("overlay", STANDARD_OVERLAYS)
def test_overlay_renders_and_validates_strictly_against_the_v0_20_crds(overlay: str) -> None:
    objects = render(overlay)
    assert {o["kind"] for o in objects} == {"ServingRuntime", "InferenceService"}
    assert [e for o in objects for e in schema_errors(o, CANARY_RELEASE)] == []


@pytest.mark.parametrize("overlay", STANDARD_OVERLAYS)
def test_kserve_0_16_knows_neither_canaries_nor_predictor_names(overlay: str) -> None:
    errors = [e for o in render(overlay) for e in schema_errors(o, OLDEST_RELEASE)]
    stable_name, _, canaries = ROLLOUT_STATES[overlay]
    expected = {"'canary' was unexpected"} if canaries else {"'name' was unexpected"} if stable_name else set()
    assert {e.split("(")[-1].rstrip(")") for e in errors} == expected, errors


@pytest.mark.parametrize("overlay", STANDARD_OVERLAYS)
@pytest.mark.parametrize("check", STANDARD_CHECKS, ids=lambda c: c.__name__)
def test_overlay_passes_the_checks_beyond_the_schema(overlay: str, check: Any) -> None:
    assert check(render(overlay)) == []


@pytest.mark.parametrize("overlay", STANDARD_OVERLAYS)
def test_overlay_sets_its_rollout_state_on_rest_and_grpc(overlay: str) -> None:
    stable_name, version, expected = ROLLOUT_STATES[overlay]
    for name in SERVICES:
        spec = services(overlay)[name]["spec"]
        assert spec["predictor"].get("name") == stable_name, name
        assert model_dir_for(spec["predictor"]["model"]["storageUri"]).name == version, name
        canaries = [
            (
                c["predictor"]["name"],
                model_dir_for(c["predictor"]["model"]["storageUri"]).name,
                c["trafficPercent"],
                c["predictor"].get("minReplicas"),
            )
            for c in spec.get("canary", [])
        ]
        assert canaries == expected, name


@pytest.mark.parametrize("start,end", STEPS, ids=[end for _, end in STEPS])
def test_each_step_is_an_update_the_webhook_accepts(start: str, end: str) -> None:
    for name in SERVICES:
        old = {**services(start)[name], "status": {"deploymentMode": rules.STANDARD}}
        assert rules.update_problems(old, services(end)[name]) == [], name


def test_rollback_restores_the_stable_deployment_exactly() -> None:
    assert render("standard/rollback") == render("standard/base")


def test_promotion_keeps_everything_but_the_name_and_the_model() -> None:
    before, after = services(LAST_CANARY)["diabetes"], services("standard/promote")["diabetes"]
    stable = copy.deepcopy(before["spec"]["predictor"])
    stable["name"] = before["spec"]["canary"][0]["predictor"]["name"]
    stable["model"]["storageUri"] = before["spec"]["canary"][0]["predictor"]["model"]["storageUri"]
    assert after["spec"] == {"predictor": stable}


@pytest.mark.parametrize("overlay", STANDARD_OVERLAYS)
def test_every_service_runs_in_standard_mode_on_an_hpa(overlay: str) -> None:
    for name, isvc in services(overlay).items():
        annotations = isvc["metadata"]["annotations"]
        # The current name: KServe 0.16 refuses updates of a service annotated "RawDeployment".
        assert annotations[rules.DEPLOYMENT_MODE] == rules.STANDARD, name
        # Named, so the webhook checks scaleMetric/scaleTarget against the HPA's rules.
        assert annotations["serving.kserve.io/autoscalerClass"] == "hpa", name
        predictor = isvc["spec"]["predictor"]
        assert predictor["scaleMetric"] in ("cpu", "memory") and 1 <= predictor["scaleTarget"] <= 100, name
        assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"], name
        # Knative-only: nothing would enforce it here.
        assert "containerConcurrency" not in predictor, name
        assert predictor["model"]["resources"]["requests"]["cpu"], name  # an HPA on cpu needs a request


def test_the_rollout_commands_model_format_is_the_runtimes() -> None:
    objects = render("standard/base")
    (runtime,) = by_kind(objects, "ServingRuntime").values()
    formats = [{"name": f["name"], "version": f["version"]} for f in runtime["spec"]["supportedModelFormats"]]
    assert formats == [MODEL_FORMAT]
    assert {s["spec"]["predictor"]["model"]["modelFormat"]["name"] for s in services("standard/base").values()} == {
        MODEL_FORMAT["name"]
    }


# ---------------------------------------------------------------- the validators reject what they should


CANARY_MISSPELLINGS = [  # (path to the field, misspelling)
    ("spec.canary.0.trafficPercent", "trafficPercentage"),
    ("spec.canary.0.predictor.name", "nmae"),
    ("spec.canary.0.predictor.model.storageUri", "storageURI"),
]


@pytest.mark.parametrize("path,bad", CANARY_MISSPELLINGS, ids=[b for _, b in CANARY_MISSPELLINGS])
def test_a_misspelled_canary_field_is_rejected(path: str, bad: str) -> None:
    isvc = services(FIRST_CANARY)["diabetes"]
    parent, key = parent_and_key(isvc, path)
    parent[bad] = parent.pop(key)
    errors = schema_errors(isvc, CANARY_RELEASE)
    assert any(repr(bad) in error for error in errors), errors


@pytest.mark.parametrize(
    "path",
    [
        "spec.canary.0.trafficPercent",
        "spec.canary.0.predictor.model.name",
        "spec.canary.0.predictor.model.modelFormat",
    ],
)
def test_what_the_crd_requires_of_a_canary_is_required(path: str) -> None:
    isvc = services(FIRST_CANARY)["diabetes"]
    parent, key = parent_and_key(isvc, path)
    del parent[key]
    assert any(f"{key!r} is a required property" in e for e in schema_errors(isvc, CANARY_RELEASE))


@pytest.mark.parametrize(
    "path,value",
    [
        ("spec.canary.0.predictor.model.storageUri", "gs://b/models/diabetes/9"),  # no such version
        ("spec.canary.0.predictor.model.env", [{"name": "MLSERVER_MODEL_NAME", "value": "diabetis"}]),
        ("spec.canary.0.predictor.model.modelFormat", {"name": "sklearn", "version": "1"}),
    ],
    ids=["missing-version", "wrong-served-name", "other-format"],
)
def test_the_canary_model_check_catches_its_mistakes(path: str, value: Any) -> None:
    objects = render(FIRST_CANARY)
    parent, key = parent_and_key(by_kind(objects, "InferenceService")["diabetes"], path)
    parent[key] = value
    assert canary_model_problems(objects)


def test_the_drain_check_uses_the_grace_period_in_standard_mode() -> None:
    objects = render(FIRST_CANARY)
    by_kind(objects, "InferenceService")["diabetes"]["spec"]["predictor"]["terminationGracePeriodSeconds"] = 25
    assert any("terminationGracePeriodSeconds (25s)" in p for check in CHECKS for p in check(objects))
