"""pipeline_tools.rollout.cli in Standard mode (spec.canary[], KServe >= 0.20): exact --dry-run patches, the same
steps as the kserve/standard overlays (through `kubectl patch --local`), and against a fake Kubernetes
API server: the mode read from the service, the deployed canary continued, and a patch KServe's
admission rules refuse never sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline_tools.rollout import canary_rules as rules
from pipeline_tools.rollout import cli as rollout
from pipeline_tools.rollout import patches
from pipeline_tools.rollout.steps import CANARY_PERCENTS
from tests.deploy.deploy_support import (
    CANARY_OVERLAYS,
    FIRST_CANARY,
    LAST_CANARY,
    by_kind,
    kubectl_merge_patch,
    render,
    run_rollout,
)
from tests.deploy.fake_api import FakeApiServer, serving

V2_URI = "gs://YOUR-BUCKET/pipeline-runtime/models/diabetes/2"
V3_URI = "gs://YOUR-BUCKET/pipeline-runtime/models/diabetes/3"
FORMAT = '"modelFormat": {"name": "sklearn-pipeline", "version": "1"}'


def canary_body(percent: int, uri: str, name: str, dark: bool = False) -> str:
    replicas = ', "minReplicas": 1' if dark else ""
    return (
        f'{{"spec": {{"canary": [{{"trafficPercent": {percent}, "predictor": {{"name": "{name}", '
        f'"model": {{"name": "kserve-container", {FORMAT}, "storageUri": "{uri}"}}{replicas}}}}}]}}}}'
    )


PATCHES = {  # id -> (argv, the exact --dry-run output)
    "dark-launch": (["canary", "0", "--storage-uri", V2_URI], canary_body(0, V2_URI, "v2", dark=True)),
    "canary-10": (["canary", "10", "--storage-uri", V2_URI], canary_body(10, V2_URI, "v2")),
    "canary-50-named": (
        ["canary", "50", "--storage-uri", V3_URI, "--canary-name", "ridge"],
        canary_body(50, V3_URI, "ridge"),
    ),
    "promote": (
        ["promote", "--storage-uri", V2_URI],
        '{"spec": {"predictor": {"name": "v2", "model": {"storageUri": "' + V2_URI + '"}}, "canary": null}}',
    ),
    "rollback": (["rollback"], '{"spec": {"canary": null}}'),
}


@pytest.mark.parametrize("case", PATCHES)
def test_each_command_builds_its_exact_merge_patch(case: str) -> None:
    argv, body = PATCHES[case]
    args = rollout.parse_args([*argv, "--mode", "standard", "--dry-run"])
    assert json.dumps(patches.build_patch(rollout.change_from(args), args.mode)) == body


@pytest.mark.parametrize("case", PATCHES)
def test_dry_run_prints_the_patch_and_contacts_nothing(case: str, tmp_path: Path) -> None:
    argv, body = PATCHES[case]
    out = run_rollout(*argv, "--mode", "standard", "--dry-run", env={"KUBECONFIG": str(tmp_path / "absent")})
    assert (out.returncode, out.stdout) == (0, body + "\n"), out.stderr
    assert "dry run, standard mode" in out.stderr


@pytest.mark.parametrize(
    "argv,code,refusal",
    [
        # A merge patch replaces spec.canary whole: without a cluster the command cannot look it up.
        (["canary", "25"], 1, "needs --storage-uri"),
        (["promote"], 1, "needs --storage-uri"),
        (["canary", "10", "--storage-uri", "gs://b/models/diabetes/latest"], 1, "pass --canary-name"),
        (["canary", "10", "--storage-uri", V2_URI, "--canary-name", "V2"], 2, "not a DNS-1035 label"),
    ],
    ids=["canary-without-uri", "promote-without-uri", "unversioned-uri", "bad-name"],
)
def test_a_dry_run_it_cannot_make_exactly_is_refused(argv: list[str], code: int, refusal: str) -> None:
    out = run_rollout(*argv, "--mode", "standard", "--dry-run")
    assert (out.returncode, out.stdout) == (code, "")
    assert refusal in out.stderr


BEFORE_EACH_CANARY = ["standard/dark-launch", *CANARY_OVERLAYS]
STEPS = [  # (overlay before, command, overlay after): each step of pipeline_tools.rollout.steps
    ("standard/base", PATCHES["dark-launch"][0], "standard/dark-launch"),
    *[
        (before, ["canary", str(percent), "--storage-uri", V2_URI], after)
        for before, after, percent in zip(BEFORE_EACH_CANARY, CANARY_OVERLAYS, CANARY_PERCENTS, strict=False)
    ],
    (LAST_CANARY, PATCHES["promote"][0], "standard/promote"),
    (LAST_CANARY, PATCHES["rollback"][0], "standard/rollback"),
]


@pytest.mark.parametrize("start,argv,end", STEPS, ids=[end for _, _, end in STEPS])
def test_dry_run_patch_turns_one_overlay_into_the_next(start: str, argv: list[str], end: str, tmp_path: Path) -> None:
    """The command and the overlays describe the same steps; the API server's merge (kubectl's code)
    and patches.merge_patch agree; and KServe's rules accept the step."""
    before = by_kind(render(start), "InferenceService")["diabetes"]
    patch = run_rollout(*argv, "--mode", "standard", "--dry-run").stdout
    patched = kubectl_merge_patch(before, patch, tmp_path)
    assert patched == by_kind(render(end), "InferenceService")["diabetes"]
    assert patches.merge_patch(before, json.loads(patch)) == patched
    assert rules.rollout_problems({**before, "status": {"deploymentMode": "Standard"}}, patched) == []


# ---------------------------------------------------------------- against a fake API server


def standard_isvc(overlay: str = FIRST_CANARY) -> dict[str, Any]:
    """A Standard-mode diabetes service with the status KServe v0.20.0 reports for its canaries."""
    isvc = by_kind(render(overlay), "InferenceService")["diabetes"]
    isvc["metadata"]["namespace"] = "ml"
    canaries = isvc["spec"].get("canary", [])
    isvc["status"] = {
        "url": "http://diabetes.ml.example.com",
        "deploymentMode": "Standard",
        "conditions": [{"type": "Ready", "status": "True"}],
        "canaryStatuses": [
            {"name": c["predictor"]["name"], "ready": True, "trafficPercent": c["trafficPercent"]} for c in canaries
        ],
    }
    return isvc


@pytest.fixture
def api_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    with serving(standard_isvc(), tmp_path / "kubeconfig") as server:
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        yield server


def dry_run_body(*argv: str) -> dict[str, Any]:
    args = rollout.parse_args([*argv, "--mode", "standard", "--dry-run"])
    return patches.build_patch(rollout.change_from(args), args.mode)


def test_status_reports_the_canaries(api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert rollout.main(["--name", "diabetes", "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["deploymentMode"], status["predictorName"], status["canaryTrafficPercent"]) == (
        "Standard",
        None,
        None,
    )
    first = CANARY_PERCENTS[0]
    assert status["canaries"] == [{"name": "v2", "trafficPercent": first, "storageUri": V2_URI, "replicas": 1}]
    assert status["canaryStatuses"] == [{"name": "v2", "ready": True, "trafficPercent": first}]


@pytest.mark.parametrize(
    "argv,same_as",
    [
        (["canary", "50"], ["canary", "50", "--storage-uri", V2_URI]),  # continues the deployed canary
        (["canary", "25", "--storage-uri", V3_URI], ["canary", "25", "--storage-uri", V3_URI]),  # replaces it
        (["promote"], ["promote", "--storage-uri", V2_URI]),
        (["rollback", "--mode", "standard"], ["rollback"]),
    ],
    ids=["canary-50", "canary-v3", "promote", "rollback"],
)
def test_each_command_sends_the_patch_a_dry_run_prints(
    argv: list[str], same_as: list[str], api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout.main(["--name", "diabetes", *argv]) == 0
    (patch,) = api_server.patches()
    assert (patch["type"], patch["query"]) == ("application/merge-patch+json", "fieldValidation=Strict")
    assert patch["body"] == dry_run_body(*same_as)


@pytest.mark.parametrize("command,overlay", [("promote", "standard/promote"), ("rollback", "standard/rollback")])
def test_promote_and_rollback_leave_the_overlays_spec_on_the_server(
    command: str, overlay: str, api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout.main(["--name", "diabetes", command]) == 0
    assert api_server.isvc["spec"] == by_kind(render(overlay), "InferenceService")["diabetes"]["spec"]


@pytest.mark.parametrize("annotation", ["RawDeployment", None])
def test_the_deprecated_name_or_the_recorded_status_also_mean_standard(
    annotation: str | None, api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    annotations = api_server.isvc["metadata"]["annotations"]
    if annotation is None:
        # status.deploymentMode says Standard, but KServe refuses canaries without the annotation.
        del annotations[rules.DEPLOYMENT_MODE]
        assert rollout.main(["--name", "diabetes", "canary", "25"]) == 1
        assert "only supported in Standard deployment mode" in capsys.readouterr().err
        assert api_server.patches() == []
    else:
        annotations[rules.DEPLOYMENT_MODE] = annotation
        assert rollout.main(["--name", "diabetes", "canary", "25"]) == 0
        assert [p["body"] for p in api_server.patches()] == [dry_run_body("canary", "25", "--storage-uri", V2_URI)]


def refused(server: FakeApiServer, err: str, *messages: str) -> bool:
    return server.patches() == [] and "nothing was sent" in err and all(m in err for m in messages)


def test_re_canarying_the_promoted_version_is_refused(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    api_server.isvc = standard_isvc("standard/promote")  # the stable predictor is now named v2
    assert rollout.main(["--name", "diabetes", "canary", "10", "--storage-uri", V2_URI]) == 1
    assert refused(api_server, capsys.readouterr().err, "'v2' conflicts with stable predictor name")


def test_a_dark_launch_on_a_stable_without_replicas_is_refused(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    api_server.isvc["spec"]["predictor"]["minReplicas"] = 0
    assert rollout.main(["--name", "diabetes", "canary", "0"]) == 1
    assert refused(
        api_server,
        capsys.readouterr().err,
        "minReplicas (1) must not exceed stable predictor minReplicas (0)",
    )


def test_without_a_canary_there_is_nothing_to_continue_or_promote(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    api_server.isvc = standard_isvc("standard/base")
    assert rollout.main(["--name", "diabetes", "promote"]) == 1
    assert "has canaries []: pass --storage-uri" in capsys.readouterr().err
    assert api_server.patches() == []


def test_a_serverless_step_on_a_standard_service_is_refused(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # The very mistake of kserve#5335: canaryTrafficPercent on a Standard service is silently ignored.
    assert rollout.main(["--name", "diabetes", "canary", "10", "--mode", "serverless"]) == 1
    assert "runs in standard mode, not serverless" in capsys.readouterr().err
    assert api_server.patches() == []


@pytest.mark.parametrize(
    "annotation,status,mode",
    [
        ("Standard", "Standard", "standard"),
        ("RawDeployment", None, "standard"),
        ("Knative", "Knative", "serverless"),
        ("Serverless", None, "serverless"),
        (None, "Standard", "standard"),
        (None, "Knative", "serverless"),
    ],
)
def test_the_mode_comes_from_the_annotation_else_the_status(
    annotation: str | None, status: str | None, mode: str
) -> None:
    isvc: dict[str, Any] = {"metadata": {"name": "x", "annotations": {}}, "status": {}}
    if annotation:
        isvc["metadata"]["annotations"][rules.DEPLOYMENT_MODE] = annotation
    if status:
        isvc["status"]["deploymentMode"] = status
    assert patches.detect_mode(isvc) == mode


@pytest.mark.parametrize("annotation", ["ModelMesh", None])
def test_a_mode_without_canaries_or_no_mode_at_all_is_refused(annotation: str | None) -> None:
    isvc: dict[str, Any] = {"metadata": {"name": "x", "annotations": {}}}
    if annotation:
        isvc["metadata"]["annotations"][rules.DEPLOYMENT_MODE] = annotation
    with pytest.raises(patches.RolloutError, match="no canary rollout"):
        patches.detect_mode(isvc)
