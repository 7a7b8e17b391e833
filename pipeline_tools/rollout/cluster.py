"""The InferenceService on the cluster, through the kubernetes client: connect, read it, send a step's
checked patch (pipeline_tools.rollout.patches), and say in one line what went wrong talking to the cluster.

Each patch is a plain dict sent through the client's CustomObjectsApi (the kserve 0.16 SDK's create/patch
serialise its model objects in a way the current kubernetes client rejects), as
application/merge-patch+json with the API server's strict field validation. The kubernetes package is
imported only when a cluster is contacted: a dry run needs none.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline_tools.rollout.patches import Change, Patch, checked_patch

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
MERGE_PATCH = "application/merge-patch+json"
# Inside a pod: the namespace of the pod's service account.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


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
    except config.ConfigException as no_kubeconfig:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            # The in-cluster loader's own words ("Service host/port is not set") say nothing to a user.
            where = kubeconfig or "~/.kube/config"
            problem = f"no usable kubeconfig ({where}: {no_kubeconfig}) and not inside a pod"
            raise config.ConfigException(problem) from None
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


def apply_change(
    api: Any, namespace: str, name: str, change: Change, mode: str | None, warn: Callable[[str], None]
) -> dict[str, Any]:
    """Read the service, check the step's patch on it (isvc.checked_patch: RolloutError when refused,
    nothing sent) and send it; the service as the API server returns it."""
    isvc = get_isvc(api, namespace, name)
    return patch_isvc(api, namespace, name, checked_patch(change, isvc, mode, warn))


def no_configuration(error: Exception) -> bool:
    """Whether the error is that there is no cluster to talk to (no kubeconfig, not in a pod)."""
    from kubernetes.config import ConfigException

    return isinstance(error, ConfigException)


def failure(error: Exception) -> str | None:
    """One line for an error of the API server, the cluster configuration or the connection; None for
    any other error."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from urllib3.exceptions import HTTPError

    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}: {error.body}"
    if isinstance(error, ConfigException):
        return f"no cluster configuration: {error}"
    if isinstance(error, HTTPError):
        return f"cannot reach the API server: {error}"
    return None
