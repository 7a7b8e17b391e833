"""`rollout auto` without servers: its `--dry-run` output, exactly, for both targets (an nginx
upstream; the InferenceService with the patches of pipeline_tools.rollout.patches, in both deployment
modes); its step / analyze / promote-or-rollback loop on scripted analyses; the InferenceService target
against a fake Kubernetes API server, step for step the same requests as the command line's; `rollout
analyze` end to end on fake metrics endpoints; and what the modules may import."""

from __future__ import annotations

import argparse
import http.server
import io
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from harness.models import REPO_ROOT
from harness.nginx import config_text
from pipeline_tools.rollout import analysis as ra
from pipeline_tools.rollout import auto, patches, targets
from pipeline_tools.rollout import cli as rollout
from pipeline_tools.rollout.steps import DEFAULT_STEPS, Action, Step
from tests.deploy.fake_api import FakeApiServer, serving
from tests.rehearsal.support import run_cli

V2 = "gs://YOUR-BUCKET/pipeline-runtime/models/diabetes/2"
STABLE, CANARY = "127.0.0.1:8001", "127.0.0.1:8002"


# ------------------------------------------------------------------------------ --dry-run, exactly


def test_dry_run_on_an_nginx_upstream_prints_each_rewritten_block(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(config_text(tmp_path, 8000, {STABLE: 100, CANARY: None}))
    before = conf.read_bytes()
    done = run_cli(
        "auto",
        "--dry-run",
        "--target",
        "nginx",
        "--nginx-conf",
        str(conf),
        "--nginx-prefix",
        str(tmp_path),
        "--stable-server",
        STABLE,
        "--canary-server",
        CANARY,
        "--steps",
        "10,50,100",
        "--settle",
        "5s",
        "--window",
        "30s",
        "--max-inconclusive",
        "2",
    )
    assert (done.returncode, done.stderr) == (0, "")
    reload = f"nginx -p {tmp_path} -c {conf} -s reload"
    wait = (
        "# wait 5s, then analyze every 30s: promote -> next step, rollback -> rollback, "
        "not enough data -> analyze again (at most 2 times, then rollback)"
    )
    assert (
        done.stdout
        == f"""\
# step 1/3: canary 10% (upstream pipeline in {conf}, then {reload})
upstream pipeline {{
    server 127.0.0.1:8001 weight=90;
    server 127.0.0.1:8002 weight=10;
    keepalive 32;
}}
{wait}
# step 2/3: canary 50% (upstream pipeline in {conf}, then {reload})
upstream pipeline {{
    server 127.0.0.1:8001 weight=50;
    server 127.0.0.1:8002 weight=50;
    keepalive 32;
}}
{wait}
# step 3/3: promote (upstream pipeline in {conf}, then {reload})
upstream pipeline {{
    server 127.0.0.1:8001 down;
    server 127.0.0.1:8002 weight=100;
    keepalive 32;
}}
# on rollback (upstream pipeline in {conf}, then {reload})
upstream pipeline {{
    server 127.0.0.1:8001 weight=100;
    server 127.0.0.1:8002 down;
    keepalive 32;
}}
"""
    )
    assert conf.read_bytes() == before  # nothing written, nothing reloaded


def test_dry_run_on_an_inference_service_prints_runtime_rollouts_patches() -> None:
    done = run_cli(
        "-n",
        "ml",
        "--name",
        "diabetes",
        "auto",
        "--dry-run",
        "--mode",
        "serverless",
        "--storage-uri",
        V2,
        "--steps",
        "10,50,100",
    )
    assert done.returncode == 0, done.stderr
    command = "python -m pipeline_tools.rollout -n ml --name diabetes"
    wait = (
        "# wait 30s, then analyze every 60s: promote -> next step, rollback -> rollback, "
        "not enough data -> analyze again (at most 3 times, then rollback)"
    )
    assert (
        done.stdout
        == f"""\
# step 1/3: canary 10% ({command} canary 10 --storage-uri {V2} --mode serverless)
{{"spec": {{"predictor": {{"canaryTrafficPercent": 10, "model": {{"storageUri": "{V2}"}}}}}}}}
{wait}
# step 2/3: canary 50% ({command} canary 50 --storage-uri {V2} --mode serverless)
{{"spec": {{"predictor": {{"canaryTrafficPercent": 50, "model": {{"storageUri": "{V2}"}}}}}}}}
{wait}
# step 3/3: promote ({command} promote --mode serverless)
{{"spec": {{"predictor": {{"canaryTrafficPercent": null}}}}}}
# on rollback ({command} rollback --mode serverless)
{{"spec": {{"predictor": {{"canaryTrafficPercent": 0}}}}}}
"""
    )
    printed = [json.loads(line) for line in done.stdout.splitlines() if not line.startswith("#")]
    assert printed == [
        patches.canary_patch(10, V2),
        patches.canary_patch(50, V2),
        patches.promote_patch(),
        patches.rollback_patch(),
    ]


def test_dry_run_in_standard_mode_prints_the_spec_canary_patches() -> None:
    isvc = ("-n", "ml", "--name", "diabetes")
    done = run_cli(*isvc, "auto", "--dry-run", "--mode", "standard", "--storage-uri", V2, "--steps", "25,100")
    assert done.returncode == 0, done.stderr
    command = "python -m pipeline_tools.rollout -n ml --name diabetes"
    fmt = '{"name": "sklearn-pipeline", "version": "1"}'
    model = f'{{"name": "kserve-container", "modelFormat": {fmt}, "storageUri": "{V2}"}}'
    wait = (
        "# wait 30s, then analyze every 60s: promote -> next step, rollback -> rollback, "
        "not enough data -> analyze again (at most 3 times, then rollback)"
    )
    assert (
        done.stdout
        == f"""\
# step 1/2: canary 25% ({command} canary 25 --storage-uri {V2} --mode standard)
{{"spec": {{"canary": [{{"trafficPercent": 25, "predictor": {{"name": "v2", "model": {model}}}}}]}}}}
{wait}
# step 2/2: promote ({command} promote --storage-uri {V2} --mode standard)
{{"spec": {{"predictor": {{"name": "v2", "model": {{"storageUri": "{V2}"}}}}, "canary": null}}}}
# on rollback ({command} rollback --mode standard)
{{"spec": {{"canary": null}}}}
"""
    )
    printed = [json.loads(line) for line in done.stdout.splitlines() if not line.startswith("#")]
    assert printed == [
        patches.standard_canary_patch(25, V2, "v2"),
        patches.standard_promote_patch(V2, "v2"),
        patches.standard_rollback_patch(),
    ]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["auto", "--dry-run"], "--dry-run needs --mode serverless|standard"),
        (
            ["auto", "--dry-run", "--target", "nginx", "--stable-server", STABLE],
            "--target nginx needs --nginx-conf, --canary-server",
        ),
        (
            ["auto", "--prometheus", "http://p", "--stable-metrics", "http://a", "--canary-metrics", "http://b"],
            "give either --prometheus URL or both --stable-metrics and --canary-metrics",
        ),
        (["analyze", "--stable-metrics", "http://a"], "give either --prometheus URL or both"),
    ],
)
def test_refused_invocations_exit_2_with_a_reason(argv: list[str], message: str) -> None:
    done = run_cli(*argv)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("value", ["10,50", "50,10,100", "0,100", "10,10,100", "ten"])
def test_steps_must_increase_to_100(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        auto.steps(value)
    assert auto.steps("10,25,50,100") == (10, 25, 50, 100)
    assert auto.steps(",".join(map(str, DEFAULT_STEPS))) == DEFAULT_STEPS  # the default passes its own check


def test_durations_and_times() -> None:
    assert [auto.duration(v) for v in ("90", "90s", "1500ms", "5m", "8.5s")] == [90, 90, 1.5, 300, 8.5]
    assert auto.timestamp("2026-12-02T07:44:35.989Z") == pytest.approx(1796197475.989)
    assert auto.timestamp("1796197475.5") == 1796197475.5


# ------------------------------------------------------------------------------ the loop, scripted


class FakeTarget:
    def __init__(self, fail_on: str | None = None):
        self.applied: list[str] = []
        self.fail_on = fail_on

    def describe(self, step: Step) -> str:
        return f"fake {step}"

    def plan(self, step: Step) -> str:
        return str(step)

    def apply(self, step: Step) -> dict[str, Any]:
        if str(step) == self.fail_on:
            raise RuntimeError("the API server said no")
        self.applied.append(str(step))
        return {"applied": str(step)}


class ScriptedSource:
    """Hands out prepared windows in order; `None` in the script raises AnalysisError (an unreachable source)."""

    description = "scripted"

    def __init__(self, windows: list[ra.Window | None]):
        self.windows = list(windows)
        self.begun = 0

    def begin(self) -> int:
        self.begun += 1
        return self.begun

    def collect(self, begun: int) -> ra.Window:
        window = self.windows.pop(0)
        if window is None:
            raise ra.AnalysisError("Prometheus is down")
        return window


def _side(requests: float, errors: float = 0.0) -> ra.Side:
    return ra.Side(
        outcomes={"ok": requests - errors, "internal_error": errors},
        rows=requests * 8,
        predictions={"100": requests * 4, "+Inf": requests * 4},
    )


GOOD = ra.Window(_side(1000), _side(300), 60.0, 1_800_000_000.0, "scripted")
BAD = ra.Window(_side(1000), _side(300, errors=60), 60.0, 1_800_000_000.0, "scripted")
THIN = ra.Window(_side(1000), _side(20), 60.0, 1_800_000_000.0, "scripted")


def _run(target: FakeTarget, windows: list, max_inconclusive: int = 2) -> tuple[int, list[dict]]:
    out, sleeps = io.StringIO(), list[float]()
    options = auto.AutoOptions((10, 50, 100), settle_s=3.0, window_s=7.0, max_inconclusive=max_inconclusive)
    with redirect_stdout(out), auto.json_log(sys.stdout):
        code = auto.run_auto_steps(
            target, ScriptedSource(windows), options, ra.Thresholds(), sleep=sleeps.append, report=lambda text: None
        )
    assert set(sleeps) <= {3.0, 7.0}
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def test_auto_promotes_after_every_step_passed() -> None:
    target = FakeTarget()
    code, lines = _run(target, [GOOD, GOOD])
    assert code == 0
    assert target.applied == ["canary 10%", "canary 50%", "promote"]
    assert [(x["event"], x.get("percent"), x.get("decision")) for x in lines] == [
        ("step", 10, None),
        ("analysis", 10, "promote"),
        ("step", 50, None),
        ("analysis", 50, "promote"),
        ("step", None, None),
        ("promote", None, "promote"),
    ]
    analysis = lines[1]
    assert analysis["checks"]["requests"] == {"stable": 1000.0, "canary": 300.0, "verdict": "pass", "limit": 200}
    assert {"time", "level", "logger", "message", "exit_code", "window_s", "stable", "canary"} <= set(analysis)
    assert analysis["logger"] == "pipeline_tools.rollout" and analysis["message"] == "analysis"


def test_auto_rolls_back_at_the_first_failed_analysis() -> None:
    target = FakeTarget()
    code, lines = _run(target, [GOOD, BAD])
    assert code == 1
    assert target.applied == ["canary 10%", "canary 50%", "rollback"]
    assert lines[-2]["decision"] == "rollback" and lines[-2]["reasons"] == ["error_rate_5xx"]
    assert lines[-2]["checks"]["error_rate_5xx"]["canary"] == 0.2
    assert lines[-1] | {"time": None, "pid": None} == {
        "time": None,
        "level": "INFO",
        "logger": "pipeline_tools.rollout",
        "message": "rollback",
        "pid": None,
        "event": "rollback",
        "decision": "rollback",
        "reason": "analysis at canary 50% failed: error_rate_5xx",
        "target": {"applied": "rollback"},
        "exit_code": 1,
    }


def test_auto_waits_for_data_then_gives_up_with_a_rollback() -> None:
    target = FakeTarget()
    code, lines = _run(target, [THIN, GOOD, GOOD], max_inconclusive=2)
    assert code == 0 and target.applied == ["canary 10%", "canary 50%", "promote"]
    assert [x.get("decision") for x in lines if x["event"] == "analysis"] == ["insufficient", "promote", "promote"]

    target = FakeTarget()
    code, lines = _run(target, [THIN, None], max_inconclusive=2)  # too little data, then no Prometheus
    assert code == 1 and target.applied == ["canary 10%", "rollback"]
    assert lines[2]["error"] == "Prometheus is down" and lines[2]["exit_code"] == 3
    assert lines[-1]["reason"] == "not enough data at canary 10% after 2 windows"


def test_a_step_that_cannot_be_applied_rolls_back_and_exits_2() -> None:
    target = FakeTarget(fail_on="canary 50%")
    code, lines = _run(target, [GOOD])
    assert code == 2 and target.applied == ["canary 10%", "rollback"]
    assert lines[-2]["event"] == "step_failed" and lines[-2]["error"] == "the API server said no"
    assert lines[-1]["event"] == "rollback" and lines[-1]["exit_code"] == 2


# ------------------------------------------------------------------------------ the InferenceService target

MODES = {"serverless": "Knative", "standard": "Standard"}


def live_isvc(mode: str) -> dict[str, Any]:
    """A diabetes InferenceService on version 1 as the API server returns it, in namespace ml."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "diabetes",
            "namespace": "ml",
            "annotations": {"serving.kserve.io/deploymentMode": MODES[mode]},
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "model": {
                    "modelFormat": {"name": "sklearn-pipeline", "version": "1"},
                    "storageUri": "gs://YOUR-BUCKET/pipeline-runtime/models/diabetes/1",
                },
            }
        },
        "status": {"deploymentMode": MODES[mode], "conditions": [{"type": "Ready", "status": "True"}]},
    }


@dataclass
class Cluster:
    server: FakeApiServer
    kubeconfig: Path


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], Cluster]]:
    """`cluster(mode, label)`: a fake API server holding the service in that mode, KUBECONFIG pointed at it."""
    with ExitStack() as stack:

        def start(mode: str, label: str) -> Cluster:
            kubeconfig = tmp_path / f"{label}.kubeconfig"
            return Cluster(stack.enter_context(serving(live_isvc(mode), kubeconfig)), kubeconfig)

        yield start


def use(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))


@pytest.mark.parametrize("mode", ["serverless", "standard"])
@pytest.mark.parametrize("last", [Action.PROMOTE, Action.ROLLBACK])
def test_each_step_sends_what_the_command_line_sends(
    mode: str,
    last: Action,
    cluster: Callable[[str, str], Cluster],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The auto-rollout calls the patch builders and the client itself; every request it makes is the one
    `python -m pipeline_tools.rollout` (the command its decision log names) makes for that step."""
    by_auto, by_cli = cluster(mode, "auto"), cluster(mode, "cli")
    target = targets.InferenceServiceTarget(name="diabetes", mode=mode, storage_uri=V2)
    run = [Step(Action.CANARY, 10), Step(Action.CANARY, 50), Step(last)]
    for step in run:
        use(by_auto, monkeypatch)
        applied = target.apply(step)
        use(by_cli, monkeypatch)
        assert rollout.main(target.argv(step)) == 0
        assert applied["status"] == json.loads(capsys.readouterr().out)
        assert applied["command"] == "python -m pipeline_tools.rollout " + " ".join(target.argv(step))
    assert by_auto.server.requests == by_cli.server.requests
    assert [r["method"] for r in by_auto.server.requests] == ["GET", "PATCH"] * len(run)
    assert by_auto.server.isvc == by_cli.server.isvc
    serverless = {Action.PROMOTE: patches.promote_patch(), Action.ROLLBACK: patches.rollback_patch()}
    standard = {
        Action.PROMOTE: patches.standard_promote_patch(V2, "v2"),
        Action.ROLLBACK: patches.standard_rollback_patch(),
    }
    expected = (
        [patches.canary_patch(10, V2), patches.canary_patch(50, V2), serverless[last]]
        if mode == "serverless"
        else [patches.standard_canary_patch(10, V2, "v2"), patches.standard_canary_patch(50, V2, "v2"), standard[last]]
    )
    assert [r["body"] for r in by_auto.server.patches()] == expected


def test_a_step_the_service_refuses_or_the_api_server_fails_is_an_error(
    cluster: Callable[[str, str], Cluster], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    serverless = cluster("serverless", "serverless")
    use(serverless, monkeypatch)
    server = serverless.server
    wrong_mode = targets.InferenceServiceTarget(name="diabetes", mode="standard", storage_uri=V2)
    with pytest.raises(ra.AnalysisError, match="canary 10 .* failed: diabetes runs in serverless mode, not standard"):
        wrong_mode.apply(Step(Action.CANARY, 10))
    with pytest.raises(ra.AnalysisError, match="--name nope rollback failed: 404 Not Found"):
        targets.InferenceServiceTarget(name="nope").apply(Step(Action.ROLLBACK))
    assert server.patches() == []
    # A deprecated deploymentMode name is sent on, with the command line's warning.
    server.isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Serverless"
    assert targets.InferenceServiceTarget(name="diabetes").apply(Step(Action.ROLLBACK))["status"]["ready"] == "True"
    assert "kserve#4798" in capsys.readouterr().err
    assert [p["body"] for p in server.patches()] == [patches.rollback_patch()]


# ------------------------------------------------------------------------------ analyze on fake endpoints


class _Metrics(http.server.BaseHTTPRequestHandler):
    pages: list[str] = []
    url = ""  # each endpoint's own subclass: its address

    def do_GET(self) -> None:  # noqa: N802
        body = (self.pages.pop(0) if len(self.pages) > 1 else self.pages[0]).encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _exposition(version: str, ok: int, errors: int, buckets: dict[str, int]) -> str:
    labels = f'model="diabetes",version="{version}"'
    lines = [
        f'pipeline_requests_total{{{labels},outcome="ok"}} {ok}',
        f'pipeline_requests_total{{{labels},outcome="internal_error"}} {errors}',
        f"pipeline_request_rows_sum{{{labels}}} {ok * 8}",
        f"pipeline_ood_rows_total{{{labels}}} 0",
    ]
    lines += [f'pipeline_prediction_bucket_total{{{labels},bucket="{b}"}} {n}' for b, n in buckets.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def endpoints() -> Iterator[dict[str, type[_Metrics]]]:
    servers, handlers = [], {}
    for side in ("stable", "canary"):
        handler = cast(type[_Metrics], type(f"Metrics_{side}", (_Metrics,), {"pages": []}))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        handler.url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        servers.append(server)
        handlers[side] = handler
    yield handlers
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("canary_errors,code,decision", [(0, 0, "promote"), (100, 1, "rollback: error_rate_5xx")])
def test_analyze_scrapes_twice_and_exits_with_its_decision(endpoints, canary_errors, code, decision):
    even = {"100": 1, "200": 1, "+Inf": 1}
    endpoints["stable"].pages = [_exposition("1", 10, 0, even), _exposition("1", 1010, 0, {k: 2700 for k in even})]
    canary_after = _exposition("2", 505 - canary_errors, canary_errors, {k: 1300 for k in even})
    endpoints["canary"].pages = [_exposition("2", 5, 0, even), canary_after]
    done = run_cli(
        "analyze",
        "--stable-metrics",
        endpoints["stable"].url,
        "--canary-metrics",
        endpoints["canary"].url,
        "--window",
        "100ms",
    )
    assert done.returncode == code, done.stdout + done.stderr
    table = done.stdout.splitlines()
    assert table[0] == "rollout analyze: model diabetes"
    assert table[1].startswith("window 0.") and "from scrapes of" in table[1]
    rows = {line.split()[0]: line.split() for line in table[3:-1]}
    assert rows["requests"][1:3] == ["1000", str(500)]
    assert rows["error_rate_5xx"][-1] == ("pass" if code == 0 else "fail")
    assert table[-1] == f"decision: {decision.split(':')[0]} (exit {code})" + (": error_rate_5xx" if code else "")
    log = json.loads(done.stderr)  # the decision, one JSON line
    assert log["decision"] == decision.split(":")[0] and log["exit_code"] == code
    assert log["canary"]["predictions"] == {"100": 1299.0, "200": 1299.0, "+Inf": 1299.0}


def test_the_modules_import_neither_mlserver_scipy_nor_kubernetes() -> None:
    probe = (
        "import sys, pipeline_tools.rollout.analysis, pipeline_tools.rollout.sources, pipeline_tools.rollout.targets, "
        "pipeline_tools.rollout.patches, pipeline_tools.rollout.cluster, pipeline_tools.rollout.cli, "
        "pipeline_tools.rollout.auto as m; m.add_commands; "
        "print(sorted({'mlserver', 'runtime.model', 'scipy', 'sklearn', 'kubernetes'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_add_commands_registers_analyze_and_auto_on_another_parser() -> None:
    """As pipeline_tools.rollout.cli will: its own global -n/--name, then these commands; `handler` runs them."""

    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--namespace")
    parser.add_argument("--name", default="diabetes")
    commands = parser.add_subparsers(dest="command", required=True)
    auto.add_commands(commands)
    args = parser.parse_args(["-n", "ml", "auto", "--dry-run", "--mode", "serverless", "--steps", "50,100"])
    assert args.handler is auto.run_auto and args.auto_dry_run and args.isvc_mode == "serverless"
    assert not hasattr(args, "dry_run") and not hasattr(args, "mode")  # a parent's checks on those stay out
    out = io.StringIO()
    with redirect_stdout(out):
        assert args.handler(args) == 0
    assert out.getvalue().splitlines()[1] == '{"spec": {"predictor": {"canaryTrafficPercent": 50}}}'
