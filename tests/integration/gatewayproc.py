"""A real `aquafog gateway` process for integration tests (and its HTTP client)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from aquafog.broker import free_port, wait_for_port


class GatewayProcess:
    def __init__(self, workdir: Path, broker_port: int, meters=(), **settings):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.workdir / "gateway.db"
        self.http_port = free_port()
        self.log_path = self.workdir / "gateway.log"
        cfg = {"db_path": str(self.db_path), "mqtt_port": broker_port, "http_port": self.http_port,
               "mqtt_client_id": "aquafog-gateway-test", "batch_max_delay_ms": 50,
               # emulated meters live up to 360x faster than real time: 1 s between acks
               # would be 6 simulated minutes, longer than their ack timeout
               "ack_interval_ms": 100, **settings}
        self.conf = self.workdir / "gateway.toml"
        self.conf.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in cfg.items()))
        if meters:
            ids = self.workdir / "meters.txt"
            ids.write_text("\n".join(meters))
            subprocess.run([sys.executable, "-m", "aquafog", "meter", "add", "-c", str(self.conf), "--file", str(ids)],
                           check=True, stdout=subprocess.DEVNULL)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1"

    def start(self, timeout: float = 30.0) -> "GatewayProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "aquafog", "gateway", "-c", str(self.conf)],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.http_port, timeout, self.proc)
        deadline = time.time() + timeout
        while self.get("/health", ok=False)[0] != 200:  # receiver and publisher connected
            if time.time() > deadline:
                raise TimeoutError(f"gateway not healthy: {self.get('/health', ok=False)}\n{self.log()}")
            time.sleep(0.02)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        self._log.close()
        return code

    def request(self, method: str, path: str, body=None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str, ok: bool = True):
        try:
            status, body = self.request("GET", path)
        except (ConnectionError, urllib.error.URLError):
            if ok:
                raise
            return 0, None
        if ok:
            assert status == 200, (path, status, body)
            return body
        return status, body

    def post(self, path: str, body=None, raw: bytes | None = None):
        return self.request("POST", path, body, raw)

    def wait_for(self, pred, what: str, timeout: float = 10.0, interval: float = 0.02):
        """Poll the API until pred() is truthy (the API is the only window into a process)."""
        deadline = time.time() + timeout
        while True:
            value = pred()
            if value:
                return value
            if time.time() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(interval)
