"""runtime.rollout: its patches as exact data, --dry-run end to end, and every command against a fake
Kubernetes API server on loopback (the real kubernetes client does the HTTP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_support import REPO, by_kind, kubectl, render
from runtime import rollout

ISVC_PATH = "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/diabetes"
V2_URI = "gs://YOUR-BUCKET/pipeline-runtime/models/diabetes/2"
PATCHES = [
    (["canary", "10"], '{"spec": {"predictor": {"canaryTrafficPercent": 10}}}'),
    (
        ["canary", "25", "--storage-uri", V2_URI],
        '{"spec": {"predictor": {"canaryTrafficPercent": 25, "model": {"storageUri": "' + V2_URI + '"}}}}',
    ),
    (["promote"], '{"spec": {"predictor": {"canaryTrafficPercent": null}}}'),
    (["rollback"], '{"spec": {"predictor": {"canaryTrafficPercent": 0}}}'),
]


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime.rollout", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def test_rollout_imports_neither_mlserver_nor_the_runtime_model() -> None:
    probe = "import sys, runtime.rollout; print(sorted({'mlserver', 'runtime.model'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("argv,body", PATCHES, ids=[" ".join(a[:2]) for a, _ in PATCHES])
def test_each_command_builds_its_exact_merge_patch(argv: list[str], body: str) -> None:
    patch = rollout.build_patch(rollout.parse_args([*argv, "--dry-run"]))
    assert json.dumps(patch) == body


@pytest.mark.parametrize("bad", ["101", "-1", "ten"])
def test_canary_percent_outside_0_to_100_is_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        rollout.parse_args(["canary", bad])
    with pytest.raises(ValueError):
        rollout.canary_patch(101)


@pytest.mark.parametrize("argv,body", PATCHES, ids=[" ".join(a[:2]) for a, _ in PATCHES])
def test_dry_run_prints_the_patch_and_contacts_nothing(argv: list[str], body: str, tmp_path: Path) -> None:
    # A kubeconfig that does not exist: the dry run must not even look for a cluster.
    out = run_cli(*argv, "--dry-run", env={"KUBECONFIG": str(tmp_path / "absent")})
    assert (out.returncode, out.stdout) == (0, body + "\n"), out.stderr
    assert "dry run" in out.stderr


@pytest.mark.parametrize(
    "start,argv,end",
    [
        ("base", ["canary", "10", "--storage-uri", V2_URI], "canary"),
        ("canary", ["promote"], "promote"),
        ("canary", ["rollback"], "rollback"),
    ],
)
def test_dry_run_patch_turns_one_overlay_into_the_next(
    start: str, argv: list[str], end: str, tmp_path: Path
) -> None:
    """The command and the kustomize overlays describe the same rollout steps."""
    isvc_file = tmp_path / "isvc.json"
    isvc_file.write_text(json.dumps(by_kind(render(start), "InferenceService")["diabetes"]))
    patch = run_cli(*argv, "--dry-run").stdout
    patched = subprocess.run(
        [kubectl(), "patch", "--local", "-f", str(isvc_file), "--type", "merge", "-p", patch, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert patched.returncode == 0, patched.stderr
    assert json.loads(patched.stdout) == by_kind(render(end), "InferenceService")["diabetes"]


# ---------------------------------------------------------------- against a fake API server


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeApiServer(ThreadingHTTPServer):
    """Serves one InferenceService at ISVC_PATH and records every request."""

    def __init__(self, isvc: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), FakeApiHandler)
        self.isvc = isvc
        self.requests: list[dict[str, Any]] = []


class FakeApiHandler(BaseHTTPRequestHandler):
    server: FakeApiServer

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_request(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        content_type = self.headers.get("Content-Type")
        self.server.requests.append(
            {"method": method, "path": path, "query": query, "type": content_type, "body": body}
        )
        if path != ISVC_PATH:
            self.reply(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})
        elif method == "PATCH" and content_type != "application/merge-patch+json":
            self.reply(415, {"kind": "Status", "status": "Failure", "code": 415})
        else:
            if method == "PATCH":
                self.server.isvc = merge_patch(self.server.isvc, body)
            self.reply(200, self.server.isvc)

    def do_GET(self) -> None:
        self.handle_request("GET")

    def do_PATCH(self) -> None:
        self.handle_request("PATCH")

    def log_message(self, *args: Any) -> None:
        pass


def canary_isvc() -> dict[str, Any]:
    """The canary overlay's diabetes service with the status KServe reports at 10% canary traffic."""
    isvc = by_kind(render("canary"), "InferenceService")["diabetes"]
    isvc["metadata"]["namespace"] = "ml"
    isvc["status"] = {
        "url": "http://diabetes.ml.example.com",
        "deploymentMode": "Serverless",
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {
            "predictor": {
                "latestReadyRevision": "diabetes-predictor-00002",
                "latestRolledoutRevision": "diabetes-predictor-00001",
                "traffic": [
                    {
                        "revisionName": "diabetes-predictor-00002",
                        "percent": 10,
                        "latestRevision": True,
                        "tag": "latest",
                    },
                    {
                        "revisionName": "diabetes-predictor-00001",
                        "percent": 90,
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
    server = FakeApiServer(canary_isvc())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
                ],
                "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                "contexts": [
                    {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "ml"}}
                ],
                "current-context": "fake",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_status_reports_the_traffic_split(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout.main(["status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["canaryTrafficPercent"] == 10 and status["ready"] == "True"
    assert [(t["revisionName"], t["percent"]) for t in status["traffic"]] == [
        ("diabetes-predictor-00002", 10),
        ("diabetes-predictor-00001", 90),
    ]
    assert api_server.requests == [
        {"method": "GET", "path": ISVC_PATH, "query": "", "type": None, "body": None}
    ]


@pytest.mark.parametrize("argv,body", PATCHES, ids=[" ".join(a[:2]) for a, _ in PATCHES])
def test_each_command_sends_one_strict_merge_patch(
    argv: list[str], body: str, api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout.main(argv) == 0
    (request,) = api_server.requests
    assert (request["method"], request["path"], request["type"]) == (
        "PATCH",
        ISVC_PATH,
        "application/merge-patch+json",
    )
    assert request["query"] == "fieldValidation=Strict"
    assert request["body"] == json.loads(body)
    printed = json.loads(capsys.readouterr().out)
    assert printed["canaryTrafficPercent"] == json.loads(body)["spec"]["predictor"]["canaryTrafficPercent"]


def test_promote_removes_the_field_on_the_server(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout.main(["promote"]) == 0
    assert "canaryTrafficPercent" not in api_server.isvc["spec"]["predictor"]


def test_raw_deployment_mode_gets_a_warning(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    api_server.isvc["status"]["deploymentMode"] = "RawDeployment"
    assert rollout.main(["canary", "20"]) == 0
    assert "RawDeployment" in capsys.readouterr().err


def test_an_unknown_service_fails_with_the_api_error(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout.main(["--name", "nope", "rollback"]) == 1
    assert "404" in capsys.readouterr().err


def test_explicit_namespace_wins_over_the_kubeconfig(
    api_server: FakeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout.main(["-n", "other", "status"]) == 1
    assert api_server.requests[0]["path"] == ISVC_PATH.replace("/ml/", "/other/")
