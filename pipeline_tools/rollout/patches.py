"""A canary rollout step on a KServe InferenceService, as pure functions on its dict, in either deployment mode.

The InferenceService's `serving.kserve.io/deploymentMode` annotation picks the field (else the mode
KServe recorded in its status; a requested mode must agree with it):

- serverless (annotation Knative, or its deprecated name Serverless): `spec.predictor.canaryTrafficPercent`
  on the Knative revisions (KServe >= 0.16). KServe ignores that field in Standard mode (kserve#5335).
- standard (annotation Standard, or its deprecated name RawDeployment): `spec.canary[]`, KServe >= 0.20:
  one canary named after the model version (`v2` for .../models/diabetes/2), with its own Deployment
  and Service `<isvc>-<name>-predictor`. Promote renames the stable predictor to the canary's name with
  the canary's storageUri and removes spec.canary (KServe then keeps the canary's pods as the stable
  ones); rollback removes spec.canary. KServe v0.20.0 sizes the canary by trafficPercent but still
  routes the service's URL to the stable predictor only (docs/deploy.md).

Every step is one JSON merge patch (RFC 7386); a merge patch replaces a list whole, which is what
spec.canary needs. `checked_patch` applies the patch to the object just read and runs KServe v0.20.0's
admission rules on the result (pipeline_tools.rollout.canary_rules) before anything is sent.

The one place a step becomes a patch: the command line (pipeline_tools.rollout.cli) and every step of
`rollout auto` (pipeline_tools.rollout.targets) build theirs here, send them with
pipeline_tools.rollout.cluster and report the result as `rollout_status`. Only the standard library:
the deploy tests import it next to gRPC clients.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline_tools.rollout import canary_rules as rules
from pipeline_tools.rollout.steps import Action, Step

SERVERLESS = "serverless"
STANDARD = "standard"
MODES = {rules.KNATIVE: SERVERLESS, rules.STANDARD: STANDARD}
# The CRD requires a canary's model to name its format: this runtime's only one (the ServingRuntime's
# supportedModelFormats; tests/deploy checks they agree).
MODEL_FORMAT = {"name": "sklearn-pipeline", "version": "1"}
# A canary is named after the version directory its storageUri ends in: .../models/diabetes/2 -> v2.
VERSION_TAIL = re.compile(r"/(\d+)/?$")
# What the CRD allows as a predictor name (and the Deployment name it becomes part of).
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_LABEL_MAX = 63

Patch = dict[str, Any]


class RolloutError(Exception):
    """A rollout step refused before anything is sent; the message says why."""


@dataclass(frozen=True)
class Change:
    """One step on an InferenceService and the version it brings: the new model's storageUri (canary,
    and promote in Standard mode) and, in Standard mode, the canary's name. A Standard-mode canary or
    promote step without a storageUri continues from the canary already deployed."""

    step: Step
    storage_uri: str | None = None
    canary_name: str | None = None


def canary_name_problem(name: str) -> str | None:
    """Why `name` cannot name a canary, or None when it can."""
    if DNS_LABEL.match(name) and len(name) <= DNS_LABEL_MAX:
        return None
    return f"{name!r} is not a DNS-1035 label (a-z, 0-9, '-'; a letter first)"


def _percent(step: Step) -> int:
    if step.percent is None:
        raise ValueError(f"a canary step needs a percent: {step!r}")
    return step.percent


# ---------------------------------------------------------------- Serverless: canaryTrafficPercent


def canary_patch(percent: int, storage_uri: str | None = None) -> Patch:
    """Send `percent` of the traffic to the latest revision (a new one if storage_uri changes)."""
    if not 0 <= percent <= 100:
        raise ValueError(f"canary percent must be within 0..100, got {percent}")
    predictor: dict[str, Any] = {"canaryTrafficPercent": percent}
    if storage_uri:
        predictor["model"] = {"storageUri": storage_uri}
    return {"spec": {"predictor": predictor}}


def promote_patch() -> Patch:
    # null removes the field in a merge patch; without it the latest revision takes all traffic.
    return {"spec": {"predictor": {"canaryTrafficPercent": None}}}


def rollback_patch() -> Patch:
    # 0% for the latest revision: all traffic goes back to the last rolled-out revision.
    return {"spec": {"predictor": {"canaryTrafficPercent": 0}}}


# ---------------------------------------------------------------- Standard: spec.canary[]


def canary_name_for(storage_uri: str) -> str:
    match = VERSION_TAIL.search(storage_uri)
    if not match:
        raise RolloutError(
            f"cannot name the canary after {storage_uri!r}, which does not end in a version number: pass --canary-name"
        )
    return f"v{match.group(1)}"


def standard_canary_patch(percent: int, storage_uri: str, name: str) -> Patch:
    """spec.canary as one canary `name` serving storage_uri with `percent` of the traffic.

    Only what differs from the stable predictor: KServe lays the canary over a copy of it. The model's
    `name` (the container's, required here by the CRD) must stay kserve-container.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"canary percent must be within 0..100, got {percent}")
    model = {"name": rules.KSERVE_CONTAINER, "modelFormat": dict(MODEL_FORMAT), "storageUri": storage_uri}
    predictor: dict[str, Any] = {"name": name, "model": model}
    if percent == 0:
        # A dark launch still needs a pod to try: at 0% KServe would derive 0 replicas.
        predictor["minReplicas"] = 1
    return {"spec": {"canary": [{"trafficPercent": percent, "predictor": predictor}]}}


def standard_promote_patch(storage_uri: str, name: str) -> Patch:
    """The stable predictor takes the canary's name and model; spec.canary goes.

    KServe's own way (the Deployment `<isvc>-<name>-predictor` stays, its pods are not restarted, the
    old stable one is deleted). Only name and storageUri move: the canary's model.name would be refused
    on the stable predictor, and its replicas were derived for a canary.
    """
    return {"spec": {"predictor": {"name": name, "model": {"storageUri": storage_uri}}, "canary": None}}


def standard_rollback_patch() -> Patch:
    # Removing the canary, rather than setting it to 0%: KServe deletes its Deployment and Service and
    # gives the stable predictor its full minReplicas back; 0% would leave an idle Deployment behind.
    return {"spec": {"canary": None}}


# ---------------------------------------------------------------- choosing and checking the patch


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies application/merge-patch+json (a list is replaced whole)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def detect_mode(isvc: dict[str, Any]) -> str:
    """serverless or standard: the deploymentMode annotation, else the mode KServe recorded in status."""
    annotated = rules.annotated_mode(isvc)
    recorded = isvc.get("status", {}).get("deploymentMode")
    mode = MODES.get(rules.normalized_mode(annotated or recorded) or "")
    if mode is None:
        name = isvc.get("metadata", {}).get("name")
        raise RolloutError(
            f"{name}: no canary rollout for deploymentMode annotation {annotated!r} / status {recorded!r} "
            "(expected Knative/Serverless or Standard/RawDeployment)"
        )
    return mode


def current_canary(isvc: dict[str, Any], name: str | None) -> dict[str, Any]:
    """The canary predictor a Standard-mode step without a storageUri continues from."""
    canaries: list[dict[str, Any]] = [c.get("predictor", {}) for c in isvc.get("spec", {}).get("canary") or []]
    matching = [c for c in canaries if name in (None, c.get("name"))]
    if len(matching) != 1:
        present = [c.get("name") for c in canaries]
        raise RolloutError(
            f"{isvc['metadata']['name']} has canaries {present}: pass --storage-uri (and --canary-name) "
            "to say which model to roll out"
        )
    return matching[0]


def _serverless_patch(change: Change) -> Patch:
    action = change.step.action
    if action != Action.ROLLBACK and change.canary_name:
        raise RolloutError("--canary-name names a Standard-mode canary (spec.canary[])")
    if action == Action.CANARY:
        return canary_patch(_percent(change.step), change.storage_uri)
    if action == Action.PROMOTE and change.storage_uri:
        raise RolloutError("in Serverless mode promote takes no --storage-uri: the latest revision is promoted")
    return promote_patch() if action == Action.PROMOTE else rollback_patch()


def _standard_patch(change: Change, isvc: dict[str, Any] | None) -> Patch:
    if change.step.action == Action.ROLLBACK:
        return standard_rollback_patch()
    storage_uri, name = change.storage_uri, change.canary_name
    if name and (problem := canary_name_problem(name)):
        raise RolloutError(problem)
    if not storage_uri:
        if isvc is None:
            raise RolloutError("a Standard-mode step without a cluster needs --storage-uri")
        canary = current_canary(isvc, name)
        storage_uri, name = rules.storage_uri(canary), canary.get("name")
    name = name or canary_name_for(storage_uri)
    if change.step.action == Action.CANARY:
        return standard_canary_patch(_percent(change.step), storage_uri, name)
    return standard_promote_patch(storage_uri, name)


def build_patch(change: Change, mode: str, isvc: dict[str, Any] | None = None) -> Patch:
    """The merge patch for one step in one mode; `isvc` (the live object) fills in a Standard-mode
    canary or promote step given no storageUri, from the canary already deployed."""
    if mode == SERVERLESS:
        return _serverless_patch(change)
    return _standard_patch(change, isvc)


def checked_patch(
    change: Change, isvc: dict[str, Any], requested_mode: str | None, warn: Callable[[str], None]
) -> Patch:
    """The patch for the live object, refused here if KServe's admission would refuse its result.
    `warn` hears what KServe may refuse although the rules here cannot tell."""
    name = isvc.get("metadata", {}).get("name")
    mode = detect_mode(isvc)
    if requested_mode not in (None, mode):
        raise RolloutError(f"{name} runs in {mode} mode, not {requested_mode}")
    annotated = rules.annotated_mode(isvc)
    if annotated in rules.LEGACY_MODES:
        # KServe 0.20 rewrites it on the way in; 0.16 compares it with the recorded (current) name and
        # refuses the update (kserve#4798, kserve#5885).
        current = rules.LEGACY_MODES[annotated]
        warn(
            f"{name} is annotated {rules.DEPLOYMENT_MODE}: {annotated}, the deprecated name of {current}; "
            f"KServe 0.16 refuses updates of such services (kserve#4798): annotate it {current}"
        )
    patch = build_patch(change, mode, isvc)
    problems = rules.rollout_problems(isvc, merge_patch(isvc, patch))
    if problems:
        listed = "".join(f"\n  - {p}" for p in problems)
        raise RolloutError(f"KServe would refuse {json.dumps(patch)} on {name}:{listed}\nnothing was sent")
    return patch


def rollout_status(isvc: dict[str, Any]) -> dict[str, Any]:
    """The parts of an InferenceService that say where its predictor's traffic goes, in either mode."""
    metadata = isvc.get("metadata", {})
    spec = isvc.get("spec", {}).get("predictor", {})
    status = isvc.get("status", {})
    predictor = status.get("components", {}).get("predictor", {})
    ready = next(
        (c.get("status") for c in status.get("conditions", []) if c.get("type") == "Ready"),
        "Unknown",
    )
    return {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "ready": ready,
        "deploymentMode": status.get("deploymentMode"),
        "deploymentModeAnnotation": rules.annotated_mode(isvc),
        "url": status.get("url"),
        "predictorName": spec.get("name"),
        "storageUri": spec.get("model", {}).get("storageUri"),
        # Serverless: the split Knative reports between revisions.
        "canaryTrafficPercent": spec.get("canaryTrafficPercent"),
        "latestReadyRevision": predictor.get("latestReadyRevision"),
        "latestRolledoutRevision": predictor.get("latestRolledoutRevision"),
        "previousRolledoutRevision": predictor.get("previousRolledoutRevision"),
        "traffic": predictor.get("traffic", []),
        # Standard: each canary, the replicas KServe gives it, and what KServe reports about it.
        "canaries": [
            {
                "name": canary.get("predictor", {}).get("name"),
                "trafficPercent": canary.get("trafficPercent"),
                "storageUri": rules.storage_uri(canary.get("predictor", {})) or None,
                "replicas": rules.canary_replicas(isvc, canary),
            }
            for canary in isvc.get("spec", {}).get("canary") or []
        ],
        "canaryStatuses": status.get("canaryStatuses", []),
    }
