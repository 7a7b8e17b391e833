"""What tests/deploy needs in place of Docker and a cluster: Dockerfile and .dockerignore parsing,
kustomize rendering, strict validation against the KServe CRDs of each release in kserve/crds/, and
the repository's models.

Nothing here imports mlserver or runtime.model: these tests also run gRPC clients in-process.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipeline_tools.rollout.overlays import STANDARD_CANARY
from pipeline_tools.rollout.steps import CANARY_PERCENTS

REPO = Path(__file__).resolve().parents[2]
KSERVE = REPO / "kserve"
CRD_ROOT = KSERVE / "crds"
# The oldest KServe release the Serverless overlays target, and the first with spec.canary[], which the
# Standard-mode overlays need. kserve/crds/<release>/ holds each one's CRDs.
OLDEST_RELEASE = "v0.16.0"
CANARY_RELEASE = "v0.20.0"
CRD_DIR = CRD_ROOT / OLDEST_RELEASE
# Serverless (Knative) mode: canaryTrafficPercent.
OVERLAYS = {
    "base": KSERVE / "base",
    "canary": KSERVE / "overlays" / "canary",
    "promote": KSERVE / "overlays" / "promote",
    "rollback": KSERVE / "overlays" / "rollback",
    "ab-test": KSERVE / "overlays" / "ab-test",
}
# Standard mode: spec.canary[], in rollout order; one canary overlay per step of pipeline_tools.rollout.steps.
CANARY_OVERLAYS = [STANDARD_CANARY.format(percent=p) for p in CANARY_PERCENTS]
FIRST_CANARY, LAST_CANARY = CANARY_OVERLAYS[0], CANARY_OVERLAYS[-1]
STANDARD_OVERLAYS = {
    overlay: KSERVE / overlay
    for overlay in ("standard/base", "standard/dark-launch", *CANARY_OVERLAYS, "standard/promote", "standard/rollback")
}
ALL_OVERLAYS = {**OVERLAYS, **STANDARD_OVERLAYS}
CRD_FILES = {
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
    "InferenceGraph": "serving.kserve.io_inferencegraphs.yaml",
}
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# The API server's ObjectMeta, reduced to the fields these manifests may use. KServe names become
# DNS labels of Knative services, hence the DNS-1035 label rule.
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


# ---------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage (global ARGs before the first FROM form stage 0)."""
    stages: list[list[Instruction]] = [[]]
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        logical += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if stripped.endswith("\\"):
            continue
        keyword, _, args = logical.partition(" ")
        logical = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), " ".join(args.split())))
    return stages


def instructions(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def parse_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instructions(stage, "ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


@dataclass(frozen=True)
class Copy:
    flags: dict[str, str]
    sources: list[str]
    dest: str


def parse_copies(stage: list[Instruction]) -> list[Copy]:
    copies = []
    for args in instructions(stage, "COPY"):
        words = shlex.split(args)
        flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
        paths = [w for w in words if not w.startswith("--")]
        copies.append(Copy(flags, paths[:-1], paths[-1]))
    return copies


# ---------------------------------------------------------------- .dockerignore


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(re-include?, regex) per pattern, in file order (the last matching rule wins)."""
    rules = []
    for line in text.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        rules.append((negate, re.compile(regex + "$")))
    return rules


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: a pattern that matches the path or any of its parent directories applies."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, regex in rules:
        if any(regex.match(p) for p in prefixes):
            ignored = not negate
    return ignored


def context_files(source: str, rules: list[tuple[bool, re.Pattern[str]]]) -> list[str]:
    """The files under one COPY source that the build context holds (paths relative to REPO)."""
    root = REPO / source
    candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    relative = (p.relative_to(REPO).as_posix() for p in candidates)
    return [p for p in relative if not is_ignored(p, rules)]


def read_dockerfile() -> list[list[Instruction]]:
    return dockerfile_stages((REPO / "Dockerfile").read_text())


def read_dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    return dockerignore_rules((REPO / ".dockerignore").read_text())


# ---------------------------------------------------------------- kustomize and KServe CRDs


# Set to 1 to skip, visibly, the tests that need kubectl; without it a missing kubectl fails them.
NO_KUBECTL_ENV = "PIPELINE_TESTS_WITHOUT_KUBECTL"
INSTALL_HINT = "run `make test-deploy` or `sh deploy/ensure-kubectl.sh .venv` (installs the pinned kubectl)"


@cache
def find_kubectl() -> tuple[str | None, str]:
    """(path, "") of a usable kubectl, else (None, why not).

    The venv's kubectl comes first: deploy/ensure-kubectl.sh puts the pinned one there.
    """
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    path = str(venv_kubectl) if venv_kubectl.is_file() else shutil.which("kubectl")
    if path is None:
        return None, f"kubectl is not installed: {INSTALL_HINT}"
    out = subprocess.run([path, "version", "--client"], capture_output=True, text=True, timeout=60)
    # kubectl before 1.27 embeds a kustomize older than the v5 the overlays are written for.
    match = re.search(r"^Kustomize Version: v(\d+)\.", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not match or int(match.group(1)) < 5:
        shown = out.stdout.strip() or out.stderr.strip()
        return None, f"{path} has no kustomize v5 ({shown}): {INSTALL_HINT}"
    return path, ""


def kubectl() -> str:
    """The kubectl to run; fails the calling test when there is none (skips only if opted out)."""
    path, why = find_kubectl()
    if path is None:
        if os.environ.get(NO_KUBECTL_ENV) == "1":
            pytest.skip(f"{NO_KUBECTL_ENV}=1: {why}")
        pytest.fail(f"{why}; or set {NO_KUBECTL_ENV}=1 to skip the tests that need it", pytrace=False)
    return path


@cache
def render_json(overlay: str) -> str:
    """`kubectl kustomize` output as JSON text (cached: every test gets its own parsed copy)."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(ALL_OVERLAYS[overlay])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{out.stderr}")
    return json.dumps([d for d in yaml.safe_load_all(out.stdout) if d])


def render(overlay: str) -> list[dict[str, Any]]:
    return json.loads(render_json(overlay))


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def strict(schema: Any) -> Any:
    """Make an OpenAPI schema reject what the API server would prune or refuse.

    The CRDs never set additionalProperties: false, so plain validation accepts misspelled fields;
    the API server drops them (or refuses them under strict field validation). Integer formats add
    their ranges, which the API server enforces and jsonschema ignores.
    """
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items() if key != "properties"}
    if "properties" in schema:
        out["properties"] = {name: strict(s) for name, s in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    if schema.get("format") in INT_RANGES:
        # Only where the CRD sets no bound of its own (trafficPercent's 0..100 must survive).
        lowest, highest = INT_RANGES[schema["format"]]
        out.setdefault("minimum", lowest)
        out.setdefault("maximum", highest)
    return out


@cache
def crd_validator(kind: str, release: str = OLDEST_RELEASE) -> tuple[str, jsonschema.protocols.Validator]:
    """(apiVersion served by the release's CRD, strict validator) for one KServe kind."""
    path = CRD_ROOT / release / CRD_FILES[kind]
    if not path.is_file():
        raise AssertionError(f"KServe CRD {path} is missing: kserve/crds/ holds the copies the tests use")
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("served")]
    schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = OBJECT_META
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return f"{crd['spec']['group']}/{version['name']}", jsonschema.Draft7Validator(schema)


def schema_errors(obj: dict[str, Any], release: str = OLDEST_RELEASE) -> list[str]:
    if obj.get("kind") not in CRD_FILES:
        return [f"{obj.get('kind')!r} is not a KServe kind these manifests should contain"]
    api_version, validator = crd_validator(obj["kind"], release)
    errors = []
    if obj.get("apiVersion") != api_version:
        errors.append(f"apiVersion {obj.get('apiVersion')!r} is not the served {api_version!r}")
    for error in validator.iter_errors(obj):
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        errors.append(f"{obj['kind']}/{obj['metadata'].get('name')}: {where}: {error.message}")
    return errors


def git_blob_sha1(data: bytes) -> str:
    """What `git hash-object` prints for a file with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ---------------------------------------------------------------- the repository's models and settings


STORAGE_PATH = re.compile(r"^(gs|s3|pvc|hdfs|webhdfs|https?)://.+/(models/[^/]+/[^/]+)/?$")


def model_dir_for(storage_uri: str) -> Path:
    """The models/<name>/<version> directory of this repository that a storageUri's tail names."""
    match = STORAGE_PATH.match(storage_uri)
    if not match:
        raise AssertionError(f"storageUri {storage_uri!r} does not end in models/<name>/<version>")
    return REPO / match.group(2)


def model_settings(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "model-settings.json").read_text())


def env_map(env: list[dict[str, Any]] | None) -> dict[str, str]:
    return {e["name"]: e["value"] for e in env or []}


def served_model_name(isvc: dict[str, Any]) -> str:
    """The model name KServe routes to: MLSERVER_MODEL_NAME in the predictor env, else the ISVC name."""
    env = env_map(isvc["spec"]["predictor"]["model"].get("env"))
    return env.get("MLSERVER_MODEL_NAME", isvc["metadata"]["name"])


# ---------------------------------------------------------------- the operator tools from the outside


def run_tool(module: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGV` in a fresh interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def run_rollout(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline_tools.rollout ARGV` (pipeline_tools.rollout.cli)."""
    return run_tool("pipeline_tools.rollout", *argv, env=env)


def kubectl_merge_patch(obj: dict[str, Any], patch: str, workdir: Path) -> dict[str, Any]:
    """What `kubectl patch --local --type merge` makes of `obj` (the API server's merge-patch code)."""
    source = workdir / "object.json"
    source.write_text(json.dumps(obj))
    out = subprocess.run(
        [kubectl(), "patch", "--local", "-f", str(source), "--type", "merge", "-p", patch, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def effective_canary_predictor(stable: dict[str, Any], canary: dict[str, Any]) -> dict[str, Any]:
    """The predictor KServe v0.20.0 deploys for a canary: the canary laid over a copy of the stable one
    (mergo.Merge WithOverride in buildCanaryPredictor: maps merge, set values win, lists are replaced).
    KServe then drops the autoscaling fields and fixes minReplicas, which the model checks ignore."""
    merged = copy.deepcopy(stable)
    for key, value in canary.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = effective_canary_predictor(merged[key], value)
        elif value is not None:
            merged[key] = copy.deepcopy(value)
    return merged
