"""`make run` (tools/demo.py) on this machine: 2 fogs and the cloud, the whole chain
working (both fogs healthy, the city ranking at the cloud has the meters of both
regions), and Ctrl-C (SIGINT to its process group, as a terminal sends it) or SIGTERM
stops every process it started and exits 0."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aquafog.broker import free_port

from .connack import connack
from .httpjson import authorize, forget, get, post

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
METERS = 5  # per fog
REGIONS = {"north": "n", "south": "s"}
STARTUP_S = 60.0  # from launch to a city ranking with both regions


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def descendants(root: int) -> dict[int, str]:
    """Every live process under root: {pid: start time} (the start time tells a reused pid apart)."""
    parent, start = {}, {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(d.name)], start[int(d.name)] = int(fields[1]), fields[19]
    found, todo = {}, [root]
    while todo:
        p = todo.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found:
                found[child] = start[child]
                todo.append(child)
    return found


def alive(procs: dict[int, str]) -> list[int]:
    out = []
    for pid, start in procs.items():
        try:
            if (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19] == start:
                out.append(pid)
        except OSError:
            pass
    return out


def poll(pred, what: str, timeout: float, out: list[str]):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; demo output:\n" + "".join(out))
        time.sleep(0.1)


class Output:
    """The demo's merged stdout/stderr, read by a thread so that waiting for a line has a deadline."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.reader.start()

    def _read(self, proc) -> None:
        with proc.stdout:
            for line in proc.stdout:
                self._q.put(line)
        self._q.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if m := re.search(pattern, line):
                return m
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no line matching {pattern!r} within {timeout:.0f} s; output:\n" + "".join(self.lines))

    def rest(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return "".join(self.lines)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_make_run_runs_two_fogs_and_the_cloud_and_stops_everything(tmp_path, how):
    ports = [free_port() for _ in range(3)]
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "demo.py"), "--run-dir", str(run_dir), "--meters", str(METERS),
         "--fog-ports", f"{ports[0]},{ports[1]}", "--cloud-port", str(ports[2])],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = Output(proc)
    children: dict[int, str] = {}
    try:
        t0 = time.monotonic()
        out.wait_for(r"Ctrl-C stops everything", STARTUP_S)
        text = "".join(out.lines)
        fogs = {m[1]: (m[2], int(m[3])) for m in re.finditer(
            r"fog (\w+)\s+API (http://127\.0\.0\.1:\d+/api/v1)\s+broker mqtt://127\.0\.0\.1:(\d+)", text)}
        m = re.search(r"cloud\s+API (http://127\.0\.0\.1:\d+/api/v1)\s+broker mqtt://127\.0\.0\.1:(\d+)", text)
        assert set(fogs) == set(REGIONS) and m, text
        cloud, cloud_broker = m[1], int(m[2])
        assert [f[0] for f in (fogs["north"], fogs["south"])] == [f"http://127.0.0.1:{p}/api/v1" for p in ports[:2]]
        assert cloud == f"http://127.0.0.1:{ports[2]}/api/v1"
        # no broker lets anyone in without an account: the meters' and the service listeners of
        # both fogs, the cloud broker's listener for the fogs' bridges and its service listener
        listeners = [int(p) for p in re.findall(r"(?:broker|service listener) mqtt://127\.0\.0\.1:(\d+)", text)]
        assert len(listeners) == 6, text
        for port in listeners:
            assert connack(port) == "Not authorized", port
        # a provisioned meter gets in with its own password on its fog's listener, and only there
        cfg = json.loads((run_dir / "north" / "meters" / "n0001" / "config.json").read_text())
        assert (cfg["broker_port"], cfg["mqtt_password"] != "") == (fogs["north"][1], True)
        assert connack(fogs["north"][1], "n0001", cfg["mqtt_password"], "n0001") == "Success"
        assert connack(fogs["north"][1], "n0001", "not-its-password", "n0001") == "Not authorized"
        service = int(re.search(r"fog north.*\n\s+service listener mqtt://127\.0\.0\.1:(\d+)", text)[1])
        assert connack(service, "n0001", cfg["mqtt_password"], "aquafog-gateway") == "Not authorized"
        for needle in (f"{cloud}/city/ranking?n=10", f"{cloud}/city/mean", f"{cloud}/meters/s0005",
                       f"{cloud}/meters/s0005/valve"):
            assert needle in text, (needle, text)
        # credentials made for this run, printed once: no default password
        password = re.search(r"Log in everywhere as admin, password (\S+) ", text)[1]
        tokens = dict(re.findall(r"export (CLOUD|NORTH|SOUTH)=(aft_\w+)", text))
        assert len(password) >= 12 and set(tokens) == {"CLOUD", "NORTH", "SOUTH"}, text
        authorize(cloud, tokens["CLOUD"])
        for region, (api, _) in fogs.items():
            authorize(api, tokens[region.upper()])

        # the whole chain: the city ranking at the cloud has every meter of both fogs
        out.wait_for(r"^ready: the city ranking at the cloud merges the partials of north and south", STARTUP_S)
        ready_s = time.monotonic() - t0
        for region, (api, _) in fogs.items():
            poll(lambda api=api: get(f"{api}/health")[0] == 200, f"{region} healthy", 10, out.lines)
        # every meter of both fogs counts in the city mean (this month: the replay may all be
        # yesterday's just after midnight), and the meters that used water are in the ranking
        poll(lambda: get(f"{cloud}/city/mean?period=month")[1].get("meters") == 2 * METERS,
             "every meter of both fogs in the city mean", 20, out.lines)
        status, body = get(f"{cloud}/city/mean?period=month")
        assert sorted(r["region"] for r in body["regions"]) == sorted(REGIONS), body
        everyone = {f"{p}{i:04d}" for p in REGIONS.values() for i in range(1, METERS + 1)}
        status, body = get(f"{cloud}/city/ranking?n={2 * METERS}&period=month")
        assert status == 200 and sorted(body["regions"]) == sorted(REGIONS), body
        assert {i["meter"] for i in body["items"]} <= everyone, body
        assert all(i["meter"][0] == REGIONS[i["region"]] for i in body["items"]), body
        status, body = get(f"{cloud}/fogs")
        assert status == 200 and sorted(f["region"] for f in body["items"]) == sorted(REGIONS), body
        status, body = get(f"{cloud}/meters/s0003")
        assert status == 200 and (body["meter"], body["region"]) == ("s0003", "south"), body
        # the fogs run the demo's dry run of the mean rule, from their config files
        status, body = get(f"{fogs['north'][0]}/policy")
        assert status == 200 and (body["settings"]["mode"], body["source"]) == ("dry_run", "config"), body
        # the printed password logs in at the cloud; nothing is open without credentials
        status, body = post(f"{cloud}/auth/login", {"username": "admin", "password": password})
        assert status == 200 and body["user"]["role"] == "admin", body
        forget(cloud)
        assert get(f"{cloud}/city/ranking?n=5")[0] == 401
        children = descendants(proc.pid)
        assert len(children) >= 9, children  # 3 brokers, 2 gateways (+ receivers), the cloud, 2 emulators
    finally:
        for api in [cloud if "cloud" in dir() else None, *[a for a, _ in (fogs.values() if "fogs" in dir() else [])]]:
            if api:
                forget(api)
        children.update(descendants(proc.pid))
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        else:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        text = out.rest(5)
        deadline = time.monotonic() + 10  # a gateway's multiprocessing helper may outlive it by a moment
        while (left_behind := alive(children)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in ([proc.pid] if code is None else []) + left_behind:  # leave nothing behind, even failing
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        out.reader.join(10)  # it closes the pipe at EOF
    assert code == 0, text
    assert "demo: stopped 2 emulators, 2 gateways, the cloud and 3 brokers" in text
    assert not left_behind, left_behind
    for port in [*ports, cloud_broker, *(b for _, b in fogs.values())]:
        assert not listening(port), port
    print(f"ready after {ready_s:.1f} s")
