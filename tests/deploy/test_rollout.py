"""pipeline_tools.rollout.cli in Serverless (Knative) mode: its patches as exact data, --dry-run end to end, and
every command against a fake Kubernetes API server on loopback (the real kubernetes client does the
HTTP). Standard mode (spec.canary[]) is in test_rollout_standard.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline_tools.rollout import cli as rollout
from pipeline_tools.rollout import patches
from pipeline_tools.rollout.steps import CANARY_PERCENTS
from tests.deploy.deploy_support import REPO, by_kind, kubectl_merge_patch, render, run_rollout
from tests.deploy.fake_api import ISVC_PATH, FakeApiServer, serving

V2_URI = "gs://YOUR-BUCKET/pipeline-runtime/models/diabetes/2"
FIRST = CANARY_PERCENTS[0]  # the Knative canary overlay's step
PATCHES = [
    (["canary", "10"], '{"spec": {"predictor": {"canaryTrafficPercent": 10}}}'),
    (
        ["canary", "25", "--storage-uri", V2_URI],
        '{"spec": {"predictor": {"canaryTrafficPercent": 25, "model": {"storageUri": "' + V2_URI + '"}}}}',
    ),
    (["promote"], '{"spec": {"predictor": {"canaryTrafficPercent": null}}}'),
    (["rollback"], '{"spec": {"predictor": {"canaryTrafficPercent": 0}}}'),
]
IDS = [" ".join(a[:2]) for a, _ in PATCHES]


def test_rollout_imports_neither_mlserver_nor_the_runtime_model() -> None:
    probe = "import sys, pipeline_tools.rollout.cli; print(sorted({'mlserver', 'runtime.model'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("argv,body", PATCHES, ids=IDS)
def test_each_command_builds_its_exact_merge_patch(argv: list[str], body: str) -> None:
    args = rollout.parse_args([*argv, "--mode", "serverless", "--dry-run"])
    assert json.dumps(patches.build_patch(rollout.change_from(args), args.mode)) == body


@pytest.mark.parametrize("bad", ["101", "-1", "ten"])
def test_canary_percent_outside_0_to_100_is_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        rollout.parse_args(["canary", bad])
    with pytest.raises(ValueError):
        patches.canary_patch(101)


@pytest.mark.parametrize("argv,body", PATCHES, ids=IDS)
def test_dry_run_prints_the_patch_and_contacts_nothing(argv: list[str], body: str, tmp_path: Path) -> None:
    # A kubeconfig that does not exist: the dry run must not even look for a cluster.
    out = run_rollout(*argv, "--mode", "serverless", "--dry-run", env={"KUBECONFIG": str(tmp_path / "absent")})
    assert (out.returncode, out.stdout) == (0, body + "\n"), out.stderr
    assert "dry run, serverless mode" in out.stderr


def test_a_dry_run_does_not_guess_the_mode() -> None:
    # A guessed Serverless patch on a Standard service would be silently ignored (kserve#5335).
    out = run_rollout("promote", "--dry-run")
    assert (out.returncode, out.stdout) == (2, "")
    assert "--dry-run needs --mode" in out.stderr


@pytest.mark.parametrize(
    "argv,refusal",
    [
        (["promote", "--storage-uri", V2_URI], "promote takes no --storage-uri"),
        (["canary", "10", "--canary-name", "v2"], "--canary-name names a Standard-mode canary"),
    ],
)
def test_standard_only_options_are_refused_in_serverless_mode(argv: list[str], refusal: str) -> None:
    out = run_rollout(*argv, "--mode", "serverless", "--dry-run")
    assert (out.returncode, out.stdout) == (1, "")
    assert refusal in out.stderr


@pytest.mark.parametrize(
    "start,argv,end",
    [
        ("base", ["canary", str(FIRST), "--storage-uri", V2_URI], "canary"),
        ("canary", ["promote"], "promote"),
        ("canary", ["rollback"], "rollback"),
    ],
)
def test_dry_run_patch_turns_one_overlay_into_the_next(start: str, argv: list[str], end: str, tmp_path: Path) -> None:
    """The command and the kustomize overlays describe the same rollout steps."""
    patch = run_rollout(*argv, "--mode", "serverless", "--dry-run").stdout
    patched = kubectl_merge_patch(by_kind(render(start), "InferenceService")["diabetes"], patch, tmp_path)
    assert patched == by_kind(render(end), "InferenceService")["diabetes"]


# ---------------------------------------------------------------- against a fake API server


def canary_isvc() -> dict[str, Any]:
    """The canary overlay's diabetes service with the status KServe reports at the first step's canary traffic."""
    isvc = by_kind(render("canary"), "InferenceService")["diabetes"]
    isvc["metadata"]["namespace"] = "ml"
    isvc["status"] = {
        "url": "http://diabetes.ml.example.com",
        "deploymentMode": "Knative",
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {
            "predictor": {
                "latestReadyRevision": "diabetes-predictor-00002",
                "latestRolledoutRevision": "diabetes-predictor-00001",
                "traffic": [
                    {
                        "revisionName": "diabetes-predictor-00002",
                        "percent": FIRST,
                        "latestRevision": True,
                        "tag": "latest",
                    },
                    {
                        "revisionName": "diabetes-predictor-00001",
                        "percent": 100 - FIRST,
                        "latestRevision": False,
                        "tag": "prev",
                    },
                ],
            }
        },
    }
    return isvc


@pytest.fixture
def api_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    with serving(canary_isvc(), tmp_path / "kubeconfig") as server:
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        yield server


def test_status_reports_the_traffic_split(api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert rollout.main(["--name", "diabetes", "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["canaryTrafficPercent"] == FIRST and status["ready"] == "True"
    assert (status["deploymentMode"], status["deploymentModeAnnotation"], status["canaries"]) == (
        "Knative",
        "Knative",
        [],
    )
    assert [(t["revisionName"], t["percent"]) for t in status["traffic"]] == [
        ("diabetes-predictor-00002", FIRST),
        ("diabetes-predictor-00001", 100 - FIRST),
    ]
    assert api_server.requests == [{"method": "GET", "path": ISVC_PATH, "query": "", "type": None, "body": None}]


@pytest.mark.parametrize("argv,body", PATCHES, ids=IDS)
def test_each_command_reads_the_service_then_sends_the_dry_run_patch(
    argv: list[str], body: str, api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout.main(["--name", "diabetes", *argv]) == 0
    get, patch = api_server.requests
    assert (get["method"], get["path"]) == ("GET", ISVC_PATH)
    assert (patch["method"], patch["path"], patch["type"]) == (
        "PATCH",
        ISVC_PATH,
        "application/merge-patch+json",
    )
    assert patch["query"] == "fieldValidation=Strict"
    assert patch["body"] == json.loads(body)
    printed = json.loads(capsys.readouterr().out)
    assert printed["canaryTrafficPercent"] == json.loads(body)["spec"]["predictor"]["canaryTrafficPercent"]


def test_promote_removes_the_field_on_the_server(api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert rollout.main(["--name", "diabetes", "promote"]) == 0
    assert "canaryTrafficPercent" not in api_server.isvc["spec"]["predictor"]


@pytest.mark.parametrize("annotation", ["Serverless", None])
def test_the_deprecated_name_or_the_recorded_status_also_mean_serverless(
    annotation: str | None, api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    annotations = api_server.isvc["metadata"]["annotations"]
    if annotation is None:
        del annotations["serving.kserve.io/deploymentMode"]  # then status.deploymentMode decides
    else:
        annotations["serving.kserve.io/deploymentMode"] = annotation
    assert rollout.main(["--name", "diabetes", "rollback"]) == 0
    assert [p["body"] for p in api_server.patches()] == [json.loads(PATCHES[3][1])]
    # KServe 0.16 would refuse the update of a service still annotated with the deprecated name.
    assert ("kserve#4798" in capsys.readouterr().err) == (annotation == "Serverless")


def test_a_mode_the_service_does_not_run_in_is_refused(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout.main(["--name", "diabetes", "rollback", "--mode", "standard"]) == 1
    assert "runs in serverless mode, not standard" in capsys.readouterr().err
    assert api_server.patches() == []


def test_a_patch_kserve_would_refuse_is_not_sent(api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    # KServe ran it in Standard mode; its webhook refuses any update annotated otherwise.
    api_server.isvc["status"]["deploymentMode"] = "Standard"
    assert rollout.main(["--name", "diabetes", "canary", "20"]) == 1
    err = capsys.readouterr().err
    assert "deploymentMode cannot be changed from 'Standard' to 'Knative'" in err and "nothing was sent" in err
    assert api_server.patches() == []


def test_an_unknown_service_fails_with_the_api_error(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout.main(["--name", "nope", "rollback"]) == 1
    assert "404" in capsys.readouterr().err


def test_explicit_namespace_wins_over_the_kubeconfig(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout.main(["--name", "diabetes", "-n", "other", "status"]) == 1
    assert api_server.requests[0]["path"] == ISVC_PATH.replace("/ml/", "/other/")
