"""What the image does, reproduced without Docker. Marked `image_repro` (~1-2 min, mostly the venv).

- Build stage: deploy/install-venv.sh on requirements.lock, the runtime set alone, into a fresh venv (the
  script the Dockerfile runs; here pip may use its cache, the image build sets PIP_NO_CACHE_DIR). The
  venv's installed size is printed (visible without -s) and written to installed-size.json next to it.
- Final stage: every COPY replayed from the build context, as .dockerignore filters it, into a scratch
  root; the models directory laid out as KServe's storage initializer leaves /mnt/models for the
  diabetes InferenceService's storageUri.
- Container environment: the image's ENV, overlaid with the ServingRuntime's env and then the
  InferenceService's (KServe's merge order, {{.Name}} filled in), paths moved under the scratch root and
  ports moved to free loopback ports. Then the ENTRYPOINT runs in the WORKDIR.
- What the image serves: every module it holds imports in that environment, where neither the operator
  tools (pipeline_tools) nor the kubernetes package exist.
Not reproduced: the base image's OS, UID 1000 and file ownership (see docs/deploy.md, "What was validated offline").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from tests.deploy.deploy_support import (
    REPO,
    context_files,
    env_map,
    instructions,
    model_dir_for,
    parse_copies,
    parse_env,
    read_dockerfile,
    read_dockerignore,
)
from tests.deploy.test_dockerfile import RUNTIME_LOCK, canonical, read_lock

pytestmark = pytest.mark.image_repro

FINAL_STAGE = read_dockerfile()[-1]
RUNTIME = yaml.safe_load((REPO / "kserve/base/runtime/servingruntime.yaml").read_text())
ISVC = yaml.safe_load((REPO / "kserve/base/diabetes/inferenceservice.yaml").read_text())
MODEL_DIR = model_dir_for(ISVC["spec"]["predictor"]["model"]["storageUri"])
MANIFEST = json.loads((MODEL_DIR / "manifest.json").read_text())
# Environment variables that name files, so they move under the scratch root.
PATH_VARIABLES = ("PYTHONPATH", "MLSERVER_MODELS_DIR", "MLSERVER_METRICS_DIR", "MLSERVER_MODEL_URI")
# OpenBLAS needs these on some processors (see the machine notes); the image's host would set them too.
HOST_PASSTHROUGH = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


@dataclass
class Container:
    root: Path
    workdir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    # Every file under the workdir and the models dir before the server started.
    baseline: frozenset[str] = frozenset()

    def port(self, kind: str) -> int:
        return int(self.env[f"MLSERVER_{kind}_PORT"])

    def exec(self, command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        """Run a command as `docker exec` (or a kubelet exec probe) would: container env and workdir,
        absolute paths of the image's files resolved inside the scratch root."""
        in_root = [str(self.root / a[1:]) if a.startswith("/") and (self.root / a[1:]).exists() else a for a in command]
        return subprocess.run(
            in_root, cwd=self.workdir, env={**self.env, **env}, capture_output=True, text=True, timeout=30
        )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def installed_size(venv: Path) -> dict[str, int]:
    """Bytes of the files under the venv and under its site-packages (apparent sizes, each file once, as
    an image layer stores them) and the number of files."""
    seen: set[int] = set()
    sizes = {"venv_bytes": 0, "site_packages_bytes": 0, "files": 0}
    for directory, _, names in os.walk(venv):
        in_site_packages = "site-packages" in Path(directory).relative_to(venv).parts
        for name in names:
            stat = os.lstat(os.path.join(directory, name))
            if stat.st_ino in seen:
                continue
            seen.add(stat.st_ino)
            sizes["venv_bytes"] += stat.st_size
            sizes["site_packages_bytes"] += stat.st_size if in_site_packages else 0
            sizes["files"] += 1
    return sizes


@pytest.fixture(scope="session")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    venv = tmp_path_factory.mktemp("image") / "opt-venv"
    build = subprocess.run(
        ["sh", str(REPO / "deploy" / "install-venv.sh"), str(venv), str(RUNTIME_LOCK)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if build.returncode != 0:
        pytest.fail(f"install-venv.sh failed:\n{build.stderr[-4000:]}")
    # Measured before anything runs from it (the container's PYTHONDONTWRITEBYTECODE keeps it so).
    size = {"lock": RUNTIME_LOCK.name, "packages": len(read_lock(RUNTIME_LOCK)), **installed_size(venv)}
    (venv.parent / "installed-size.json").write_text(json.dumps(size, indent=2) + "\n")
    print(f"image venv: {size}")
    yield venv
    shutil.rmtree(venv, ignore_errors=True)  # ~500 MB


def test_the_image_venv_is_the_runtime_lock_alone_and_its_size_is_reported(
    image_venv: Path, capsys: pytest.CaptureFixture[str], record_property: Any
) -> None:
    python = str(image_venv / "bin" / "python")
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    installed = {canonical(d["name"]): d["version"] for d in json.loads(listed.stdout)}
    # pip itself is the only package the lock does not name (install-venv.sh upgrades it first).
    assert {name: v for name, v in installed.items() if name != "pip"} == {
        name: pin.version for name, pin in read_lock(RUNTIME_LOCK).items()
    }
    # install-venv.sh installs with --no-deps: pip check proves the runtime set is closed, but for the one
    # conflict pyproject.toml's [tool.uv] overrides make on purpose (MLServer 1.7.1 declares fastapi<0.116).
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    (conflict,) = check.stdout.splitlines() or [check.stderr]
    fastapi = read_lock(RUNTIME_LOCK)["fastapi"].version
    assert conflict.startswith("mlserver 1.7.1 has requirement fastapi") and conflict.endswith(
        f"but you have fastapi {fastapi}."
    ), check.stdout + check.stderr
    report = image_venv.parent / "installed-size.json"
    size = json.loads(report.read_text())
    for key, value in size.items():
        record_property(f"image_venv_{key}", value)
    with capsys.disabled():
        print(
            f"\nimage venv from {size['lock']} ({size['packages']} packages): "
            f"{size['venv_bytes'] / 1e6:.1f} MB installed (site-packages "
            f"{size['site_packages_bytes'] / 1e6:.1f} MB, {size['files']} files): {report}"
        )


def replay_final_stage(root: Path) -> Path:
    """Copy what the final stage COPYs from the build context into root; return the WORKDIR there."""
    rules = read_dockerignore()
    workdir = Path(instructions(FINAL_STAGE, "WORKDIR")[-1])
    for copy in parse_copies(FINAL_STAGE):
        if "from" in copy.flags:
            continue  # /opt/venv comes from the image_venv fixture
        dest = root / (workdir / copy.dest).relative_to("/")
        for source in copy.sources:
            for file in context_files(source, rules):
                inner = Path(file).relative_to(source) if (REPO / source).is_dir() else Path(file).name
                target = dest / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / file, target)
                if "chmod" in copy.flags:
                    target.chmod(int(copy.flags["chmod"], 8))
    return root / workdir.relative_to("/")


def container_env(root: Path, venv: Path, workdir: Path) -> dict[str, str]:
    env = {**parse_env(FINAL_STAGE), **env_map(RUNTIME["spec"]["containers"][0]["env"])}
    env.update(env_map(ISVC["spec"]["predictor"]["model"].get("env")))
    env = {key: value.replace("{{.Name}}", ISVC["metadata"]["name"]) for key, value in env.items()}
    for key in PATH_VARIABLES:
        env[key] = str(root / env[key].lstrip("/"))
    # The image's PATH: the venv, the base image's /usr/local/bin (entrypoint, healthcheck), the system's.
    assert env["PATH"] == "/opt/venv/bin:$PATH"
    env["PATH"] = os.pathsep.join([str(venv / "bin"), str(root / "usr/local/bin"), os.environ["PATH"]])
    http, grpc, metrics = free_ports(3)
    env.update(
        MLSERVER_HOST="127.0.0.1",  # the image listens on 0.0.0.0; a test stays on loopback
        MLSERVER_HTTP_PORT=str(http),
        MLSERVER_GRPC_PORT=str(grpc),
        MLSERVER_METRICS_PORT=str(metrics),
        HOME=str(workdir),  # useradd --home-dir
    )
    return {**{k: os.environ[k] for k in HOST_PASSTHROUGH if k in os.environ}, **env}


def start(root: Path, workdir: Path, env: dict[str, str], log: Path) -> Container:
    entrypoint = json.loads(instructions(FINAL_STAGE, "ENTRYPOINT")[-1])
    with log.open("wb") as out:
        process = subprocess.Popen(
            entrypoint, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    container = Container(root, workdir, env, process, log)
    healthcheck = json.loads(instructions(FINAL_STAGE, "HEALTHCHECK")[-1].split(" CMD ", 1)[1])
    deadline = time.monotonic() + START_TIMEOUT_S
    while container.exec(healthcheck).returncode != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            stop(container)
            pytest.fail(f"the container never became healthy (exit {process.returncode}):\n{container.log_tail()}")
        time.sleep(0.5)
    return container


def stop(container: Container) -> int | None:
    """SIGTERM, as Kubernetes and `docker stop` send it; SIGKILL the group if it does not exit in time."""
    if container.process.poll() is None:
        container.process.send_signal(signal.SIGTERM)
    try:
        return container.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(container.process.pid, signal.SIGKILL)
        container.process.wait(timeout=STOP_TIMEOUT_S)
        return None


def files_under(*roots: Path) -> frozenset[str]:
    return frozenset(str(p) for root in roots for p in root.rglob("*"))


@pytest.fixture(scope="module")
def kserve_pod(image_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The diabetes InferenceService's container: storageUri's model directory mounted at /mnt/models."""
    root = tmp_path_factory.mktemp("kserve-pod")
    workdir = replay_final_stage(root)
    env = container_env(root, image_venv, workdir)
    shutil.copytree(MODEL_DIR, env["MLSERVER_MODELS_DIR"])
    baseline = files_under(workdir, Path(env["MLSERVER_MODELS_DIR"]))
    container = start(root, workdir, env, root / "container.log")
    container.baseline = baseline
    yield container
    stop(container)


def features(rows: int) -> np.ndarray:
    """Rows inside the training range of every feature (the manifest records it)."""
    low, high = (np.array(MANIFEST["feature_ranges"][k]) for k in ("min", "max"))
    return np.random.default_rng(7).uniform(low, high, size=(rows, len(low)))


# Imports every module named in argv[1] (JSON), then reports which of the absent packages could be found
# or were loaded on the way.
IMPORT_PROBE = """
import importlib, importlib.util, json, sys
served = json.loads(sys.argv[1])
for name in served:
    importlib.import_module(name)
absent = ("pipeline_tools", "kubernetes")
print(json.dumps({
    "imported": len(served),
    "findable": [n for n in absent if importlib.util.find_spec(n) is not None],
    "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(absent)),
}))
"""


def test_everything_the_image_serves_imports_without_operator_tools_or_kubernetes(
    image_venv: Path, tmp_path: Path
) -> None:
    workdir = replay_final_stage(tmp_path)
    env = container_env(tmp_path, image_venv, workdir)
    served = sorted(
        ".".join(p.relative_to(workdir).with_suffix("").parts).removesuffix(".__init__")
        for p in (workdir / "runtime").rglob("*.py")
    )
    assert {"runtime.model", "runtime.core.predictor", "runtime.integration.startup"} <= set(served)
    assert not (workdir / "pipeline_tools").exists()
    done = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", IMPORT_PROBE, json.dumps(served)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"imported": len(served), "findable": [], "loaded": []}


def test_the_entrypoint_execs_mlserver_on_the_models_dir(kserve_pod: Container) -> None:
    # exec: MLServer itself is the container's main process and receives SIGTERM directly.
    cmdline = Path(f"/proc/{kserve_pod.process.pid}/cmdline").read_bytes().split(b"\0")
    assert b"start" in cmdline and kserve_pod.env["MLSERVER_MODELS_DIR"].encode() in cmdline
    assert any(arg.endswith(b"mlserver") for arg in cmdline)


def test_healthcheck_and_both_runtime_probes_pass_and_fail_on_a_dead_port(kserve_pod: Container) -> None:
    container_spec = RUNTIME["spec"]["containers"][0]
    probes = [container_spec[p]["exec"]["command"] for p in ("readinessProbe", "livenessProbe")]
    healthcheck = json.loads(instructions(FINAL_STAGE, "HEALTHCHECK")[-1].split(" CMD ", 1)[1])
    for command in [healthcheck, *probes]:
        assert kserve_pod.exec(command).returncode == 0, command
        dead = kserve_pod.exec(command, MLSERVER_HTTP_PORT=str(free_ports(1)[0]))
        assert dead.returncode == 1 and "healthcheck" in dead.stderr


def test_rest_and_grpc_answer_the_same_predictions(kserve_pod: Container) -> None:
    x = features(5)
    rest = httpclient.InferenceServerClient(f"127.0.0.1:{kserve_pod.port('HTTP')}")
    rest_input = httpclient.InferInput("X", list(x.shape), "FP64")
    rest_input.set_data_from_numpy(x, binary_data=False)
    rest_result = rest.infer("diabetes", [rest_input])
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{kserve_pod.port('GRPC')}")
    grpc_input = grpcclient.InferInput("X", list(x.shape), "FP64")
    grpc_input.set_data_from_numpy(x)
    grpc_result = grpc.infer("diabetes", [grpc_input])
    try:
        for response in (rest_result.get_response(), grpc_result.get_response(as_json=True)):
            assert (response["model_name"], response["model_version"]) == ("diabetes", MODEL_DIR.name)
        rest_y, grpc_y = rest_result.as_numpy("predict"), grpc_result.as_numpy("predict")
        assert rest_y.shape == (5,) and np.isfinite(rest_y).all()
        np.testing.assert_allclose(rest_y, grpc_y, rtol=0, atol=0)
        assert rest.get_model_metadata("diabetes")["inputs"][0]["shape"] == [
            -1,
            len(MANIFEST["feature_names"]),
        ]
    finally:
        rest.close()
        grpc.close()


def http(container: Container, kind: str, path: str, body: dict[str, Any] | None = None) -> bytes:
    """One loopback request to the container (no proxy), POST when there is a body."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{container.port(kind)}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        assert response.status == 200
        return response.read()


def test_metrics_port_serves_prometheus_metrics(kserve_pod: Container) -> None:
    assert b"# TYPE " in http(kserve_pod, "METRICS", kserve_pod.env["MLSERVER_METRICS_ENDPOINT"])


def test_serving_writes_nothing_into_the_code_or_the_models(kserve_pod: Container) -> None:
    # In the image both are read-only for UID 1000; here (as root) any write would show up as a new file.
    now = files_under(kserve_pod.workdir, Path(kserve_pod.env["MLSERVER_MODELS_DIR"]))
    assert now == kserve_pod.baseline


def test_sigterm_stops_the_container_cleanly(kserve_pod: Container) -> None:
    """Runs last in this module: it stops the module's container."""
    assert stop(kserve_pod) == 0, kserve_pod.log_tail()
    with pytest.raises(ProcessLookupError):  # no worker or child left behind in its process group
        os.killpg(kserve_pod.process.pid, 0)
    assert "Traceback" not in kserve_pod.log_tail()


def repository_index(container: Container) -> list[dict[str, Any]]:
    return json.loads(http(container, "HTTP", "/v2/repository/index", body={}))


def test_the_baked_in_models_serve_standalone(image_venv: Path, tmp_path: Path) -> None:
    """docker run -e MLSERVER_MODELS_DIR=/opt/mlserver IMAGE: what `make serve` serves."""
    workdir = replay_final_stage(tmp_path)
    env = {**container_env(tmp_path, image_venv, workdir), "MLSERVER_MODELS_DIR": str(workdir)}
    container = start(tmp_path, workdir, env, tmp_path / "container.log")
    try:
        served = {(m["name"], m.get("version", "")) for m in repository_index(container) if m["state"] == "READY"}
    finally:
        assert stop(container) == 0
    shipped = {(p.parent.name, p.name) for p in (REPO / "models").glob("*/*") if p.is_dir()}
    assert shipped <= served and ("diabetes", "") in served  # plus the unversioned stable alias


def test_a_mount_without_model_settings_is_served_from_the_runtime_env(image_venv: Path, tmp_path: Path) -> None:
    """A storageUri holding only the artifacts: MLServer builds the model from MLSERVER_MODEL_* env."""
    workdir = replay_final_stage(tmp_path)
    env = container_env(tmp_path, image_venv, workdir)
    shutil.copytree(MODEL_DIR, env["MLSERVER_MODELS_DIR"], ignore=shutil.ignore_patterns("model-settings.json"))
    container = start(tmp_path, workdir, env, tmp_path / "container.log")
    try:
        names = {m["name"] for m in repository_index(container) if m["state"] == "READY"}
    finally:
        assert stop(container) == 0
    assert names == {ISVC["metadata"]["name"]}
