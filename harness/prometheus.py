"""A throw-away real Prometheus for tests: the distribution's server (installed with apt-get when
missing), its own config and TSDB in a fresh temp dir, listening on 127.0.0.1:<free port>, scraping
the jobs it is given every second, stopped and deleted at the end. No mocked Prometheus.

    prom = start_prometheus({"stable": ["127.0.0.1:9082"], "canary": ["127.0.0.1:9182"]})
    prom.wait_targets_up()
    prom.query('sum(pipeline_requests_total{job="canary"})')   # [(labels, value), ...]
    prom.close()

Design (as harness.postgres):
- Debian's package installs /usr/bin/prometheus and a systemd unit; the unit is irrelevant (the
  package's policy-rc.d / no systemd keep it from starting here, and nothing depends on it): this
  module runs its own process, in the foreground, in its own process group.
- As root the server runs as the unprivileged `nobody` (Popen user/group, no wrapper process);
  only the TSDB directory is handed to it. Prometheus does not refuse root, but a test has no
  reason to give it more than it needs.
- Every wait is bounded; a failure raises RuntimeError with the tail of the server's log.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.server import HOST, free_ports, stop_group

BINARY = "prometheus"
PACKAGE = "prometheus"
SERVICE_USER = "nobody"
SERVICE_GROUP = "nogroup"
INSTALL_TIMEOUT_S = 900.0
APT_UPDATE_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

_CONFIG = """# harness.prometheus: a throw-away server for one test run.
global:
  scrape_interval: {interval}
  scrape_timeout: {timeout}
  evaluation_interval: {interval}
scrape_configs:
{jobs}"""

_JOB = """  - job_name: {name}
    metrics_path: {path}
    static_configs:
      - targets: {targets}
"""

Log = Callable[[str], None]
Vector = list[tuple[dict[str, str], float]]


# ------------------------------------------------------------------------------ installation


def _apt_get(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        return subprocess.run(
            [*prefix, "apt-get", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(args, 1, "", f"apt-get {' '.join(args)}: {exc}")


def ensure_package(binary: str, package: str, log: Log = print) -> str:
    """The path of `binary`, installing the distribution's `package` first when it is missing
    (apt-get update once if the install fails: a fresh machine's lists may be missing or stale)."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return found
    log(f"{binary} is not installed: apt-get install {package}")
    install = ["install", "-y", "-qq", package]
    done = _apt_get(install, INSTALL_TIMEOUT_S)
    if done.returncode != 0:
        _apt_get(["update", "-qq"], APT_UPDATE_TIMEOUT_S)
        done = _apt_get(install, INSTALL_TIMEOUT_S)
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if done.returncode != 0 or not found:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise RuntimeError(
            f"installing {package} failed: `apt-get {' '.join(install)}` exited "
            f"{done.returncode}, no `{binary}` on the PATH:\n{output}"
        )
    return found


def ensure_installed(log: Log = print) -> str:
    return ensure_package(BINARY, PACKAGE, log)


def service_ids() -> tuple[int, int] | None:
    """(uid, gid) the servers run as: nobody/nogroup when this process is root, else None (the
    current user)."""
    if os.geteuid() != 0:
        return None
    try:
        gid = grp.getgrnam(SERVICE_GROUP).gr_gid
    except KeyError:
        gid = pwd.getpwnam(SERVICE_USER).pw_gid
    return pwd.getpwnam(SERVICE_USER).pw_uid, gid


def hand_over(path: Path, ids: tuple[int, int] | None, mode: int) -> None:
    if ids is not None:
        os.chown(path, *ids)
    os.chmod(path, mode)


def spawn_service(
    argv: list[str], cwd: Path, log_file: IO[bytes], ids: tuple[int, int] | None
) -> subprocess.Popen[bytes]:
    """`argv` in `cwd` as the user and group `ids` (None: this process's), in its own process group,
    every line it writes in `log_file`."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        user=None if ids is None else ids[0],
        group=None if ids is None else ids[1],
        extra_groups=None if ids is None else [],
    )


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


# ------------------------------------------------------------------------------ the server


@dataclass
class Prometheus:
    """One server in `base` (prometheus.yml, data/, prometheus.log) on 127.0.0.1:`port`."""

    base: Path
    port: int
    jobs: dict[str, list[str]]
    proc: subprocess.Popen[bytes] = field(repr=False)
    _log_file: IO[bytes] | None = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "prometheus.log"

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def api(self, path: str, params: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        """GET /api/v1/<path>: its `data`, or RuntimeError with Prometheus's error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus /api/v1/{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> Vector:
        """An instant query: [(labels, value)] of its vector (a scalar as one unlabelled value)."""
        data = self.api("query", {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})})
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return targets

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = "no attempt yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with code {self.proc.returncode}; log tail:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout:.0f}s ({last}); log tail:\n{self.log_tail()}")

    def wait_targets_up(self, timeout: float = READY_TIMEOUT_S, scrapes: int = 1) -> None:
        """Until every target has been scraped successfully (`up` 1) `scrapes` times in a row or
        more: a query right after this sees every job's series."""
        deadline = time.monotonic() + timeout
        state: list[tuple[str, str, str]] = []
        while time.monotonic() < deadline:
            state = [(t["labels"].get("job", ""), t["scrapeUrl"], t["health"]) for t in self.targets()]
            wanted = sum(len(v) for v in self.jobs.values())
            if len(state) == wanted and all(health == "up" for _, _, health in state):
                counts = self.query(f"count_over_time(up[{max(scrapes, 1) * 2}s])")
                if len(counts) == wanted and all(v >= scrapes for _, v in counts):
                    return
            time.sleep(0.25)
        raise RuntimeError(f"prometheus targets not all up after {timeout:.0f}s: {state}\nlog tail:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (Prometheus shuts down cleanly), then SIGKILL to the group if it lingers."""
        stop_group(self.proc, self._log_file, signal.SIGTERM, STOP_TIMEOUT_S)
        self._log_file = None

    def close(self) -> None:
        """Stop and delete the temp dir. Safe to call twice."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def config_text(jobs: dict[str, list[str]], interval_s: float = 1.0, metrics_path: str = "/metrics") -> str:
    """prometheus.yml: one static job per name, scraping `metrics_path` on each host:port."""
    rendered = "".join(
        _JOB.format(name=name, path=metrics_path, targets=json.dumps(list(targets))) for name, targets in jobs.items()
    )
    interval = f"{int(interval_s * 1000)}ms"
    return _CONFIG.format(interval=interval, timeout=interval, jobs=rendered)


def start_prometheus(
    jobs: dict[str, list[str]],
    interval_s: float = 1.0,
    base_dir: Path | None = None,
    port: int | None = None,
    log: Log = print,
) -> Prometheus:
    """Install if missing, write the config, start, wait until /-/ready. `jobs`: job name ->
    ["host:port", ...] scraped on /metrics every `interval_s`."""
    binary = ensure_installed(log)
    ids = service_ids()
    base = Path(tempfile.mkdtemp(prefix="pipeline-prom-", dir=base_dir or "/tmp"))
    os.chmod(base, 0o755)  # mkdtemp's 0700 would lock the service user out
    data = base / "data"
    data.mkdir()
    hand_over(data, ids, 0o700)
    config = base / "prometheus.yml"
    config.write_text(config_text(jobs, interval_s))
    os.chmod(config, 0o644)
    port = port or free_ports(1)[0]
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={HOST}:{port}",
        "--storage.tsdb.retention.time=2h",
        "--log.level=warn",
    ]
    log_file = open(base / "prometheus.log", "wb")
    proc = spawn_service(argv, base, log_file, ids)
    prom = Prometheus(base=base, port=port, jobs={k: list(v) for k, v in jobs.items()}, proc=proc, _log_file=log_file)
    try:
        prom.wait_ready()
    except BaseException:
        prom.close()
        raise
    log(f"Prometheus on {prom.url} in {base}, scraping {sorted(jobs)} every {interval_s:g}s")
    return prom
