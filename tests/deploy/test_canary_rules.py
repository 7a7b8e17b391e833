"""pipeline_tools.rollout.canary_rules: each KServe v0.20.0 admission rule for canaries refuses its example, the edge
cases the webhook accepts pass, and the schema alone would have let most of the examples through.

Every example starts from the rendered first Standard-mode canary overlay (kserve/standard/canary-<first
step>: diabetes at version 1, canary `v2` at the first step's percent), which passes every rule, and changes
one thing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from pipeline_tools.rollout import canary_rules as rules
from tests.deploy.deploy_support import CANARY_RELEASE, FIRST_CANARY, by_kind, render, schema_errors

Obj = dict[str, Any]
MODE = ("metadata", "annotations", rules.DEPLOYMENT_MODE)
V3_URI = "gs://YOUR-BUCKET/pipeline-runtime/models/diabetes/3"


def canary_isvc() -> Obj:
    return by_kind(render(FIRST_CANARY), "InferenceService")["diabetes"]


def canary(isvc: Obj, index: int = 0) -> Obj:
    return isvc["spec"]["canary"][index]["predictor"]


def second_canary(isvc: Obj, name: str, first: int, second: int) -> None:
    """Two canaries: the overlay's at `first` percent and a copy named `name` at `second`."""
    entry = copy.deepcopy(isvc["spec"]["canary"][0])
    entry["predictor"]["name"] = name
    entry["predictor"]["model"]["storageUri"] = V3_URI
    entry["trafficPercent"] = second
    isvc["spec"]["canary"][0]["trafficPercent"] = first
    isvc["spec"]["canary"].append(entry)


def set_path(obj: Obj, path: tuple[str | int, ...], value: Any) -> None:
    """Set (None: delete) the value at a path of keys and list indices."""
    *parents, last = path
    node: Any = obj
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value


def swap_stable_model_for_a_container(isvc: Obj) -> None:
    stable = isvc["spec"]["predictor"]
    model = stable.pop("model")
    stable["containers"] = [{"name": rules.KSERVE_CONTAINER, "image": "registry.example.com/custom:1"}]
    del model


Mutation = Callable[[Obj], None]


def steps(*mutations: Mutation) -> Mutation:
    """One mutation made of several, applied in order."""

    def apply(isvc: Obj) -> None:
        for mutate in mutations:
            mutate(isvc)

    return apply


# id -> (what changes, a part of the webhook's message, whether the strict v0.20.0 schema also refuses it)
REFUSED: dict[str, tuple[Mutation, str, bool]] = {
    "mode-knative": (
        lambda i: set_path(i, MODE, "Knative"),
        "only supported in Standard deployment mode",
        False,
    ),
    "mode-serverless": (lambda i: set_path(i, MODE, "Serverless"), "only supported in Standard", False),
    # Without the annotation KServe takes the cluster's default mode, which may not be Standard.
    "mode-absent": (lambda i: set_path(i, MODE, None), "only supported in Standard deployment mode", False),
    "stable-without-model": (
        swap_stable_model_for_a_container,
        "canary requires a stable predictor with a model",
        False,
    ),
    "name-missing": (
        lambda i: set_path(i, ("spec", "canary", 0, "predictor", "name"), None),
        "canary[0] predictor.name is required",
        False,
    ),
    "name-duplicated": (
        lambda i: second_canary(i, "v2", 10, 20),
        "canary predictor.name 'v2' is duplicated",
        False,
    ),
    "name-is-the-stable-name": (
        lambda i: set_path(i, ("spec", "predictor", "name"), "v2"),
        "canary predictor.name 'v2' conflicts with stable predictor name",
        False,
    ),
    "traffic-above-100": (
        lambda i: set_path(i, ("spec", "canary", 0, "trafficPercent"), 101),
        "trafficPercent must be between 0 and 100, got 101",
        True,  # the CRD's maximum refuses it first
    ),
    "traffic-sum-above-100": (
        lambda i: second_canary(i, "v3", 60, 50),
        "sum of canary trafficPercent values (110) must be <= 100",
        False,
    ),
    "no-implementation": (
        lambda i: set_path(i, ("spec", "canary", 0, "predictor", "model"), None),
        "exactly one of [",
        False,
    ),
    "two-implementations": (
        lambda i: set_path(
            i,
            ("spec", "canary", 0, "predictor", "sklearn"),
            {"name": rules.KSERVE_CONTAINER, "storageUri": V3_URI},
        ),
        "exactly one of [",
        False,
    ),
    "worker-spec": (
        lambda i: set_path(i, ("spec", "canary", 0, "predictor", "workerSpec"), {"tensorParallelSize": 1}),
        "must not set workerSpec",
        False,
    ),
    "max-replicas": (
        lambda i: set_path(i, ("spec", "canary", 0, "predictor", "maxReplicas"), 2),
        "must not set maxReplicas",
        False,
    ),
    "scale-target": (
        lambda i: set_path(i, ("spec", "canary", 0, "predictor", "scaleTarget"), 70),
        "must not set scaleTarget",
        False,
    ),
    "scale-metric": (
        lambda i: set_path(i, ("spec", "canary", 0, "predictor", "scaleMetric"), "cpu"),
        "must not set scaleMetric",
        False,
    ),
    "autoscaling": (
        lambda i: set_path(i, ("spec", "canary", 0, "predictor", "autoScaling"), {"metrics": []}),
        "must not set autoScaling",
        False,
    ),
    "min-replicas-above-stable": (
        lambda i: set_path(i, ("spec", "canary", 0, "predictor", "minReplicas"), 2),
        "minReplicas (2) must not exceed stable predictor minReplicas (1)",
        False,
    ),
    "min-replicas-above-default": (  # the stable's minReplicas unset counts as 1
        steps(
            lambda i: set_path(i, ("spec", "predictor", "minReplicas"), None),
            lambda i: set_path(i, ("spec", "canary", 0, "predictor", "minReplicas"), 2),
        ),
        "minReplicas (2) must not exceed stable predictor minReplicas (1)",
        False,
    ),
    "stable-model-named": (  # what a promotion that copied the canary's model whole would do
        lambda i: set_path(i, ("spec", "predictor", "model", "name"), rules.KSERVE_CONTAINER),
        "the 'name' field is not allowed in standard predictor",
        False,
    ),
}


@pytest.mark.parametrize("rule", REFUSED)
def test_each_webhook_rule_refuses_its_example(rule: str) -> None:
    mutate, message, schema_refuses = REFUSED[rule]
    isvc = canary_isvc()
    assert rules.webhook_problems(isvc) == []
    mutate(isvc)
    problems = rules.webhook_problems(isvc)
    assert any(message in p for p in problems), problems
    # Why the rule is needed: the strict schema (what the API server checks) mostly lets it through.
    assert bool(schema_errors(isvc, CANARY_RELEASE)) == schema_refuses, schema_errors(isvc, CANARY_RELEASE)


ACCEPTED: dict[str, Mutation] = {
    "legacy-raw-deployment": lambda i: set_path(i, MODE, "RawDeployment"),  # rewritten to Standard first
    "traffic-sum-exactly-100": lambda i: second_canary(i, "v3", 50, 50),
    "dark-launch-at-0": steps(
        lambda i: set_path(i, ("spec", "canary", 0, "trafficPercent"), 0),
        lambda i: set_path(i, ("spec", "canary", 0, "predictor", "minReplicas"), 1),
    ),
    "min-replicas-equal-to-stable": lambda i: set_path(i, ("spec", "canary", 0, "predictor", "minReplicas"), 1),
    "max-replicas-0": lambda i: set_path(i, ("spec", "canary", 0, "predictor", "maxReplicas"), 0),
    "stable-named-differently": lambda i: set_path(i, ("spec", "predictor", "name"), "v1"),
    "no-canary-in-knative-mode": steps(
        lambda i: set_path(i, MODE, "Knative"),
        lambda i: set_path(i, ("spec", "canary"), None),
    ),
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_what_the_webhook_accepts_passes(case: str) -> None:
    isvc = canary_isvc()
    ACCEPTED[case](isvc)
    assert rules.webhook_problems(isvc) == []
    assert rules.controller_problems(isvc) == []
    assert schema_errors(isvc, CANARY_RELEASE) == []


def test_every_problem_is_reported_not_only_the_first() -> None:
    isvc = canary_isvc()
    set_path(isvc, MODE, "Knative")
    set_path(isvc, ("spec", "canary", 0, "predictor", "maxReplicas"), 2)
    set_path(isvc, ("spec", "canary", 0, "predictor", "scaleMetric"), "cpu")
    assert len(rules.webhook_problems(isvc)) == 3


# ---------------------------------------------------------------- on update


def with_status(isvc: Obj, mode: str) -> Obj:
    return {**isvc, "status": {"deploymentMode": mode}}


def test_the_deployment_mode_cannot_change_on_update() -> None:
    old = with_status(by_kind(render("canary"), "InferenceService")["diabetes"], "Knative")
    new = canary_isvc()  # the same service, now annotated Standard with a canary
    assert rules.update_problems(old, new) == [
        "update rejected: deploymentMode cannot be changed from 'Knative' to 'Standard'"
    ]
    # The deprecated names are the same modes (the mutating webhook rewrites them first).
    assert rules.update_problems(with_status(new, "RawDeployment"), new) == []
    legacy = copy.deepcopy(old)
    set_path(legacy, MODE, "Serverless")
    assert rules.update_problems(old, legacy) == []


def test_before_kserve_records_a_mode_v0_20_0_compares_with_standard() -> None:
    # ParseDeploymentMode("") is the default, Standard: a Knative service updated before its first
    # reconcile is refused; a Standard one is not.
    knative = by_kind(render("canary"), "InferenceService")["diabetes"]
    assert "cannot be changed from 'Standard' to 'Knative'" in rules.update_problems(knative, knative)[0]
    assert rules.update_problems(canary_isvc(), canary_isvc()) == []


def test_a_predictor_rename_needs_a_model_change() -> None:
    old = with_status(canary_isvc(), "Standard")
    renamed = copy.deepcopy(old)
    set_path(renamed, ("spec", "predictor", "name"), "v1")
    assert rules.update_problems(old, renamed) == ["predictor.name change requires a model change (e.g. storageUri)"]
    # Promotion renames and changes the model together.
    promoted = by_kind(render("standard/promote"), "InferenceService")["diabetes"]
    assert rules.update_problems(old, promoted) == []


# ---------------------------------------------------------------- what admission lets through


@pytest.mark.parametrize(
    "path,value,message",
    [
        (("spec", "canary", 0, "predictor", "model", "name"), "v2", "must be 'kserve-container'"),
        (("spec", "canary", 0, "trafficPercent"), 0, "runs no pods"),
        (("spec", "canary", 0, "predictor", "name"), "v2-" + "x" * 50, "longer than 63 characters"),
    ],
    ids=["container-name", "dark-launch-without-replicas", "service-name-too-long"],
)
def test_the_controller_rules_refuse_what_admission_lets_through(
    path: tuple[str, ...], value: Any, message: str
) -> None:
    isvc = canary_isvc()
    set_path(isvc, path, value)
    assert rules.webhook_problems(isvc) == []
    assert any(message in p for p in rules.controller_problems(isvc)), rules.controller_problems(isvc)


@pytest.mark.parametrize(
    "stable_min,percent,canary_min,replicas",
    [(1, 10, None, 1), (4, 10, None, 1), (4, 25, None, 1), (4, 50, None, 2), (4, 0, None, 0), (4, 0, 1, 1)],
)
def test_canary_replicas_follow_kserve(stable_min: int, percent: int, canary_min: int | None, replicas: int) -> None:
    # The figures of KServe's canary controller tests: 25% of 4 -> 1, 50% of 4 -> 2.
    isvc = canary_isvc()
    set_path(isvc, ("spec", "predictor", "minReplicas"), stable_min)
    set_path(isvc, ("spec", "canary", 0, "trafficPercent"), percent)
    if canary_min is not None:
        set_path(isvc, ("spec", "canary", 0, "predictor", "minReplicas"), canary_min)
    assert rules.canary_replicas(isvc, isvc["spec"]["canary"][0]) == replicas


@pytest.mark.parametrize(
    "value,normalized",
    [
        ("Standard", "Standard"),
        ("RawDeployment", "Standard"),
        ("Knative", "Knative"),
        ("Serverless", "Knative"),
        (None, None),
    ],
)
def test_mode_names_normalize_as_kserve_does(value: str | None, normalized: str | None) -> None:
    assert rules.normalized_mode(value) == normalized
