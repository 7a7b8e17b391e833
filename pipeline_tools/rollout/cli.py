"""Canary rollout of a KServe InferenceService from the command line, in either deployment mode.

    python -m pipeline_tools.rollout [-n NAMESPACE] [--name NAME] status
    python -m pipeline_tools.rollout [-n NAMESPACE] [--name NAME] canary PERCENT [--storage-uri URI] [--canary-name N]
    python -m pipeline_tools.rollout [-n NAMESPACE] [--name NAME] promote [--storage-uri URI] [--canary-name N]
    python -m pipeline_tools.rollout [-n NAMESPACE] [--name NAME] rollback
    python -m pipeline_tools.rollout analyze ...   /   python -m pipeline_tools.rollout auto ...   (pipeline_tools.rollout.auto)
    (canary, promote and rollback also take --mode serverless|standard and --dry-run)

The InferenceService's `serving.kserve.io/deploymentMode` annotation picks the field (else the mode
KServe recorded in its status; `--mode` must agree with it):

- serverless (annotation Knative, or its deprecated name Serverless): `spec.predictor.canaryTrafficPercent`
  on the Knative revisions (KServe >= 0.16). KServe ignores that field in Standard mode (kserve#5335).
- standard (annotation Standard, or its deprecated name RawDeployment): `spec.canary[]`, KServe >= 0.20:
  one canary named after the model version (`v2` for .../models/diabetes/2), with its own Deployment
  and Service `<isvc>-<name>-predictor`. Promote renames the stable predictor to the canary's name with
  the canary's storageUri and removes spec.canary (KServe then keeps the canary's pods as the stable
  ones); rollback removes spec.canary. KServe v0.20.0 sizes the canary by trafficPercent but still
  routes the service's URL to the stable predictor only (docs/deploy.md).

Every change is one JSON merge patch (RFC 7386) sent as a plain dict through the kubernetes client's
CustomObjectsApi (the kserve 0.16 SDK's create/patch serialise its model objects in a way the current
kubernetes client rejects). A merge patch replaces a list whole, which is what spec.canary needs.
Before patching, the command applies the patch to the object it just read and runs KServe v0.20.0's
admission rules on the result (pipeline_tools.rollout.canary_rules); a patch they refuse is not sent.

`--dry-run` prints that exact patch and contacts nothing, so it needs `--mode` (there is no object to
read the annotation from) and, in Standard mode, the storageUri of the canary; its output can feed
`kubectl patch isvc NAME --type merge -p "$(python -m pipeline_tools.rollout ... --dry-run)"`.

This module must not import mlserver (the deploy tests import it next to gRPC clients).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from pipeline_tools.rollout import auto as rollout_auto
from pipeline_tools.rollout import canary_rules as rules

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
MERGE_PATCH = "application/merge-patch+json"
DEFAULT_NAME = "diabetes"
# Inside a pod: the namespace of the pod's service account.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

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

Patch = dict[str, Any]


class RolloutError(Exception):
    """A rollout step this command refuses; the message says why."""


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
    """The canary predictor a Standard-mode step without --storage-uri continues from."""
    canaries = [c.get("predictor", {}) for c in isvc.get("spec", {}).get("canary") or []]
    matching = [c for c in canaries if name in (None, c.get("name"))]
    if len(matching) != 1:
        present = [c.get("name") for c in canaries]
        raise RolloutError(
            f"{isvc['metadata']['name']} has canaries {present}: pass --storage-uri (and --canary-name) "
            "to say which model to roll out"
        )
    return matching[0]


def build_patch(args: argparse.Namespace, mode: str, isvc: dict[str, Any] | None = None) -> Patch:
    """The merge patch for one command in one mode; `isvc` (the live object) fills in a Standard-mode
    canary or promote step given no --storage-uri, from the canary already deployed."""
    if mode == SERVERLESS:
        if args.command != "rollback" and getattr(args, "canary_name", None):
            raise RolloutError("--canary-name names a Standard-mode canary (spec.canary[])")
        if args.command == "canary":
            return canary_patch(args.percent, args.storage_uri)
        if args.command == "promote" and args.storage_uri:
            raise RolloutError("in Serverless mode promote takes no --storage-uri: the latest revision is promoted")
        return promote_patch() if args.command == "promote" else rollback_patch()
    if args.command == "rollback":
        return standard_rollback_patch()
    storage_uri, name = args.storage_uri, args.canary_name
    if not storage_uri:
        if isvc is None:
            raise RolloutError("a Standard-mode step without a cluster needs --storage-uri")
        canary = current_canary(isvc, name)
        storage_uri, name = rules.storage_uri(canary), canary.get("name")
    name = name or canary_name_for(storage_uri)
    if args.command == "canary":
        return standard_canary_patch(args.percent, storage_uri, name)
    return standard_promote_patch(storage_uri, name)


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


# ---------------------------------------------------------------- the command line


def percent(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is not within 0..100")
    return value


def dns_label(text: str) -> str:
    if not DNS_LABEL.match(text) or len(text) > 63:
        raise argparse.ArgumentTypeError(f"{text!r} is not a DNS-1035 label (a-z, 0-9, '-'; a letter first)")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline_tools.rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"InferenceService name (default {DEFAULT_NAME})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="print the predictor's revisions or canaries as JSON")
    canary = commands.add_parser("canary", help="send PERCENT of the traffic to the new version")
    canary.add_argument("percent", type=percent, metavar="PERCENT")
    promote = commands.add_parser("promote", help="the new version takes 100%% of the traffic")
    commands.add_parser("rollback", help="all traffic back on the stable version")
    for command in (canary, promote):
        command.add_argument(
            "--storage-uri",
            help="the new version's model (serverless: a new revision; standard: the canary's model, "
            "default: the deployed canary's)",
        )
        command.add_argument("--canary-name", type=dns_label, help="standard: the canary's name (default: v<version>)")
    for name in ("canary", "promote", "rollback"):
        commands.choices[name].add_argument(
            "--mode", choices=(SERVERLESS, STANDARD), help="must match the service's deploymentMode"
        )
        commands.choices[name].add_argument(
            "--dry-run", action="store_true", help="print the merge patch and send nothing (needs --mode)"
        )
    rollout_auto.add_commands(commands)  # analyze, auto
    args = parser.parse_args(argv)
    if getattr(args, "dry_run", False) and args.mode is None:
        # Guessing would repeat kserve#5335: a Serverless patch on a Standard service is silently ignored.
        parser.error("--dry-run needs --mode serverless|standard: without a cluster there is no annotation to read")
    return args


def connect(namespace: str | None) -> tuple[Any, str]:
    """A CustomObjectsApi and the namespace to use (the kubeconfig context's unless given)."""
    from kubernetes import client, config

    # Our own configuration, and KUBECONFIG read now: the client keeps a process-wide default ApiClient
    # and reads KUBECONFIG once, at import.
    configuration = client.Configuration()
    kubeconfig = os.environ.get("KUBECONFIG")
    try:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)
        default_namespace = context.get("context", {}).get("namespace", "default")
    except config.ConfigException:
        config.load_incluster_config(client_configuration=configuration)
        default_namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return client.CustomObjectsApi(client.ApiClient(configuration)), namespace or default_namespace


def get_isvc(api: Any, namespace: str, name: str) -> dict[str, Any]:
    return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def patch_isvc(api: Any, namespace: str, name: str, patch: Patch) -> dict[str, Any]:
    # Strict field validation: the API server rejects a misspelled field instead of dropping it.
    return api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        patch,
        field_validation="Strict",
        _content_type=MERGE_PATCH,
    )


def checked_patch(args: argparse.Namespace, isvc: dict[str, Any]) -> Patch:
    """The patch for the live object, refused here if KServe's admission would refuse its result."""
    mode = detect_mode(isvc)
    if args.mode not in (None, mode):
        raise RolloutError(f"{args.name} runs in {mode} mode, not {args.mode}")
    annotated = rules.annotated_mode(isvc)
    if annotated in rules.LEGACY_MODES:
        # KServe 0.20 rewrites it on the way in; 0.16 compares it with the recorded (current) name and
        # refuses the update (kserve#4798, kserve#5885).
        print(
            f"rollout: warning: {args.name} is annotated {rules.DEPLOYMENT_MODE}: {annotated}, "
            f"the deprecated name of {rules.LEGACY_MODES[annotated]}; KServe 0.16 refuses updates of such services "
            f"(kserve#4798): annotate it {rules.LEGACY_MODES[annotated]}",
            file=sys.stderr,
        )
    patch = build_patch(args, mode, isvc)
    problems = rules.rollout_problems(isvc, merge_patch(isvc, patch))
    if problems:
        listed = "".join(f"\n  - {p}" for p in problems)
        raise RolloutError(f"KServe would refuse {json.dumps(patch)} on {args.name}:{listed}\nnothing was sent")
    return patch


def run(args: argparse.Namespace) -> int:
    api, namespace = connect(args.namespace)
    isvc = get_isvc(api, namespace, args.name)
    if args.command != "status":
        isvc = patch_isvc(api, namespace, args.name, checked_patch(args, isvc))
    print(json.dumps(rollout_status(isvc), indent=2))
    return 0


def dry_run(args: argparse.Namespace) -> int:
    patch = build_patch(args, args.mode)
    target = f"{PLURAL}.{GROUP}/{args.name} in namespace {args.namespace or '(kubeconfig default)'}"
    print(
        f"rollout: dry run, {args.mode} mode, merge patch for {target} (not checked against it):",
        file=sys.stderr,
    )
    print(json.dumps(patch))
    return 0


def live(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from urllib3.exceptions import HTTPError

    try:
        return run(args)
    except ApiException as error:
        print(f"rollout: {error.status} {error.reason}: {error.body}", file=sys.stderr)
    except ConfigException as error:
        print(f"rollout: no cluster configuration: {error}", file=sys.stderr)
    except HTTPError as error:
        print(f"rollout: cannot reach the API server: {error}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if hasattr(args, "handler"):  # analyze, auto (pipeline_tools.rollout.auto)
        return args.handler(args)
    try:
        if getattr(args, "dry_run", False):
            return dry_run(args)
        return live(args)
    except RolloutError as error:
        print(f"rollout: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
