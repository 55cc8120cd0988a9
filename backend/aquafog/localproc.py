"""AquaFog services as processes on this machine, for the demo, the benchmarks and the
tests (the counterparts of broker.LocalBroker): each writes its TOML config, starts
`aquafog <command>`, waits until GET /api/v1/health is 200, and stops it with SIGTERM
(SIGKILL if it hangs). gateway/local.py and cloud/local.py are the two services."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .broker import free_port, wait_for_port
from .install.configfile import toml_value


class ApiConnection(http.client.HTTPConnection):
    """A keep-alive connection to an AquaFog API on this machine that sends an API token
    with every request (benchmarks and tools)."""

    def __init__(self, port: int, token: str, timeout: float = 10.0):
        super().__init__("127.0.0.1", port, timeout=timeout)
        self.token = token

    def request(self, method, url, body=None, headers=None, **kw):
        super().request(method, url, body, {**(headers or {}), "Authorization": f"Bearer {self.token}"}, **kw)


class LocalService:
    command = ""  # the `aquafog` subcommand
    name = ""     # for logs and errors

    def __init__(self, workdir: Path, cfg: dict, http_port: int | None = None, *, new_session: bool = False):
        # new_session: out of reach of a terminal's Ctrl-C (the demo stops its children itself, in order)
        self.new_session = new_session
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = http_port or free_port()
        self.log_path = self.workdir / f"{self.name}.log"
        self.conf = self.workdir / f"{self.name}.toml"
        self.conf.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in
                                     {**cfg, "http_port": self.http_port}.items()))
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    def health(self) -> tuple[int, dict | None]:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")
        except OSError:
            return 0, None

    def start(self, timeout: float = 30.0):
        """Start and wait until /health is 200 (store open, broker links up)."""
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "aquafog", self.command, "-c", str(self.conf)],
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=self.new_session)
        try:
            wait_for_port("127.0.0.1", self.http_port, timeout, self.proc)
        except RuntimeError as exc:  # it exited or never listened: its log says why
            raise RuntimeError(f"{self.name}: {exc}; its log:\n{self.log()[-3000:]}") from None
        deadline = time.monotonic() + timeout
        while self.health()[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not healthy: {self.health()}; its log:\n{self.log()[-3000:]}")
            time.sleep(0.02)
        return self

    def _accounts(self):
        """(Accounts, engine) of this service's store."""
        raise NotImplementedError

    def add_user(self, username: str, role: str, password: str | None = None, meters=()) -> str:
        """Add a user straight into the store (as `aquafog user add` does); returns the password
        (a random one unless given)."""
        import secrets
        password = password or secrets.token_urlsafe(18)
        accounts, engine = self._accounts()
        try:
            with engine.begin() as conn:
                accounts.add_user(conn, username, role, password, meters)
        finally:
            engine.dispose()
        return password

    def token(self, username: str = "local-admin", role: str = "admin", meters=()) -> str:
        """An API token of `username` (added with a random password if new), for scripts."""
        accounts, engine = self._accounts()
        try:
            with engine.begin() as conn:
                if not any(u["username"] == username for u in accounts.list_users(conn)):
                    import secrets
                    accounts.add_user(conn, username, role, secrets.token_urlsafe(18), meters)
                return accounts.add_token(conn, username, "local")[1]
        finally:
            engine.dispose()

    def connection(self, timeout: float = 10.0) -> ApiConnection:
        """An API connection as an admin of this service (the token is made once)."""
        if getattr(self, "_api_token", None) is None:
            self._api_token = self.token()
        return ApiConnection(self.http_port, self._api_token, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (the service commits what it holds), then SIGKILL if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None
        return code
