"""kserve/: every Serverless (Knative) overlay renders, validates strictly against the KServe v0.16.0
and v0.20.0 CRDs, and passes the checks the CRD schemas cannot make (traffic ranges, Splitter weights,
names, ports, paths, drain). The Standard-mode overlays have their own file, test_kserve_standard.py,
and reuse CHECKS from here."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from pipeline_tools.rollout.canary_rules import STANDARD, annotated_mode, normalized_mode
from tests.deploy.deploy_support import (
    CANARY_RELEASE,
    OLDEST_RELEASE,
    OVERLAYS,
    REPO,
    by_kind,
    env_map,
    instructions,
    model_dir_for,
    model_settings,
    parse_env,
    read_dockerfile,
    render,
    schema_errors,
    served_model_name,
)

Objects = list[dict[str, Any]]
IMAGE_ENV = parse_env(read_dockerfile()[-1])
SETTINGS = json.loads((REPO / "settings.json").read_text())
COMPONENTS = ("predictor", "transformer", "explainer")
# overlay -> (models/diabetes version, canaryTrafficPercent) of both diabetes services
ROLLOUT_STATES = {
    "base": ("1", None),
    "canary": ("2", 10),
    "promote": ("2", None),
    "rollback": ("2", 0),
    "ab-test": ("1", None),
}


# ---------------------------------------------------------------- checks the CRD schemas cannot make


def canary_problems(objects: Objects) -> list[str]:
    return [
        f"{name}: {component}.canaryTrafficPercent {percent} is not within 0..100"
        for name, isvc in by_kind(objects, "InferenceService").items()
        for component in COMPONENTS
        if (percent := isvc["spec"].get(component, {}).get("canaryTrafficPercent")) is not None
        and not 0 <= percent <= 100
    ]


def splitter_problems(objects: Objects) -> list[str]:
    services = by_kind(objects, "InferenceService")
    problems = []
    for graph_name, graph in by_kind(objects, "InferenceGraph").items():
        for node_name, node in graph["spec"]["nodes"].items():
            if node["routerType"] != "Splitter":
                continue
            weights = [step.get("weight") for step in node["steps"]]
            if None in weights or sum(weights) != 100 or min(weights) <= 0:
                problems.append(f"{graph_name}/{node_name}: Splitter weights {weights} must be > 0 and sum to 100")
            problems += [
                f"{graph_name}/{node_name}: step {step.get('name')} routes to {step.get('serviceName')!r}, "
                "which is not a REST (v2) InferenceService of this deployment"
                for step in node["steps"]
                if services.get(step.get("serviceName"), {})
                .get("spec", {})
                .get("predictor", {})
                .get("model", {})
                .get("protocolVersion")
                != "v2"
            ]
    return problems


def model_problems(objects: Objects) -> list[str]:
    runtimes = by_kind(objects, "ServingRuntime")
    problems = []
    for name, isvc in by_kind(objects, "InferenceService").items():
        model = isvc["spec"]["predictor"]["model"]
        model_dir = model_dir_for(model["storageUri"])
        if not (model_dir / "model-settings.json").is_file():
            problems.append(f"{name}: storageUri {model['storageUri']} names no model directory in models/")
            continue
        settings = model_settings(model_dir)
        if settings["name"] != served_model_name(isvc):
            problems.append(f"{name}: serves {served_model_name(isvc)!r} but the model is {settings['name']!r}")
        if settings["parameters"]["version"] != model_dir.name:
            problems.append(f"{name}: {model_dir} holds version {settings['parameters']['version']!r}")
        runtime = runtimes.get(model["runtime"])
        if runtime is None:
            problems.append(f"{name}: runtime {model['runtime']!r} is not deployed with it")
            continue
        formats = [{"name": f["name"], "version": f["version"]} for f in runtime["spec"]["supportedModelFormats"]]
        if model["modelFormat"] not in formats or model["protocolVersion"] not in runtime["spec"]["protocolVersions"]:
            problems.append(f"{name}: {model['runtime']} supports neither its modelFormat nor its protocol")
        implementation = env_map(runtime["spec"]["containers"][0]["env"])["MLSERVER_MODEL_IMPLEMENTATION"]
        if settings["implementation"] != implementation:
            problems.append(f"{name}: the runtime's default implementation is not {settings['implementation']}")
    return problems


def port_problems(objects: Objects) -> list[str]:
    """Ports agree with the image (MLServer's defaults; settings.json sets none) in every place."""
    problems = []
    for name, runtime in by_kind(objects, "ServingRuntime").items():
        (container,) = runtime["spec"]["containers"]
        env = env_map(container["env"])
        for key in (
            "MLSERVER_HTTP_PORT",
            "MLSERVER_GRPC_PORT",
            "MLSERVER_METRICS_PORT",
            "MLSERVER_MODELS_DIR",
        ):
            if env.get(key) != IMAGE_ENV[key]:
                problems.append(f"{name}: {key}={env.get(key)} but the image says {IMAGE_ENV[key]}")
        if "ports" in container:
            problems.append(f"{name}: ports belong to each InferenceService (Knative allows one)")
        annotations = runtime["spec"]["annotations"]
        scraped = {annotations[k] for k in ("prometheus.kserve.io/port", "prometheus.io/port")}
        paths = {annotations[k] for k in ("prometheus.kserve.io/path", "prometheus.io/path")}
        if scraped != {IMAGE_ENV["MLSERVER_METRICS_PORT"]} or paths != {SETTINGS["metrics_endpoint"]}:
            problems.append(f"{name}: Prometheus must scrape the metrics port and path, not {scraped} {paths}")
    for name, isvc in by_kind(objects, "InferenceService").items():
        model = isvc["spec"]["predictor"]["model"]
        expected = {
            # Knative's default port is 8080, MLServer's REST port; gRPC needs its own, named h2c.
            "v2": [],
            "grpc-v2": [{"name": "h2c", "containerPort": int(IMAGE_ENV["MLSERVER_GRPC_PORT"]), "protocol": "TCP"}],
        }.get(model["protocolVersion"])
        if model.get("ports", []) != expected:
            problems.append(f"{name}: ports {model.get('ports')} do not fit protocol {model['protocolVersion']}")
    return problems


DRAIN_KEYS = ("PIPELINE_DRAIN_DELAY_S", "PIPELINE_DRAIN_TIMEOUT_S", "PIPELINE_DRAIN_HARD_EXIT_S")
KUBERNETES_GRACE_S = 30  # a pod's terminationGracePeriodSeconds when unset


def drain_problems(objects: Objects) -> list[str]:
    """The graceful drain fits the pod's grace period: delay + timeout <= hard exit < grace period.

    In Knative mode the grace period is the predictor's `timeout` (Knative refuses any other); in
    Standard mode it is the pod's own terminationGracePeriodSeconds."""
    runtimes = by_kind(objects, "ServingRuntime")
    problems = []
    for name, isvc in by_kind(objects, "InferenceService").items():
        predictor = isvc["spec"]["predictor"]
        runtime = runtimes.get(predictor["model"]["runtime"])
        if runtime is None:
            continue  # model_problems reports it
        # KServe's merge order: the image's ENV, the ServingRuntime's env, the InferenceService's.
        env = {k: v for k, v in IMAGE_ENV.items() if k in DRAIN_KEYS}
        env.update(env_map(runtime["spec"]["containers"][0]["env"]))
        env.update(env_map(predictor["model"].get("env")))
        try:
            delay, timeout, hard_exit = (float(env[k]) for k in DRAIN_KEYS)
        except (KeyError, ValueError) as exc:
            problems.append(f"{name}: drain settings {DRAIN_KEYS} incomplete or not numbers: {exc}")
            continue
        if not (0 <= delay and 0 < timeout and delay + timeout <= hard_exit):
            problems.append(f"{name}: drain delay {delay} + timeout {timeout} exceed hard exit {hard_exit}")
        if normalized_mode(annotated_mode(isvc)) == STANDARD:
            grace = predictor.get("terminationGracePeriodSeconds", KUBERNETES_GRACE_S)
            source = f"terminationGracePeriodSeconds ({grace}s)"
        elif "terminationGracePeriodSeconds" in predictor:
            problems.append(f"{name}: Knative refuses terminationGracePeriodSeconds in Serverless mode")
            continue
        else:
            grace, source = (
                predictor["timeout"],
                f"the grace period Knative derives from timeout ({predictor['timeout']}s)",
            )
        if hard_exit >= grace:
            problems.append(
                f"{name}: the drain's hard exit ({hard_exit}s) is not below {source}: "
                "the pod would be SIGKILLed mid-drain"
            )
    return problems


Check = Callable[[Objects], list[str]]
CHECKS: list[Check] = [
    canary_problems,
    splitter_problems,
    model_problems,
    port_problems,
    drain_problems,
]


# ---------------------------------------------------------------- the rendered overlays


@pytest.mark.parametrize("release", [OLDEST_RELEASE, CANARY_RELEASE])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly_against_the_crds(overlay: str, release: str) -> None:
    objects = render(overlay)
    assert {o["kind"] for o in objects} >= {"ServingRuntime", "InferenceService"}
    assert [e for o in objects for e in schema_errors(o, release)] == []


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_overlay_passes_the_checks_beyond_the_schema(overlay: str, check: Callable[[Objects], list[str]]) -> None:
    assert check(render(overlay)) == []


@pytest.mark.parametrize("overlay", ROLLOUT_STATES)
def test_overlay_sets_its_rollout_state_on_rest_and_grpc(overlay: str) -> None:
    version, percent = ROLLOUT_STATES[overlay]
    services = by_kind(render(overlay), "InferenceService")
    for name in ("diabetes", "diabetes-grpc"):
        predictor = services[name]["spec"]["predictor"]
        assert model_dir_for(predictor["model"]["storageUri"]).name == version
        assert predictor.get("canaryTrafficPercent") == percent


def test_ab_test_splits_between_version_1_and_version_2() -> None:
    objects = render("ab-test")
    (graph,) = by_kind(objects, "InferenceGraph").values()
    steps = graph["spec"]["nodes"]["root"]["steps"]
    services = by_kind(objects, "InferenceService")
    versions = {
        s["serviceName"]: model_dir_for(services[s["serviceName"]]["spec"]["predictor"]["model"]["storageUri"]).name
        for s in steps
    }
    assert versions == {"diabetes": "1", "diabetes-ridge": "2"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_is_serverless_autoscaled_and_bounded(overlay: str) -> None:
    for name, isvc in by_kind(render(overlay), "InferenceService").items():
        # canaryTrafficPercent works in Serverless (Knative) mode only. The current name: KServe 0.16
        # refuses every update of a service still annotated with the deprecated "Serverless"
        # (kserve#4798).
        assert annotated_mode(isvc) == "Knative", name
        predictor = isvc["spec"]["predictor"]
        assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"], name
        assert predictor["scaleMetric"] == "concurrency"
        assert 0 < predictor["scaleTarget"] <= predictor["containerConcurrency"], name
        assert predictor["timeout"] > 0 and predictor["model"]["resources"]["limits"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_labelled_with_the_project(overlay: str) -> None:
    for obj in render(overlay):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "pipeline-runtime", obj["metadata"]["name"]


def test_runtime_container_is_non_root_probed_and_bounded() -> None:
    (runtime,) = by_kind(render("base"), "ServingRuntime").values()
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    repository, _, tag = container["image"].rpartition(":")
    assert repository and tag and tag != "latest" and "{" not in container["image"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["allowPrivilegeEscalation"] is False
    image_user = instructions(read_dockerfile()[-1], "USER")[-1]
    assert f"{security['runAsUser']}:{security['runAsGroup']}" == image_user
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]) == {"requests", "limits"}
    probes = {k: container[k]["exec"]["command"] for k in ("readinessProbe", "livenessProbe")}
    assert probes == {
        "readinessProbe": ["python", "/usr/local/bin/healthcheck.py", "ready"],
        "livenessProbe": ["python", "/usr/local/bin/healthcheck.py", "live"],
    }
    assert set(runtime["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    # KServe fills MLSERVER_MODEL_NAME/URI in only for its own kserve-mlserver runtime.
    env = env_map(container["env"])
    assert env["MLSERVER_MODEL_NAME"] == "{{.Name}}"
    assert env["MLSERVER_MODEL_URI"] == IMAGE_ENV["MLSERVER_MODELS_DIR"]


# ---------------------------------------------------------------- the validators reject what they should


def find(objects: Objects, ref: str) -> dict[str, Any]:
    """`Kind/name` in a rendered overlay."""
    kind, name = ref.split("/")
    return by_kind(objects, kind)[name]


def parent_and_key(obj: dict[str, Any], path: str | tuple[str, ...]) -> tuple[Any, Any]:
    """The container and the key a path ends in: `spec.containers.0.env`, or a tuple for dotted keys."""
    keys = path if isinstance(path, tuple) else path.split(".")
    *parents, last = [int(k) if k.isdigit() else k for k in keys]
    node: Any = obj
    for key in parents:
        node = node[key]
    return node, last


def with_value(overlay: str, ref: str, path: str | tuple[str, ...], value: Any) -> Objects:
    objects = render(overlay)
    parent, key = parent_and_key(find(objects, ref), path)
    parent[key] = value
    return objects


MISSPELLINGS = [  # (overlay, object, path to the field, misspelling)
    ("canary", "InferenceService/diabetes", "spec.predictor.canaryTrafficPercent", "canaryTraficPercent"),
    ("base", "InferenceService/diabetes", "spec.predictor.model.storageUri", "storageURI"),
    ("base", "InferenceService/diabetes-grpc", "spec.predictor.model.ports.0.containerPort", "port"),
    ("base", "InferenceService/diabetes", "metadata.annotations", "anotations"),
    ("base", "ServingRuntime/pipeline-runtime", "spec.containers.0.readinessProbe", "readinessprobe"),
    ("base", "ServingRuntime/pipeline-runtime", "spec.supportedModelFormats", "supportedModelFormat"),
    ("ab-test", "InferenceGraph/diabetes-ab", "spec.nodes.root.steps.0.weight", "wieght"),
]


@pytest.mark.parametrize("overlay,ref,path,bad", MISSPELLINGS, ids=[m[-1] for m in MISSPELLINGS])
def test_a_misspelled_field_is_rejected(overlay: str, ref: str, path: str, bad: str) -> None:
    obj = find(render(overlay), ref)
    parent, key = parent_and_key(obj, path)
    parent[bad] = parent.pop(key)
    errors = schema_errors(obj)
    assert any(repr(bad) in error for error in errors), errors


@pytest.mark.parametrize(
    "path,value",
    [
        ("spec.predictor.canaryTrafficPercent", "10"),  # a string, not an integer
        ("spec.predictor.scaleTarget", 2**31),  # beyond int32
        ("spec.predictor.scaleMetric", "latency"),  # not in the enum
        ("metadata.name", "Diabetes_v2"),  # not a DNS label
    ],
)
def test_a_wrong_value_is_rejected(path: str, value: Any) -> None:
    isvc = find(render("canary"), "InferenceService/diabetes")
    parent, key = parent_and_key(isvc, path)
    parent[key] = value
    assert schema_errors(isvc)


def test_an_unknown_kind_or_api_version_is_rejected() -> None:
    isvc = find(render("base"), "InferenceService/diabetes")
    assert schema_errors({**isvc, "apiVersion": "serving.kserve.io/v1alpha1"})
    assert schema_errors({**isvc, "kind": "Service"})


# id -> (the check that must catch it, overlay, object, path, wrong value)
MISTAKES: dict[str, tuple[Check, str, str, str | tuple[str, ...], object]] = {
    "canary-110": (
        canary_problems,
        "canary",
        "InferenceService/diabetes",
        "spec.predictor.canaryTrafficPercent",
        110,
    ),
    "weights-90": (
        splitter_problems,
        "ab-test",
        "InferenceGraph/diabetes-ab",
        "spec.nodes.root.steps.1.weight",
        40,
    ),
    "grpc-arm": (
        splitter_problems,
        "ab-test",
        "InferenceGraph/diabetes-ab",
        "spec.nodes.root.steps.1.serviceName",
        "diabetes-grpc",
    ),
    "missing-version": (
        model_problems,
        "base",
        "InferenceService/diabetes",
        "spec.predictor.model.storageUri",
        "gs://b/models/diabetes/9",
    ),
    "wrong-name": (
        model_problems,
        "base",
        "InferenceService/diabetes",
        "spec.predictor.model.env.0.value",
        "diabetis",
    ),
    "unknown-runtime": (
        model_problems,
        "base",
        "InferenceService/diabetes",
        "spec.predictor.model.runtime",
        "kserve-mlserver",
    ),
    "grpc-port": (
        port_problems,
        "base",
        "InferenceService/diabetes-grpc",
        "spec.predictor.model.ports.0.containerPort",
        9000,
    ),
    "scrape-rest-port": (
        port_problems,
        "base",
        "ServingRuntime/pipeline-runtime",
        ("spec", "annotations", "prometheus.io/port"),
        "8080",
    ),
    "drain-beyond-grace": (
        drain_problems,
        "canary",
        "InferenceService/diabetes-grpc",
        "spec.predictor.timeout",
        20,
    ),
    "grace-in-serverless": (
        drain_problems,
        "base",
        "InferenceService/diabetes",
        "spec.predictor.terminationGracePeriodSeconds",
        60,
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_check_catches_its_mistake(mistake: str) -> None:
    check, overlay, ref, path, value = MISTAKES[mistake]
    assert check(with_value(overlay, ref, path, value))
