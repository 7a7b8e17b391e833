"""KServe v0.20.0's admission rules for an InferenceService's canaries, as pure functions on dicts.

Read from kserve/kserve at tag v0.20.0 (commit 1fb781055dd1567164358233e1125142ca6ef1fe):

- pkg/apis/serving/v1beta1/inference_service_validation.go, the validating webhook:
  validateCanarySpecs and validatePredictor (create and update: `webhook_problems`),
  validateDeploymentMode and validatePredictorNameChange (update only: `update_problems`);
- pkg/apis/serving/v1beta1/inference_service_defaults.go, the mutating webhook, which runs first and
  rewrites the deprecated deploymentMode values (RawDeployment -> Standard, Serverless -> Knative);
- pkg/controller/v1beta1/inferenceservice/components/predictor.go, what the controller then does with
  a canary that admission lets through but that cannot work (`controller_problems`).

Messages keep the webhook's wording, so a refusal here reads like the API server's. The webhook stops
at its first error; these functions report every problem. Only the standard library: pipeline_tools.rollout.patches
runs them on the object its patch would produce before sending anything, and tests/deploy imports
them next to in-process gRPC clients (never mlserver).
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
STANDARD = "Standard"
KNATIVE = "Knative"
# The deprecated names, as the mutating webhook rewrites them before validation.
LEGACY_MODES = {"RawDeployment": STANDARD, "Serverless": KNATIVE}
# The container KServe merges the ServingRuntime's container into, and mounts the model into.
KSERVE_CONTAINER = "kserve-container"
# PredictorSpec.GetImplementations: the framework specs and `model`; `containers` count as one more.
IMPLEMENTATIONS = (
    "xgboost",
    "pytorch",
    "triton",
    "sklearn",
    "tensorflow",
    "onnx",
    "pmml",
    "lightgbm",
    "paddle",
    "huggingface",
    "model",
)
# A canary runs fixed replicas: the webhook refuses any of these on it (maxReplicas only when > 0).
AUTOSCALING_FIELDS = ("scaleTarget", "scaleMetric", "autoScaling")
DEFAULT_MIN_REPLICAS = 1  # the stable predictor's minReplicas when unset (constants.DefaultMinReplicas)


def normalized_mode(value: str | None) -> str | None:
    """A deploymentMode value as KServe v0.20 reads it (deprecated names mapped to the current ones)."""
    return LEGACY_MODES.get(value, value) if value else None


def annotated_mode(isvc: Obj) -> str | None:
    """The deploymentMode annotation, verbatim (None when absent)."""
    return (isvc.get("metadata", {}).get("annotations") or {}).get(DEPLOYMENT_MODE)


def implementations(predictor: Obj) -> list[str]:
    found = [key for key in IMPLEMENTATIONS if predictor.get(key) is not None]
    return found + (["containers"] if predictor.get("containers") else [])


def storage_uri(predictor: Obj) -> str:
    """getPredictorStorageURI: the model's storageUri, else the first implementation's ("" if none)."""
    for key in implementations(predictor):
        uri = predictor[key].get("storageUri") if key != "containers" else None
        if uri:
            return str(uri)
    return ""


def _stable_problems(stable: Obj) -> list[str]:
    # validatePredictor: the stable predictor's model container keeps KServe's own name. This matters
    # when promoting: a canary's model carries `name` (the CRD requires it there), the stable one must not.
    return [
        "the 'name' field is not allowed in standard predictor"
        for key in IMPLEMENTATIONS
        if (predictor := stable.get(key)) and predictor.get("name")
    ]


def _one_canary_problems(index: int, canary: Obj, stable: Obj) -> list[str]:
    """validateCanarySpecs for one entry, except the checks across entries."""
    predictor = canary.get("predictor") or {}
    name = predictor.get("name") or ""
    if not name:
        return [f"canary[{index}] predictor.name is required"]
    problems = []
    if name == stable.get("name"):
        problems.append(f"canary predictor.name {name!r} conflicts with stable predictor name")
    percent = canary.get("trafficPercent", 0)
    if not 0 <= percent <= 100:
        problems.append(f"canary {name!r} trafficPercent must be between 0 and 100, got {percent}")
    if len(implementations(predictor)) != 1:
        problems.append(
            f"canary {name!r} predictor: exactly one of [{', '.join(IMPLEMENTATIONS)}, containers] "
            f"must be specified in PredictorSpec, found {implementations(predictor) or 'none'}"
        )
    if predictor.get("workerSpec") is not None:
        problems.append(f"canary {name!r} must not set workerSpec (multi-node is not yet supported for canary)")
    if (predictor.get("maxReplicas") or 0) > 0:
        problems.append(f"canary {name!r} must not set maxReplicas (canary uses fixed replicas)")
    problems += [
        f"canary {name!r} must not set {field} (canary uses fixed replicas)"
        for field in AUTOSCALING_FIELDS
        if predictor.get(field) is not None
    ]
    stable_min = stable.get("minReplicas", DEFAULT_MIN_REPLICAS)
    if (minimum := predictor.get("minReplicas")) is not None and minimum > stable_min:
        problems.append(
            f"canary {name!r} minReplicas ({minimum}) must not exceed stable predictor minReplicas ({stable_min})"
        )
    return problems


def canary_problems(isvc: Obj) -> list[str]:
    """validateCanarySpecs: what the webhook refuses in spec.canary[]."""
    canaries = isvc.get("spec", {}).get("canary") or []
    if not canaries:
        return []
    stable = isvc["spec"].get("predictor") or {}
    problems = []
    if normalized_mode(annotated_mode(isvc)) != STANDARD:
        # Without the annotation the mutating webhook adds the cluster's default mode, so a missing one
        # passes only on clusters whose default is Standard: spell it out instead.
        problems.append(
            f"canary is only supported in Standard deployment mode "
            f"(annotation {DEPLOYMENT_MODE} is {annotated_mode(isvc)!r})"
        )
    if stable.get("model") is None and not storage_uri(stable):
        problems.append(
            "canary requires a stable predictor with a model (multi-model serving is not supported with canary)"
        )
    names = [(c.get("predictor") or {}).get("name") for c in canaries]
    problems += [
        f"canary predictor.name {name!r} is duplicated" for i, name in enumerate(names) if name and name in names[:i]
    ]
    for index, canary in enumerate(canaries):
        problems += _one_canary_problems(index, canary, stable)
    total = sum(c.get("trafficPercent", 0) for c in canaries)
    if total > 100:
        problems.append(f"sum of canary trafficPercent values ({total}) must be <= 100")
    return problems


def webhook_problems(isvc: Obj) -> list[str]:
    """What KServe v0.20.0's validating webhook refuses about predictors and canaries, on create or update."""
    return _stable_problems(isvc.get("spec", {}).get("predictor") or {}) + canary_problems(isvc)


def update_problems(old: Obj, new: Obj) -> list[str]:
    """What the webhook refuses when `old` becomes `new` (ValidateUpdate's extra checks)."""
    problems = []
    # validateDeploymentMode. v0.20.0 parses the old status through ParseDeploymentMode, which maps ""
    # to the default, Standard: an update before the controller has recorded a mode is compared with it.
    recorded = normalized_mode(old.get("status", {}).get("deploymentMode")) or STANDARD
    requested = normalized_mode(annotated_mode(new))
    if requested and requested != recorded:
        problems.append(f"update rejected: deploymentMode cannot be changed from '{recorded}' to '{requested}'")
    # validatePredictorNameChange: a renamed stable predictor must move to another model (promotion).
    old_predictor = old.get("spec", {}).get("predictor") or {}
    new_predictor = new.get("spec", {}).get("predictor") or {}
    renamed = (old_predictor.get("name") or "") != (new_predictor.get("name") or "")
    if renamed and storage_uri(old_predictor) == storage_uri(new_predictor):
        problems.append("predictor.name change requires a model change (e.g. storageUri)")
    return problems


def canary_replicas(isvc: Obj, canary: Obj) -> int:
    """canaryReplicaCount: the canary's minReplicas, else ceil(stable minReplicas x trafficPercent / 100)."""
    minimum = (canary.get("predictor") or {}).get("minReplicas")
    if minimum is not None:
        return int(minimum)
    stable_min = int(isvc["spec"].get("predictor", {}).get("minReplicas", DEFAULT_MIN_REPLICAS))
    return -(-stable_min * int(canary.get("trafficPercent", 0)) // 100)


def controller_problems(isvc: Obj) -> list[str]:
    """Canaries admission accepts but KServe v0.20.0's controller cannot run as meant."""
    problems = []
    for canary in isvc.get("spec", {}).get("canary") or []:
        predictor = canary.get("predictor") or {}
        name = predictor.get("name")
        # The canary's Deployment and Service: a Service name is a DNS-1035 label, 63 characters at most.
        service = f"{isvc.get('metadata', {}).get('name')}-{name}-predictor"
        if len(service) > 63:
            problems.append(f"canary {name!r}: its Service name {service!r} is longer than 63 characters")
        # The canary's model container is merged over the ServingRuntime's kserve-container and a
        # non-empty name wins, so any other name leaves no kserve-container for the storage initializer.
        container = (predictor.get("model") or {}).get("name")
        if predictor.get("model") is not None and container != KSERVE_CONTAINER:
            problems.append(
                f"canary {name!r}: model.name is {container!r}; it names the container and must be "
                f"{KSERVE_CONTAINER!r}, which KServe mounts the model into"
            )
        if canary_replicas(isvc, canary) == 0:
            problems.append(
                f"canary {name!r} runs no pods: at trafficPercent {canary.get('trafficPercent', 0)} "
                "without minReplicas KServe derives ceil(stable minReplicas x percent / 100) = 0 replicas"
            )
    return problems


def rollout_problems(old: Obj, new: Obj) -> list[str]:
    """Everything above for an update from `old` to `new`: what pipeline_tools.rollout.patches checks
    before a patch is sent."""
    return webhook_problems(new) + update_problems(old, new) + controller_problems(new)
