"""A newcomer's first hour, on a fresh copy of the repository (its tracked files, nothing else but the
project's .venv): the README's commands run as written, in the order it gives them.

- the model of "Serve your own model" fitted and packaged by the README's own lines, and the same
  pipeline packaged again without --reference (no ranges: the case that crashed `make serve-features`);
- `make serve` (on free ports, through the MLSERVER_*_PORT variables the README documents), then every
  curl line of the README, parsed out of it, run by bash with the port put in: each answers JSON, no
  error, and where the README shows the answer in a comment, that answer;
- the packager's printed curl line answers what the packager printed;
- an empty or missing body (`-d @missing.json`) is a 400 in the runtime's words on every route;
- a default start warns of nothing the user has to fix, and Ctrl-C (SIGINT to the process group, as a
  terminal sends it) stops `make serve` in under a second;
- `make serve-features` starts with all of that in models/ plus a version that cannot load, names
  that one and serves the rest, the unversioned `diabetes` at the version `make serve` gives it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from harness.models import REPO_ROOT
from harness.server import Server, clean_environ
from pipeline_tools import package

README = REPO_ROOT / "README.md"
STAMP = REPO_ROOT / ".venv" / ".installed-from-lock"  # the Makefile's $(STAMP)
SHOWN_PORT = "localhost:8080"  # what the README's curl lines say
NO_REFERENCE = "rent-noref"
BROKEN = "broken"
CTRL_C_LIMIT_S = 1.0
SIGTERM_LIMIT_S = 3.0  # the server's stop, then the feature store's PostgreSQL
FEATURES_MODEL = "diabetes-by-id"  # harness.feature_demo's, served by `make serve-features` only
# Not the newcomer's: an outer `make test`'s state, and a pod's (CI may run in one; a laptop is not).
NOT_A_SHELLS = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "KUBERNETES_SERVICE_HOST", "KUBECONFIG")


# ---- the README, read as a newcomer reads it --------------------------------------------------


@dataclass(frozen=True)
class Command:
    text: str  # one shell command, continuation lines and quoted newlines included
    shown: str | None  # the answer the README prints in a `# {...}` comment right after it, if any


def fenced_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    return re.findall(r"^```(?:" + "|".join(languages) + r")\n(.*?)^```", text, flags=re.M | re.S)


def commands(block: str) -> list[Command]:
    """The block's shell commands: a command goes on while a quote is open or a line ends in `\\`;
    a comment line holding a JSON object right after one is the answer the README shows for it."""
    out: list[Command] = []
    pending = ""
    for line in block.splitlines():
        if not pending and line.startswith("#"):
            if out and line.startswith("# {") and out[-1].shown is None:
                out[-1] = Command(out[-1].text, line[2:])
            continue
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\") or not _complete(pending):
            continue
        if pending.strip():
            out.append(Command(pending, None))
        pending = ""
    assert not pending, f"the README has an unfinished command: {pending!r}"
    return out


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # a quote still open
        return False
    return True


def readme_commands() -> list[Command]:
    return [c for block in fenced_blocks(README.read_text(), ("bash", "sh")) for c in commands(block)]


def fit_script() -> str:
    (script,) = [b for b in fenced_blocks(README.read_text(), ("python",)) if b.startswith("# fit.py")]
    return script


# ---- a fresh copy -----------------------------------------------------------------------------


def tracked_files() -> list[str]:
    """What a clone holds: the tracked files (and new ones not yet committed, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({f for f in listed.split("\0") if f and (REPO_ROOT / f).is_file()})


def fresh_copy(target: Path) -> Path:
    """The tracked files under `target`, with the project's .venv linked in. Every file dated before
    the venv's stamp: a clone's files are all new, and `make` would rebuild the venv from the lock."""
    stamp = STAMP.stat().st_mtime
    for name in tracked_files():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / name, path)
        shutil.copymode(REPO_ROOT / name, path)
        os.utime(path, (stamp - 60, stamp - 60))
    (target / ".venv").symlink_to((REPO_ROOT / ".venv").resolve(), target_is_directory=True)
    return target


def newcomer_env() -> dict[str, str]:
    """A laptop shell's environment: nothing of the runtime's, MLServer's, an outer make's or a pod's."""
    return {k: v for k, v in clean_environ().items() if k not in NOT_A_SHELLS}


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=newcomer_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass(frozen=True)
class Hint:
    curl: str
    answer: dict[str, Any]


def packager_hint(stdout: str) -> Hint:
    """The curl line the packager printed and the answer it printed under it."""
    lines = stdout.splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.startswith("curl ")]
    answers = [line[2:] for line in lines[index + 1 :] if line.startswith("# {")]
    assert answers, stdout
    return Hint(lines[index], json.loads(answers[0]))


@dataclass
class Copy:
    root: Path
    hint: Hint  # the packager's, for the model packaged without --reference


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Copy:
    """A fresh copy where the README's "Serve your own model" lines have run as written, and the same
    pipeline has been packaged without --reference."""
    root = fresh_copy(tmp_path_factory.mktemp("newcomer") / "pipeline-runtime")
    (root / "fit.py").write_text(fit_script())
    setup = [c.text for c in readme_commands() if c.text.startswith(".venv/bin/python ")]
    assert any("--reference" in c for c in setup), setup  # the README packages its model
    for command in setup:
        done = run(command, root)
        assert done.returncode == 0, (command, done.stderr)
    done = run(f".venv/bin/python -m pipeline_tools.package rent.joblib --name {NO_REFERENCE} --version 1", root)
    assert done.returncode == 0, done.stderr
    return Copy(root, packager_hint(done.stdout))


def served(root: Path) -> list[tuple[str, str | None]]:
    """Every version under models/ (name, version), and the unversioned diabetes."""
    versions = [(p.parent.parent.name, p.parent.name) for p in (root / "models").glob("*/*/model-settings.json")]
    return [*versions, ("diabetes", None)]


@pytest.fixture(scope="module")
def make_serve(copy: Copy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`make serve` in the copy, on free ports (the MLSERVER_*_PORT variables it documents)."""
    server = start_make(copy.root, "serve", tmp_path_factory.mktemp("make-serve"), served(copy.root))
    yield server
    server.kill()


def start_make(root: Path, target: str, logs: Path, ready: list[tuple[str, str | None]]) -> Server:
    """`make TARGET` in the copy, as a shell runs it, until `ready` are."""
    return Server.start(logs / f"{target}.log", root=root, models=ready, argv=["make", target], base_env=newcomer_env())


def port_in(command: str, server: Server) -> str:
    assert SHOWN_PORT in command, command
    return command.replace(SHOWN_PORT, f"localhost:{server.http_port}")


def answer_of(command: str, root: Path, server: Server) -> Any:
    done = run(port_in(command, server), root)
    assert done.returncode == 0, (command, done.stderr)
    return json.loads(done.stdout)


def assert_shown(got: dict[str, Any], shown: dict[str, Any], command: str) -> None:
    """The answer as the README shows it: the same outputs (or predictions) and model version."""
    for key in ("model_version", "version"):
        if key in shown:
            assert got[key] == shown[key], command
    for output in shown.get("outputs", []):
        (same,) = [o for o in got["outputs"] if o["name"] == output["name"]]
        np.testing.assert_allclose(same["data"], output["data"], rtol=1e-9, err_msg=command)
    if "predictions" in shown:
        np.testing.assert_allclose(got["predictions"], shown["predictions"], rtol=1e-9, err_msg=command)


# ---- make serve ---------------------------------------------------------------------------------


def test_every_curl_line_of_the_readme_answers_as_shown(copy: Copy, make_serve: Server) -> None:
    curls = [c for c in readme_commands() if c.text.startswith("curl ") and FEATURES_MODEL not in c.text]
    assert len(curls) >= 5, curls
    for curl in curls:
        got = answer_of(curl.text, copy.root, make_serve)
        assert isinstance(got, dict) and "error" not in got and "detail" not in got, (curl.text, got)
        if curl.shown is not None:
            assert_shown(got, json.loads(curl.shown), curl.text)


def test_the_packagers_hint_runs_and_answers_what_it_printed(copy: Copy, make_serve: Server) -> None:
    makefile_port = re.search(r"^export MLSERVER_HTTP_PORT \?= (\d+)$", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert makefile_port is not None and SHOWN_PORT == f"localhost:{makefile_port.group(1)}"
    got = answer_of(copy.hint.curl, copy.root, make_serve)
    assert got["outputs"] == copy.hint.answer["outputs"]
    words = shlex.split(copy.hint.curl)
    row = json.loads(words[words.index("-d") + 1])
    area = next(t for t in row["inputs"] if t["name"] == "area")["data"][0]
    assert 20 < area < 150  # the imputer's mean of the training areas, not zero


def test_the_class_order_is_where_the_readme_says(make_serve: Server) -> None:
    metadata = requests.get(f"{make_serve.http_url}/v2/models/breast-cancer", timeout=10).json()
    classes = json.loads(metadata["parameters"]["classes"])
    row = {"features": [np.zeros(30).tolist()]}
    answer = requests.post(f"{make_serve.http_url}/predict/breast-cancer", json=row, timeout=10).json()
    assert classes == answer["classes"] == [0, 1] and len(answer["probabilities"][0]) == len(classes)


def test_rollout_without_a_name_or_a_cluster_says_what_to_do(copy: Copy) -> None:
    rollout = ".venv/bin/python -m pipeline_tools.rollout"
    unnamed = run(f"{rollout} status", copy.root)
    assert unnamed.returncode == 2 and "needs --name NAME" in unnamed.stderr, unnamed.stderr
    nowhere = run(f"KUBECONFIG=/nonexistent {rollout} --name diabetes status", copy.root)
    assert nowhere.returncode == 1, nowhere.stderr
    assert "no usable kubeconfig" in nowhere.stderr and "--dry-run --mode" in nowhere.stderr, nowhere.stderr


def test_the_hint_follows_the_port_make_serve_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSERVER_HTTP_PORT", raising=False)
    assert f"localhost:{package.serve_port()}" == SHOWN_PORT
    monkeypatch.setenv("MLSERVER_HTTP_PORT", "9080")
    assert package.serve_port() == 9080


@pytest.mark.parametrize(
    "path",
    ["/v2/models/diabetes/infer", "/v2/models/diabetes/versions/2/infer", "/predict", "/predict/breast-cancer"],
)
def test_an_empty_body_is_the_runtimes_400(make_serve: Server, path: str) -> None:
    for body in (b"", b" \n"):
        resp = requests.post(make_serve.http_url + path, data=body, headers={"content-type": "application/json"})
        assert resp.status_code == 400, resp.text
        assert set(resp.json()) == {"error"} and "no body" in resp.json()["error"], resp.text


def test_curl_naming_a_missing_file_gets_the_runtimes_400(copy: Copy, make_serve: Server) -> None:
    url = f"localhost:{make_serve.http_port}/v2/models/diabetes/versions/2/infer"
    done = run(f"curl -s {url} -H 'content-type: application/json' -d @missing.json -w ' %{{http_code}}'", copy.root)
    body, status = done.stdout.rsplit(" ", 1)
    assert status == "400" and "no body" in json.loads(body)["error"], done.stdout


def test_a_default_start_warns_only_of_what_the_user_may_fix(make_serve: Server) -> None:
    """No warning of MLServer's about the layout (the alias's folder is its name); the one warning
    left is the open repository API, which says how to close it."""
    warnings = [r for r in make_serve.log_records() if r.get("level") in ("WARNING", "ERROR", "CRITICAL")]
    assert [r["logger"] for r in warnings] == ["runtime.policy.admin"], warnings
    assert "set PIPELINE_ADMIN_TOKENS" in warnings[0]["message"], warnings


def ctrl_c(server: Server) -> float:
    """SIGINT to the whole process group, as a terminal sends Ctrl-C: the seconds until `make` exits."""
    return stop(server, lambda: os.killpg(server.proc.pid, signal.SIGINT))


def stop(server: Server, send: Callable[[], None], timeout_s: float = 20.0) -> float:
    """The seconds from `send` (a signal) until `make` exits; whatever is left of its group is then killed."""
    send()
    started = time.monotonic()
    exited = server.wait_exit(timeout_s)
    took = time.monotonic() - started
    server.kill()
    assert exited is not None, f"still running {timeout_s}s after Ctrl-C; log tail:\n{server.log_tail()}"
    return took


def test_ctrl_c_stops_make_serve_at_once(make_serve: Server) -> None:
    """At once and quietly: the whole session's log (every test above ran against this server) holds
    no traceback, from the start to the stop."""
    took = ctrl_c(make_serve)
    assert took < CTRL_C_LIMIT_S, (took, make_serve.log_tail())
    assert "Traceback" not in make_serve.log_text(), make_serve.log_tail()


# ---- make serve-features ------------------------------------------------------------------------


def break_a_version(root: Path) -> Path:
    """A copy of diabetes/1 whose model artifact no longer matches its manifest's sha256."""
    target = root / "models" / BROKEN / "1"
    shutil.copytree(root / "models" / "diabetes" / "1", target)
    settings = json.loads((target / "model-settings.json").read_text())
    (target / "model-settings.json").write_text(json.dumps({**settings, "name": BROKEN}))
    with (target / "model.skops").open("ab") as artifact:
        artifact.write(b"\0")
    return target


def test_make_serve_features_serves_what_loads_and_names_what_it_skips(
    copy: Copy, make_serve: Server, tmp_path: Path
) -> None:
    if make_serve.proc.poll() is None:  # its models/ gains a version that does not load
        ctrl_c(make_serve)
    break_a_version(copy.root)
    ready = [m for m in served(copy.root) if m[0] != BROKEN] + [(FEATURES_MODEL, None)]
    server = start_make(copy.root, "serve-features", tmp_path, ready)
    try:
        skipped = [line for line in server.log_text().splitlines() if line.startswith("skipping ")]
        assert len(skipped) == 1 and skipped[0].startswith(f"skipping models/{BROKEN}/1: "), skipped
        curls = [c for c in readme_commands() if c.text.startswith("curl ") and FEATURES_MODEL in c.text]
        assert curls
        for curl in curls:
            got = answer_of(curl.text, copy.root, server)
            assert "error" not in got and got["outputs"], got
        # The unversioned diabetes: the version `make serve` gives it (README: "model_version":"1").
        body = json.loads((copy.root / "request.json").read_text())
        unversioned = requests.post(f"{server.http_url}/v2/models/diabetes/infer", json=body, timeout=10)
        assert unversioned.status_code == 200 and unversioned.json()["model_version"] == "1", unversioned.text
    finally:
        # SIGTERM to make alone, as `kill` or an IDE's stop button sends it: make passes it on, and
        # outside a pod the drain has no delay (it had 5 s, meant for Kubernetes' endpoints).
        took = stop(server, lambda: server.proc.send_signal(signal.SIGTERM))
    assert took < SIGTERM_LIMIT_S, took
