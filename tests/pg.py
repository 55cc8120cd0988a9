"""A throw-away PostgreSQL for the tests: `initdb` + `pg_ctl` on 127.0.0.1 and a free port.

Nothing is shared with a system cluster: the data directory, the Unix socket and the
log live in one temporary directory that `stop()` removes. Durability is switched off
(fsync, full_page_writes, synchronous_commit) because the cluster dies with the session.

PostgreSQL refuses to run as root, so under root the server runs as the `postgres`
user (created by Debian's postgresql package), which then owns the temporary directory.

Fixtures (import them, or list this module in `pytest_plugins`):
    postgres_server  session: one running ThrowawayPostgres shared by the whole session
    pg_url           function: URL of a fresh, empty database, dropped after the test
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import select
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

SUPERUSER = "aquafog"
DEFAULT_DB = "aquafog"
RUN_AS_WHEN_ROOT = "postgres"
INSTALL_HINT = (
    "install Debian's PostgreSQL server: `make deps` (runs tools/install-system-deps.sh), "
    "or `sudo apt-get install postgresql`"
)
# Settings for a cluster that lives as long as a test session.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "200",
    "log_min_messages": "warning",
}


class PostgresNotFound(RuntimeError):
    pass


def find_pg_bindir() -> Path:
    """The directory holding `initdb` and `pg_ctl` (Debian: /usr/lib/postgresql/<v>/bin).

    Order: $AQUAFOG_PG_BINDIR, PATH, `pg_config --bindir`, the newest Debian version.
    """
    candidates: list[Path] = []
    if os.environ.get("AQUAFOG_PG_BINDIR"):
        candidates.append(Path(os.environ["AQUAFOG_PG_BINDIR"]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.CalledProcessError):
            pass

    def version_key(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name))

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)]
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return bindir
    raise PostgresNotFound(
        "PostgreSQL's initdb and pg_ctl were not found (looked in $AQUAFOG_PG_BINDIR, PATH, "
        f"`pg_config --bindir`, /usr/lib/postgresql/*/bin): {INSTALL_HINT}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_exited(pid: int) -> bool:
    """True when `pid` is gone or a zombie (a container's PID 1 may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except FileNotFoundError:
        return True


class ThrowawayPostgres:
    """One PostgreSQL cluster in a temporary directory; `with ThrowawayPostgres() as pg:`.

    `url` is a SQLAlchemy URL to the database `aquafog` (superuser `aquafog`, trust
    authentication, TCP on 127.0.0.1 only); `create_database()` makes a fresh one.
    """

    def __init__(self, bindir: Path | None = None, start_timeout: int = 60):
        self.bindir = Path(bindir) if bindir else find_pg_bindir()
        self.start_timeout = start_timeout
        self.base: Path | None = None
        self.port: int | None = None
        self.pid: int | None = None
        self._pidfd: int | None = None
        self._admin: sa.Engine | None = None
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam(RUN_AS_WHEN_ROOT)
            except KeyError:
                raise PostgresNotFound(
                    "PostgreSQL refuses to run as root and there is no `postgres` user to run "
                    f"it as: {INSTALL_HINT} (the package creates the user), or run the tests "
                    "as an unprivileged user"
                ) from None

    # -- paths ---------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(DEFAULT_DB)

    # -- processes -----------------------------------------------------------------
    def _run(self, tool: str, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run a PostgreSQL tool, as `postgres` when we are root."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        kwargs = {}
        if self._run_as is not None:
            env["HOME"] = str(self.base)
            kwargs = dict(user=self._run_as.pw_uid, group=self._run_as.pw_gid, extra_groups=[])
        return subprocess.run(
            [str(self.bindir / tool), *args],
            cwd=self.base,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> "ThrowawayPostgres":
        # /tmp, not pytest's tmp_path: its parents are root-only (0700), which the
        # `postgres` user could not enter; a short path also keeps the socket path legal.
        self.base = Path(tempfile.mkdtemp(prefix="aquafog-pg-"))
        atexit.register(self.stop)
        try:
            self.socket_dir.mkdir()
            if self._run_as is not None:
                for path in (self.base, self.socket_dir):
                    os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
            self._initdb()
            self._start_server()
            self._admin = sa.create_engine(
                self.url_for("postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
            )
            with self._admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{DEFAULT_DB}"')
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        res = self._run(
            "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            timeout=120,
        )
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
        settings = dict(SERVER_SETTINGS, unix_socket_directories=f"'{self.socket_dir}'")
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# AquaFog test cluster (tests/pg.py)\n")
            f.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _start_server(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = _free_port()
            res = self._run(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path),
                "-o", f"-p {self.port}", "-w", "-t", str(self.start_timeout), "start",
                timeout=self.start_timeout + 30,
            )
            if res.returncode == 0:
                break
            log = self._log_tail()
            # The port was free a moment ago; another process may have taken it since.
            if "could not bind" in log or "already in use" in log:
                if attempt + 1 < attempts:
                    continue
            raise RuntimeError(
                f"pg_ctl start failed (exit {res.returncode}) on port {self.port}: "
                f"{res.stderr.strip()}\n--- {self.log_path} ---\n{log}"
            )
        self.pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def stop(self, timeout: float = 60) -> None:
        """Stop the server (fast: open sessions are cut) and remove its directory. Idempotent."""
        if self.base is None:
            return
        try:
            if self._admin is not None:
                self._admin.dispose()
                self._admin = None
            if (self.data_dir / "postmaster.pid").exists():
                res = self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w",
                                "-t", str(int(timeout)), "stop", timeout=timeout + 30)
                if res.returncode != 0 and self.pid and not process_exited(self.pid):
                    os.kill(self.pid, 9)  # never leave a server behind
            self._wait_exited(timeout)
        finally:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
            atexit.unregister(self.stop)

    def _wait_exited(self, timeout: float) -> None:
        """pg_ctl returns once postmaster.pid is gone; wait for the process itself too."""
        if self.pid is None or self._pidfd is None:
            return
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)  # readable once the process has exited
        if not poller.poll(timeout * 1000):
            os.kill(self.pid, 9)
            poller.poll(timeout * 1000)

    def running(self) -> bool:
        return self.pid is not None and self.base is not None and not process_exited(self.pid)

    # -- databases -----------------------------------------------------------------
    def create_database(self, prefix: str = "test") -> str:
        """Create an empty database with a unique name; returns its name."""
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, cutting any connection a test left open."""
        if self._admin is None:
            return
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @property
    def major_version(self) -> int:
        """The binaries' major version, e.g. 15 for `pg_ctl (PostgreSQL) 15.18`."""
        out = subprocess.run([str(self.bindir / "pg_ctl"), "--version"], capture_output=True, text=True, check=True)
        return int(re.search(r"\) (\d+)", out.stdout).group(1))

    def __enter__(self) -> "ThrowawayPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One throw-away PostgreSQL for the whole session (stopped and removed at the end)."""
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: ThrowawayPostgres) -> str:
    """SQLAlchemy URL (postgresql+psycopg://) of a fresh, empty database for one test."""
    name = postgres_server.create_database()
    yield postgres_server.url_for(name)
    postgres_server.drop_database(name)
