"""A throw-away real nginx as a weighted load balancer for tests: the distribution's package
(installed with apt-get when missing), its own config in a fresh temp dir, listening on
127.0.0.1:<free port>, an `upstream` of the given servers with `weight=` each, stopped and deleted
at the end.

    lb = start_nginx({"127.0.0.1:8080": 75, "127.0.0.1:9080": 25})
    requests.post(lb.url + "/v2/models/diabetes/infer", json=...)
    lb.set_weights({"127.0.0.1:8080": 50, "127.0.0.1:9080": 50})   # rewrite + nginx -s reload
    lb.upstream_counts(since=t0)                                    # (server, status) -> requests, from its access log
    lb.close()

The weights are changed the way `rollout auto` changes them (pipeline_tools.rollout.targets.NginxTarget:
rewrite the upstream's server lines, `nginx -t`, `nginx -s reload`); nginx allows no weight 0, so
a server at 0 is marked `down`.

Design (as harness.postgres): nginx runs in the foreground (`daemon off`) in its own process
group, with every path it writes (pid, logs, temp dirs) inside the temp dir. As root the whole
server, master included, runs as `nobody` (Popen user/group): it binds a high loopback port and
needs no privilege, so no `user` directive and no worker privilege drop; the config stays
root-owned and world-readable, `nginx -s reload` (as root) may signal it. `proxy_next_upstream
off`: a canary's 500 reaches the client instead of being retried on the stable server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from harness.prometheus import ensure_package, hand_over, service_ids, spawn_service, tail
from harness.server import HOST, free_ports, stop_group
from pipeline_tools.rollout.targets import NginxTarget, upstream_block

BINARY = "nginx"
PACKAGE = "nginx"
UPSTREAM = "pipeline"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

_CONF = """# harness.nginx: a throw-away weighted load balancer for one test run.
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    log_format upstreams '$msec $upstream_addr $status';
    access_log {base}/access.log upstreams buffer=32k flush=200ms;
    client_body_temp_path {base}/tmp/body;
    proxy_temp_path {base}/tmp/proxy;
    fastcgi_temp_path {base}/tmp/fastcgi;
    uwsgi_temp_path {base}/tmp/uwsgi;
    scgi_temp_path {base}/tmp/scgi;
{upstream}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""

Log = Callable[[str], None]


def ensure_installed(log: Log = print) -> str:
    return ensure_package(BINARY, PACKAGE, log)


@dataclass
class Nginx:
    binary: str
    base: Path
    port: int
    servers: dict[str, int | None]
    proc: subprocess.Popen[bytes] = field(repr=False)
    upstream: str = UPSTREAM
    _log_file: IO[bytes] | None = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def conf(self) -> Path:
        return self.base / "nginx.conf"

    @property
    def access_log(self) -> Path:
        return self.base / "access.log"

    def log_tail(self, lines: int = 40) -> str:
        return f"{tail(self.base / 'nginx.out', lines)}\nerror.log:\n{tail(self.base / 'error.log', lines)}"

    def command(self, *args: str) -> list[str]:
        """An nginx command on this server's prefix and config (e.g. "-s", "reload")."""
        return [self.binary, "-p", str(self.base), "-e", str(self.base / "error.log"), "-c", str(self.conf), *args]

    def target(self, stable: str, canary: str) -> NginxTarget:
        """The adapter `rollout auto --target nginx` uses, on this server's config."""
        return NginxTarget(
            conf=self.conf,
            stable=stable,
            canary=canary,
            upstream=self.upstream,
            prefix=self.base,
            nginx=self.binary,
            error_log=self.base / "error.log",
        )

    def set_weights(self, servers: dict[str, int | None]) -> None:
        """Rewrite the upstream (None or 0: `down`) and reload, as NginxTarget does."""
        NginxTarget.rewrite(self.conf, self.upstream, servers)
        NginxTarget.reload_command(self.command())
        self.servers = dict(servers)

    def upstream_counts(self, since: float = 0.0, until: float = float("inf")) -> Counter[tuple[str, str]]:
        """Requests per (upstream address, status) that nginx logged between two Unix times: what
        it actually routed. The log is flushed every 200 ms."""
        counts: Counter[tuple[str, str]] = Counter()
        try:
            text = self.access_log.read_text()
        except FileNotFoundError:
            return counts
        for line in text.splitlines():
            stamp, addr, status = line.split(" ", 2)
            if since <= float(stamp) < until:
                counts[(addr, status)] += 1
        return counts

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = "no attempt yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(f"{self.url}/v2/health/live", timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # nginx answered (whatever the upstream said)
            except (OSError, urllib.error.URLError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"nginx not answering after {timeout:.0f}s ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGQUIT (graceful: workers finish their requests), then SIGKILL to the group."""
        stop_group(self.proc, self._log_file, signal.SIGQUIT, STOP_TIMEOUT_S)
        self._log_file = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def config_text(base: Path, port: int, servers: dict[str, int | None], upstream: str = UPSTREAM) -> str:
    block = upstream_block(upstream, servers, extra=["keepalive 32;"])
    return _CONF.format(base=base, host=HOST, port=port, name=upstream, upstream=_indent(block))


def _indent(block: str) -> str:
    return "\n".join(f"    {line}" for line in block.splitlines())


def start_nginx(
    servers: dict[str, int | None],
    base_dir: Path | None = None,
    port: int | None = None,
    log: Log = print,
) -> Nginx:
    """Install if missing, write the config (upstream `pipeline` of `servers`: "host:port" ->
    weight, None or 0 for `down`), start in the foreground, wait until it answers."""
    binary = ensure_installed(log)
    ids = service_ids()
    base = Path(tempfile.mkdtemp(prefix="pipeline-nginx-", dir=base_dir or "/tmp"))
    os.chmod(base, 0o755)
    (base / "tmp").mkdir()
    for path in (base, base / "tmp"):
        hand_over(path, ids, 0o755)  # pid, logs and temp files are the server's to write
    port = port or free_ports(1)[0]
    conf = base / "nginx.conf"
    conf.write_text(config_text(base, port, servers))
    os.chmod(conf, 0o644)
    out = open(base / "nginx.out", "wb")
    argv = [binary, "-p", str(base), "-e", str(base / "error.log"), "-c", str(conf), "-g", "daemon off;"]
    proc = spawn_service(argv, base, out, ids)
    lb = Nginx(binary=binary, base=base, port=port, servers=dict(servers), proc=proc, _log_file=out)
    try:
        lb.wait_ready()
    except BaseException:
        lb.close()
        raise
    log(f"nginx on {lb.url} in {base}: upstream {servers}")
    return lb
