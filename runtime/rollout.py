"""Canary rollout of a KServe InferenceService from the command line.

    python -m runtime.rollout [-n NAMESPACE] [--name NAME] status
    python -m runtime.rollout [-n NAMESPACE] [--name NAME] canary PERCENT [--storage-uri URI] [--dry-run]
    python -m runtime.rollout [-n NAMESPACE] [--name NAME] promote [--dry-run]
    python -m runtime.rollout [-n NAMESPACE] [--name NAME] rollback [--dry-run]

Every change is one JSON merge patch (RFC 7386) of `spec.predictor`, sent as a plain dict through the
kubernetes client's CustomObjectsApi: the kserve 0.16 SDK's create/patch serialise its model objects in
a way the current kubernetes client rejects. `--dry-run` prints that exact patch and contacts nothing,
so it can also feed `kubectl patch isvc NAME --type merge -p "$(python -m runtime.rollout ... --dry-run)"`.

KServe v0.16 honours canaryTrafficPercent in Serverless (Knative) mode only; `status` shows the traffic
split Knative reports in status.components.predictor.traffic.

This module must not import mlserver (the deploy tests import it next to gRPC clients).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
MERGE_PATCH = "application/merge-patch+json"
DEFAULT_NAME = "diabetes"
# Inside a pod: the namespace of the pod's service account.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

Patch = dict[str, Any]


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


def rollout_status(isvc: dict[str, Any]) -> dict[str, Any]:
    """The parts of an InferenceService that say where its predictor's traffic goes."""
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
        "url": status.get("url"),
        "storageUri": spec.get("model", {}).get("storageUri"),
        "canaryTrafficPercent": spec.get("canaryTrafficPercent"),
        "latestReadyRevision": predictor.get("latestReadyRevision"),
        "latestRolledoutRevision": predictor.get("latestRolledoutRevision"),
        "previousRolledoutRevision": predictor.get("previousRolledoutRevision"),
        "traffic": predictor.get("traffic", []),
    }


def percent(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is not within 0..100")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runtime.rollout", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    parser.add_argument(
        "--name", default=DEFAULT_NAME, help=f"InferenceService name (default {DEFAULT_NAME})"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="print the predictor's revisions and traffic split as JSON")
    canary = commands.add_parser("canary", help="send PERCENT of the traffic to the latest revision")
    canary.add_argument("percent", type=percent, metavar="PERCENT")
    canary.add_argument("--storage-uri", help="also move the predictor to this model (a new revision)")
    commands.add_parser("promote", help="remove canaryTrafficPercent: the latest revision takes 100%%")
    commands.add_parser("rollback", help="canaryTrafficPercent 0: the last rolled-out revision takes 100%%")
    for name in ("canary", "promote", "rollback"):
        commands.choices[name].add_argument(
            "--dry-run", action="store_true", help="print the merge patch and send nothing"
        )
    return parser.parse_args(argv)


def build_patch(args: argparse.Namespace) -> Patch:
    if args.command == "canary":
        return canary_patch(args.percent, args.storage_uri)
    if args.command == "promote":
        return promote_patch()
    return rollback_patch()


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


def run(args: argparse.Namespace) -> int:
    api, namespace = connect(args.namespace)
    if args.command == "status":
        isvc = get_isvc(api, namespace, args.name)
    else:
        isvc = patch_isvc(api, namespace, args.name, build_patch(args))
        if isvc.get("status", {}).get("deploymentMode") == "RawDeployment":
            print(
                f"rollout: warning: {args.name} runs in RawDeployment mode, where KServe ignores "
                "canaryTrafficPercent; canary rollouts need Serverless (Knative) mode",
                file=sys.stderr,
            )
    print(json.dumps(rollout_status(isvc), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if getattr(args, "dry_run", False):
        target = f"{PLURAL}.{GROUP}/{args.name} in namespace {args.namespace or '(kubeconfig default)'}"
        print(f"rollout: dry run, merge patch for {target}:", file=sys.stderr)
        print(json.dumps(build_patch(args)))
        return 0
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


if __name__ == "__main__":
    sys.exit(main())
