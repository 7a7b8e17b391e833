"""A throw-away real PostgreSQL cluster for tests, bench and the local demo: the distribution's
server (installed with apt-get when missing), initdb'd into a fresh temp dir, listening on
127.0.0.1:<free port>, stopped and deleted at the end. No mocked database.

    pg = start_cluster()
    ids = load_feature_table(pg)                  # diabetes features keyed by "patient-0000", ...
    dsn_file = pg.write_dsn_file(pg.base / "dsn") # what the runtime reads, as its own role
    pg.stop("immediate"); pg.start()              # a crash and its recovery, for fault tests
    pg.close()

Design:
- PostgreSQL refuses to run as root, so as root every server command (initdb, pg_ctl) runs as the
  unprivileged system user `pipeline-pg` (created on first use) through runuser; otherwise as the
  current user. The temp dir sits directly under /tmp (pytest's tmp dirs are 0700 for root) and
  only what the server writes (data dir, socket dir, log) is handed to that user.
- Two roles: the superuser `postgres` (password over TCP) which the harness uses to create and fill
  tables, and `features`, the runtime's role, which can read every table `postgres` creates and
  write none: the runtime under test gets no more than it would in production.
- Durability against an OS crash is off (fsync, full_page_writes): a cluster that lives for one
  test run only has to survive a server crash (`stop("immediate")`). synchronous_commit stays on:
  off, a commit returns before its WAL leaves the server's memory, so a crash right after loading
  a table lost the table. With fsync off, a synchronous commit costs a write() to the page cache.
- Every subprocess has a timeout; a failed step raises RuntimeError naming the command, its exit
  code, its output and the tail of the server log.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import QueryNoTemplate
from psycopg.conninfo import make_conninfo

from harness.models import DIABETES, dataset, shipped_models
from harness.server import HOST, free_ports

PG_ROOT = Path("/usr/lib/postgresql")  # Debian's layout: /usr/lib/postgresql/<major>/bin
SERVICE_USER = "pipeline-pg"
SUPERUSER = "postgres"
RUNTIME_ROLE = "features"
DBNAME = "features"

INSTALL_TIMEOUT_S = 900.0
APT_UPDATE_TIMEOUT_S = 300.0
INITDB_TIMEOUT_S = 120.0
PG_CTL_WAIT_S = 60  # pg_ctl's own -t; the subprocess gets a little more so pg_ctl reports first
CONNECT_TIMEOUT_S = 2

_CONF = """
# harness.postgres: a throw-away cluster on loopback, durability traded for speed.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sock}'
unix_socket_permissions = 0700
fsync = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 100
logging_collector = off
"""

Log = Callable[[str], None]


# ------------------------------------------------------------------------------ installation


def _bin_dirs() -> list[Path]:
    """Installed majors' bin dirs, newest first."""
    majors = [d for d in PG_ROOT.glob("*/bin") if d.parent.name.isdigit() and (d / "pg_ctl").exists()]
    return sorted(majors, key=lambda d: int(d.parent.name), reverse=True)


def _apt_get(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    # A CI runner that is not root usually has passwordless sudo; -n fails instead of prompting.
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return _run([*prefix, "apt-get", *args], timeout=timeout, check=False, env=env)


def ensure_installed(log: Log = print) -> Path:
    """The bin dir of the newest installed PostgreSQL major (/usr/lib/postgresql/<N>/bin),
    installing the distribution's package first when none is: the tests need the real server and
    CI machines may not have it."""
    found = _bin_dirs()
    if found:
        return found[0]
    log("PostgreSQL is not installed: apt-get install postgresql")
    install = ["install", "-y", "-qq", "postgresql"]
    done = _apt_get(install, INSTALL_TIMEOUT_S)
    if done.returncode != 0:  # a fresh machine's package lists may be missing or stale
        _apt_get(["update", "-qq"], APT_UPDATE_TIMEOUT_S)
        done = _apt_get(install, INSTALL_TIMEOUT_S)
    found = _bin_dirs()
    if done.returncode != 0 or not found:
        raise RuntimeError(
            f"installing PostgreSQL failed: `apt-get {' '.join(install)}` exited {done.returncode},"
            f" no server under {PG_ROOT}/<major>/bin:\n{_tail(done.stdout + done.stderr)}"
        )
    return found[0]


# ------------------------------------------------------------------------------ processes


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _run(
    argv: Sequence[str],
    timeout: float,
    check: bool = True,
    server_log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """argv with a timeout, output captured; a timeout, or a non-zero exit with `check`, raises
    RuntimeError with the command, its output and the tail of `server_log`."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:  # its captured output is bytes, whatever `text` says
        output = b"".join(o for o in (exc.stdout, exc.stderr) if o).decode(errors="replace")
        failure = f"timed out after {timeout:.0f}s"
    except OSError as exc:  # e.g. no sudo on a machine that is not root
        failure, output = f"could not run: {exc}", ""
    else:
        if done.returncode == 0 or not check:
            return done
        failure, output = f"exited {done.returncode}", done.stdout + done.stderr
    message = f"`{' '.join(argv)}` {failure}\n{_tail(output)}"
    log_text = server_log.read_text(errors="replace") if server_log and server_log.exists() else ""
    if log_text:
        message += f"\npostgres log tail ({server_log}):\n{_tail(log_text)}"
    raise RuntimeError(message)


def _service_user() -> pwd.struct_passwd | None:
    """The user the server runs as: None (the current user) unless we are root, which PostgreSQL
    refuses; then `pipeline-pg`, a system user without home or shell, created on first use."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    done = _run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
        timeout=30,
        check=False,
    )
    try:  # a parallel test process may have created it first: then useradd failed, and that is fine
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise RuntimeError(f"useradd {SERVICE_USER} exited {done.returncode}: {done.stderr}") from None


def _server_env() -> dict[str, str]:
    """This environment without libpq's PG* variables, so a developer's shell cannot point
    pg_ctl or initdb at another cluster."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _hand_over(path: Path, user: pwd.struct_passwd | None, mode: int) -> None:
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, mode)


# ------------------------------------------------------------------------------ the cluster


@dataclass
class Postgres:
    """One cluster in `base` (data/, sock/, postgres.log). `user`/`password`/`dbname` are the
    runtime's read-only role and database; the harness itself connects as the superuser."""

    bin_dir: Path
    base: Path
    port: int
    user: str
    password: str = field(repr=False)
    dbname: str
    host: str = HOST
    superuser: str = SUPERUSER
    superuser_password: str = field(repr=False, default="")
    service_user: str | None = None  # who runs the server commands (None: this process's user)

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    def dsn(self) -> str:
        """libpq key=value conninfo for the runtime's role (quoted by psycopg, so any password is
        safe); a short connect_timeout so a stopped server fails a request fast."""
        return make_conninfo(
            "",
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=self.user,
            password=self.password,
            connect_timeout=CONNECT_TIMEOUT_S,
        )

    def write_dsn_file(self, path: Path) -> Path:
        """The DSN in a file readable by its owner only (it holds a password): the runtime reads
        its DSN from a file or an environment variable."""
        path = Path(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.dsn() + "\n")
        os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed
        return path

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        return _run(
            _as_service_user(argv, self.service_user),
            timeout=PG_CTL_WAIT_S + 15,
            check=check,
            server_log=self.log_path,
            env=_server_env(),
            cwd=self.base,
        )

    def start(self) -> None:
        """pg_ctl start, waiting until the server accepts connections (after a crash: until crash
        recovery is done). Nothing to do when it is running."""
        if not self.running():
            self._pg_ctl("-l", str(self.log_path), "-w", "-t", str(PG_CTL_WAIT_S), "start")

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m fast (clean) or immediate (no checkpoint: the next start runs crash
        recovery, which is how fault tests stand for a crashed database). Nothing to do when
        stopped."""
        if self.running():
            self._pg_ctl("-m", mode, "-w", "-t", str(PG_CTL_WAIT_S), "stop")

    def running(self) -> bool:
        """pg_ctl status: 0 running, 3 not running, 4 no data dir."""
        return self._pg_ctl("status", check=False).returncode == 0

    def _connect(self, dbname: str | None = None) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            dbname=dbname or self.dbname,
            user=self.superuser,
            password=self.superuser_password,
            connect_timeout=CONNECT_TIMEOUT_S,
            autocommit=True,
        )

    def execute(self, query: QueryNoTemplate, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """One statement as the superuser on a fresh autocommit connection (tests create, change
        and drop tables; nothing is left open between calls); the fetched rows, or []."""
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description is not None else []

    def close(self) -> None:
        """Stop (immediate when a fast stop fails or times out) and delete the temp dir. Safe to
        call twice."""
        if not self.base.exists():
            return
        try:
            self.stop("fast")
        except RuntimeError:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def _as_service_user(argv: list[str], service_user: str | None) -> list[str]:
    return argv if service_user is None else ["runuser", "-u", service_user, "--", *argv]


def start_cluster(base_dir: Path | None = None, port: int | None = None, log: Log = print) -> Postgres:
    """initdb + start a cluster on 127.0.0.1:<free port> in a fresh temp dir (under /tmp, or under
    `base_dir`, whose parents must then be traversable by `pipeline-pg` when root); a database and
    a password-authenticated (scram-sha-256) role for the runtime; unix sockets only inside the
    temp dir."""
    bin_dir = ensure_installed(log)
    user = _service_user()
    base = Path(tempfile.mkdtemp(prefix="pipeline-pg-", dir=base_dir or "/tmp"))
    os.chmod(base, 0o755)  # mkdtemp's 0700 would lock the service user out
    pg = Postgres(
        bin_dir=bin_dir,
        base=base,
        port=port or free_ports(1)[0],
        user=RUNTIME_ROLE,
        password=secrets.token_urlsafe(24),
        dbname=DBNAME,
        superuser_password=secrets.token_urlsafe(24),
        service_user=None if user is None else user.pw_name,
    )
    try:
        _initdb(pg, user)
        pg.start()
        _create_runtime_role(pg)
    except BaseException:
        with contextlib.suppress(RuntimeError):  # the first failure is the one to report
            pg.close()
        raise
    log(f"PostgreSQL {bin_dir.parent.name} on {pg.host}:{pg.port} in {base}")
    return pg


def _initdb(pg: Postgres, user: pwd.struct_passwd | None) -> None:
    sock = pg.base / "sock"
    pwfile = pg.base / "pwfile"
    for directory in (pg.data_dir, sock):
        directory.mkdir()
        _hand_over(directory, user, 0o700)
    pg.log_path.touch()
    _hand_over(pg.log_path, user, 0o600)
    pwfile.write_text(pg.superuser_password + "\n")
    _hand_over(pwfile, user, 0o600)
    argv = [
        str(pg.bin_dir / "initdb"),
        "-D",
        str(pg.data_dir),
        "-U",
        pg.superuser,
        f"--pwfile={pwfile}",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",  # a throw-away cluster: nothing to flush to disk
    ]
    try:
        _run(
            _as_service_user(argv, pg.service_user),
            timeout=INITDB_TIMEOUT_S,
            server_log=pg.log_path,
            env=_server_env(),
            cwd=pg.base,
        )
    finally:
        pwfile.unlink()
    with open(pg.data_dir / "postgresql.conf", "a") as conf:  # later settings win
        conf.write(_CONF.format(port=pg.port, sock=sock))


def _create_runtime_role(pg: Postgres) -> None:
    with pg._connect("postgres") as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(pg.user), sql.Literal(pg.password))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pg.dbname)))
    # Every table the superuser creates from now on is readable, and only readable, by the runtime.
    pg.execute(
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(
            sql.Identifier(pg.user)
        )
    )


# ------------------------------------------------------------------------------ data


def load_feature_table(pg: Postgres, table: str = "diabetes_features", n: int | None = None) -> list[str]:
    """A feature table from the bundled diabetes dataset: `entity_id text primary key` plus one
    double precision column per feature name of the shipped diabetes model's manifest (same
    order), rows i = 0..len-1 (or n-1) of harness.models.dataset("diabetes") with entity_id
    f"patient-{i:04d}". Returns the ids in row order. Replaces the table if it exists."""
    features = shipped_models()[DIABETES].features
    rows = dataset(DIABETES)[:n].tolist()
    ids = [f"patient-{i:04d}" for i in range(len(rows))]
    load_table(pg, table, [(f, "double precision") for f in features], zip(ids, rows))
    return ids


def load_table(
    pg: Postgres, table: str, columns: Sequence[tuple[str, str]], rows: Iterable[tuple[str, Sequence[Any]]]
) -> None:
    """A table `entity_id text primary key` plus `columns` (name, SQL type), holding `rows` (id, values;
    None is NULL). Replaces the table if it exists, in one transaction."""
    name = sql.Identifier(table)
    typed = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns)
    with pg._connect() as conn, conn.transaction():  # readers see the old table or the whole new one
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        conn.execute(sql.SQL("CREATE TABLE {} (entity_id text PRIMARY KEY, {})").format(name, typed))
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN").format(name)) as copy:
            for entity_id, values in rows:
                copy.write_row([entity_id, *values])


# ------------------------------------------------------------------------------ command line


def _smoke() -> None:
    """Start, load, read as the runtime's role via the DSN file, crash, recover, read again."""
    t0 = time.monotonic()
    pg = start_cluster()
    try:
        t_start = time.monotonic()
        ids = load_feature_table(pg)
        t_load = time.monotonic()
        dsn_file = pg.write_dsn_file(pg.base / "dsn")
        query = "SELECT entity_id, bmi FROM diabetes_features WHERE entity_id = ANY(%s) ORDER BY entity_id"
        wanted = [ids[0], ids[len(ids) // 2], ids[-1]]

        def select() -> list[tuple[Any, ...]]:
            with psycopg.connect(dsn_file.read_text().strip()) as conn:
                return conn.execute(query, [wanted]).fetchall()

        before = select()
        t_crash = time.monotonic()
        pg.stop("immediate")
        pg.start()
        t_recovered = time.monotonic()
        after = select()
        assert len(before) == 3 and after == before, (before, after)
        print(f"rows: {before}")
    finally:
        pg.close()
    t_end = time.monotonic()
    print(
        f"cluster start {t_start - t0:.2f}s, table load ({len(ids)} rows) {t_load - t_start:.2f}s,"
        f" immediate stop + recovery {t_recovered - t_crash:.2f}s, close {t_end - t_recovered:.2f}s,"
        f" total {t_end - t0:.2f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.postgres")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--ensure-installed", action="store_true", help="install PostgreSQL if missing; print its bin dir"
    )
    action.add_argument(
        "--smoke", action="store_true", help="start, load, read, crash, recover, read again, close; print timings"
    )
    args = parser.parse_args()
    if args.ensure_installed:
        print(ensure_installed())
    else:
        _smoke()


if __name__ == "__main__":
    main()
