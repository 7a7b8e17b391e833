"""THE server under test: `mlserver start .` (or another V2 server command) in a directory, on
free loopback ports, as a subprocess in its own process group, every line it writes in one log.

Imports no protobuf module: the gRPC readiness probe sends ServerReady as raw bytes, so a process
that must not register tritonclient's or kserve's V2 symbols can still use it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
import requests

from harness.models import REPO_ROOT, served_models

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 90.0
SHUTDOWN_TIMEOUT_S = 15.0
# A server that lost a port to another process in the moment between free_ports() and its bind.
_PORT_RACE = ("address already in use", "failed to bind")

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports, none handed out before in this process (servers launched
    side by side must not pick each other's ports before binding them)."""
    with _ports_lock:
        ports: list[int] = []
        for _ in range(50 * n):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                ports.append(port)
                if len(ports) == n:
                    return ports
        raise RuntimeError(f"no {n} fresh free ports found")


def mlserver_executable() -> str:
    candidate = Path(sys.executable).with_name("mlserver")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("mlserver")
    if not found:
        raise RuntimeError("the `mlserver` executable is not installed next to this Python")
    return found


def clean_environ(environ: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what configures MLServer, KServe or the runtime, so
    nothing from a developer's shell leaks into a server under test."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith(("MLSERVER_", "PIPELINE_", "KSERVE_"))}


def stop_group(
    proc: subprocess.Popen[bytes], log_file: IO[bytes] | None = None, first: int | None = None, grace_s: float = 10.0
) -> None:
    """`first` (a signal) to the process and up to `grace_s` for it to exit, then SIGKILL to its
    whole process group (started with start_new_session), and its log file closed."""
    if first is not None and proc.poll() is None:
        proc.send_signal(first)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=10)
    if log_file is not None:
        log_file.close()


@dataclass(frozen=True)
class _Launch:
    """What Server.launch was given and a relaunch repeats."""

    env: dict[str, str] | None = None
    base_env: dict[str, str] | None = None
    argv: list[str] | None = None


def _spawn(
    spec: _Launch, root: Path, log_path: Path, append: bool
) -> tuple[subprocess.Popen[bytes], IO[bytes], tuple[int, int, int]]:
    """The server process of `spec` on three free ports: the process, its open log file and the
    ports (http, grpc, metrics)."""
    http_port, grpc_port, metrics_port = free_ports(3)
    ports = {"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port}
    full_env = dict(clean_environ() if spec.base_env is None else spec.base_env)
    full_env.update(spec.env or {})
    full_env.update(
        MLSERVER_HOST=HOST,
        MLSERVER_HTTP_PORT=str(http_port),
        MLSERVER_GRPC_PORT=str(grpc_port),
        MLSERVER_METRICS_PORT=str(metrics_port),
        PYTHONUNBUFFERED="1",
    )
    argv = spec.argv or [mlserver_executable(), "start", "."]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab" if append else "wb")
    proc = subprocess.Popen(
        [a.format(**ports) for a in argv],
        cwd=root,
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,  # every line the server writes lands in one log
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its worker processes share a group we can signal
    )
    return proc, log_file, (http_port, grpc_port, metrics_port)


@dataclass
class Server:
    """A V2 server subprocess. Build it with `launch` (returns at once, so several can start side
    by side) or `start` (launch + wait_ready); end it with `stop` (graceful) or `kill`."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    root: Path = REPO_ROOT
    # (name, version) whose readiness wait_ready checks; version None = an unversioned model.
    models: tuple[tuple[str, str | None], ...] = ()
    _launch: _Launch = field(repr=False, default=_Launch())
    _log_file: IO[bytes] | None = field(repr=False, default=None)

    # ------------------------------------------------------------------ addresses

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def http_hostport(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def launch(
        cls,
        log_path: Path,
        root: Path = REPO_ROOT,
        models: Iterable[tuple[str, str | None]] = (),
        env: dict[str, str] | None = None,
        base_env: dict[str, str] | None = None,
        argv: Sequence[str] | None = None,
    ) -> Server:
        """Start without waiting. The environment is `base_env` (default: clean_environ()) updated
        with `env` and the ports (MLSERVER_HOST/HTTP_PORT/GRPC_PORT/METRICS_PORT). `argv` defaults
        to `mlserver start .` run in `root`; "{http_port}", "{grpc_port}" and "{metrics_port}" in
        it are replaced by the ports (for servers that take them as flags)."""
        spec = _Launch(env, base_env, None if argv is None else list(argv))
        root, log_path = Path(root), Path(log_path)
        proc, log_file, (http_port, grpc_port, metrics_port) = _spawn(spec, root, log_path, append=False)
        return cls(proc, log_path, http_port, grpc_port, metrics_port, root, tuple(models), spec, log_file)

    def _respawn(self) -> None:
        """The same launch on fresh ports, appending to the log: the lost port race stays in it."""
        self.proc, self._log_file, (self.http_port, self.grpc_port, self.metrics_port) = _spawn(
            self._launch, self.root, self.log_path, append=True
        )

    @classmethod
    def start(cls, log_path: Path, **launch_kwargs: Any) -> Server:
        """Launch and wait until ready (default: the repository itself, every shipped model)."""
        launch_kwargs.setdefault("models", served_models())
        server = cls.launch(log_path, **launch_kwargs)
        try:
            server.wait_ready()
        except BaseException:
            server.kill()
            raise
        return server

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S, relaunch_on_port_race: bool = True) -> None:
        """Until /v2/health/ready, each of `models`' ready routes and gRPC ServerReady answer.
        A server that exits because another process took one of its ports meanwhile is
        relaunched once on fresh ports."""
        try:
            self._wait_ready(timeout)
        except RuntimeError:
            lost_port = self.proc.poll() is not None and any(m in self.log_text().lower() for m in _PORT_RACE)
            if not (relaunch_on_port_race and lost_port):
                raise
            self.kill()
            self._respawn()
            self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        urls = self._ready_urls()
        last = "no attempt yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with code {self.proc.returncode} before becoming ready;"
                    f" log tail:\n{self.log_tail()}"
                )
            try:
                pending = [u for u in urls if requests.get(u, timeout=2).status_code != 200]
                if not pending and self.grpc_ready():
                    return
                last = f"not ready yet: {pending or 'gRPC ServerReady'}"
            except (requests.RequestException, grpc.RpcError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise RuntimeError(f"server not ready after {timeout:.0f}s ({last}); log tail:\n{self.log_tail()}")

    def _ready_urls(self) -> list[str]:
        urls = [f"{self.http_url}/v2/health/ready"]
        for name, version in self.models:
            if version is None:
                urls.append(f"{self.http_url}/v2/models/{name}/ready")
            else:
                urls.append(f"{self.http_url}/v2/models/{name}/versions/{version}/ready")
        return urls

    def grpc_ready(self, timeout: float = 2.0) -> bool:
        """gRPC ServerReady, as raw bytes: an empty request; ServerReadyResponse{ready: true} is
        field 1 (varint) = 1, i.e. b"\\x08\\x01"."""
        with grpc.insecure_channel(self.grpc_url) as channel:
            call = channel.unary_unary(
                "/inference.GRPCInferenceService/ServerReady",
                request_serializer=lambda _: b"",
                response_deserializer=lambda data: data,
            )
            reply: bytes = call(None, timeout=timeout)
            return reply == b"\x08\x01"

    def wait_exit(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig: int) -> None:
        """To the main process only, as the kubelet does."""
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """SIGINT (the runtime drains without the SIGTERM delay meant for load balancers), then
        whatever is left of the process group is killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.wait_exit(timeout_s)
        self.kill()

    def kill(self) -> None:
        """SIGKILL to the server's own process group: the server and any worker left behind."""
        stop_group(self.proc, self._log_file)
        self._log_file = None

    # ------------------------------------------------------------------ the log and the processes

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_text()
        except OSError as exc:  # pragma: no cover - diagnostic only
            return f"<cannot read {self.log_path}: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    def log_records(self, strict: bool = False) -> list[dict[str, Any]]:
        """The log lines that are JSON objects, parsed; others are skipped, or with `strict` the
        first one fails the caller (AssertionError naming the line)."""
        out = []
        for number, line in enumerate(self.log_text().splitlines(), start=1):
            try:
                record = json.loads(line)
            except ValueError as exc:
                record, why = None, f"not JSON ({exc})"
            else:
                why = "not a JSON object"
            if isinstance(record, dict):
                out.append(record)
            elif strict:
                raise AssertionError(f"{self.log_path}:{number} is {why}: {line!r}")
        return out

    def scrape(self) -> Samples:
        """Every sample on /metrics, parsed by prometheus_client: (name, labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(self.metrics_url, timeout=30).text
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 if none)."""
        return metric_value(self.scrape(), name, **labels)

    def processes(self) -> list[Any]:
        """The server's process and its descendants (psutil.Process), those still alive."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metric_value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def metric_series(samples: Samples, name: str) -> list[dict[str, str]]:
    """The label sets of the samples named `name`."""
    return [dict(ls) for (n, ls) in samples if n == name]


def log_tail_sections(objects: Iterable[Any], lines: int = 60, width: int = 0) -> list[tuple[str, str]]:
    """(title, text) report sections with the log tail of each Server among `objects` (e.g. a
    failed test's fixture values); `width` > 0 cuts long lines."""
    sections = []
    for obj in objects:
        if isinstance(obj, Server):
            tail = obj.log_tail(lines)
            if width:
                tail = "\n".join(line[:width] for line in tail.splitlines())
            sections.append((f"server log tail ({obj.log_path})", tail))
    return sections


def wait_all_ready(servers: Iterable[Server], timeout: float = STARTUP_TIMEOUT_S) -> None:
    """wait_ready on every server at once; the first failure is raised once all have answered."""
    servers = list(servers)
    if not servers:
        return
    with ThreadPoolExecutor(len(servers)) as pool:
        for future in [pool.submit(s.wait_ready, timeout) for s in servers]:
            future.result()


def launch_all(builders: dict[str, Callable[[], Server]], timeout: float = STARTUP_TIMEOUT_S) -> dict[str, Server]:
    """Call every builder (each launches one server and returns at once), then wait for all of
    them side by side; if any fails to start, all are killed."""
    launched: dict[str, Server] = {}
    try:
        for name, build in builders.items():
            launched[name] = build()
        wait_all_ready(launched.values(), timeout)
    except BaseException:
        for server in launched.values():
            server.kill()
        raise
    return launched


def declared_servers(items: Iterable[Any], request: Any) -> dict[str, Callable[[], Server]]:
    """For a pytest session: the servers the modules of the selected `items` declare in a
    module-level `SERVERS` dict (name -> builder(request) -> launched Server), bound to `request`
    and ready for launch_all."""
    builders: dict[str, Callable[[Any], Server]] = {}
    for item in items:
        builders.update(getattr(getattr(item, "module", None), "SERVERS", {}))
    return {name: functools.partial(build, request) for name, build in builders.items()}


S = TypeVar("S", Server, dict[str, Server])


def served(servers: S) -> Iterator[S]:
    """A fixture's body: the launched server (or dict of servers) once ready, killed at the end."""
    group = list(servers.values()) if isinstance(servers, dict) else [servers]
    try:
        wait_all_ready(group)
        yield servers
    finally:
        for server in group:
            server.kill()


def stop_all(servers: Iterable[Server]) -> None:
    """stop() every server at once (each may take up to its shutdown timeout)."""
    servers = list(servers)
    if servers:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s: s.stop(), servers))
