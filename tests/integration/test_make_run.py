"""`make run` on this machine: the demo serves the ranking of its emulated meters within
30 s, and Ctrl-C stops everything it started."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from aquafog.broker import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_make_run_serves_the_ranking_within_30_seconds_and_ctrl_c_stops_it(tmp_path):
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["make", "-s", "run", f"ARGS=--run-dir {tmp_path / 'run'} --http-port {port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = []
    try:
        broker_port = None
        for line in proc.stdout:
            out.append(line)
            m = re.search(r"broker\s+mqtt://127\.0\.0\.1:(\d+)", line)
            if m:
                broker_port = int(m.group(1))
            if "Ctrl-C stops everything" in line:
                break
        assert broker_port, "".join(out)
        def ranked() -> list:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/ranking?n=1000&period=month",
                                            timeout=2) as r:
                    return json.loads(r.read())["items"]
            except OSError:
                return []

        items = ranked()  # every emulated meter ranked, and water counted
        while time.monotonic() - t0 < 30 and not (len(items) == 200 and items[0]["litres"] > 0):
            time.sleep(0.2)
            items = ranked()
        elapsed = time.monotonic() - t0
        assert len(items) == 200 and items[0]["litres"] > 0, (len(items), items[:3], "".join(out))
        assert elapsed < 30
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/meters?limit=1000", timeout=2) as r:
            assert len(json.loads(r.read())["items"]) == 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        try:
            rest, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rest, _ = proc.communicate()
        out.append(rest)
    assert "stopped the emulator, the gateway and the broker" in "".join(out)
    assert not listening(port) and not listening(broker_port)
    assert subprocess.run(["pgrep", "-f", str(tmp_path / "run")], capture_output=True).stdout == b""
