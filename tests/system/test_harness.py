"""The harness itself: roots boot with systemd, commands and the network work, reboots keep
state, apt installs offline, and stop() leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .container import CommandFailed, Container, free_subnet_index
from .debian import DOWNLOAD_ONLY


def test_boots_with_systemd_and_runs_commands(container):
    assert container.state == "running", container.failed_units
    assert container.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert container.run("hostname").stdout.strip() == "fog"
    assert container.run("id -un", user="nobody").stdout == "nobody\n"
    p = container.run("echo out; echo err >&2; exit 3", check=False)
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandFailed) as e:
        container.run(["sh", "-c", "echo why >&2; exit 4"])
    assert "exited with 4" in str(e.value) and "why" in str(e.value)
    container.host_path("/root/from-host").write_text("hello")
    assert container.run("cat /root/from-host").stdout == "hello"


def test_container_ip_reachable_from_host(container):
    container.host_path("/srv/hello.txt").write_text("from the container")
    container.run(["systemd-run", "--unit=web", "python3", "-m", "http.server", "--bind",
                   "0.0.0.0", "--directory", "/srv", "8000"])
    url = f"http://{container.ip}:8000/hello.txt"

    def fetch():
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()
    assert container.wait_for(fetch, 20, f"{url} from the host") == "from the container"


UNIT = """[Unit]
Description=harness probe
[Service]
ExecStart=/usr/bin/python3 -m http.server --bind 0.0.0.0 8001
Restart=always
RestartSec=0.2
[Install]
WantedBy=multi-user.target
"""


def test_reboot_brings_enabled_unit_back(container, timings):
    container.host_path("/etc/systemd/system/probe.service").write_text(UNIT)
    container.run("systemctl daemon-reload && systemctl enable --now probe")
    old_pid1 = container.pid1
    container.reboot()
    timings.record("reboot amd64", container.timings["reboot"])
    assert container.pid1 != old_pid1
    assert container.state == "running", container.failed_units
    container.wait_for(lambda: container.run("systemctl is-active probe", check=False)
                       .stdout.strip() == "active", 20, "probe.service active after reboot")
    # Its main PID, mapped to the host, is the process systemd runs; kill it from the host
    # and systemd restarts it (Restart=always).
    pid = container.main_pid("probe")
    host_pid = container.host_pid(pid)
    assert b"http.server" in Path(f"/proc/{host_pid}/cmdline").read_bytes()
    os.kill(host_pid, signal.SIGKILL)
    container.wait_for(lambda: container.main_pid("probe") not in (0, pid), 20,
                       "probe.service restarted with a new PID")
    assert "probe.service" in container.journal("probe")


def _probe_deb(tmp_path: Path) -> Path:
    """A .deb that depends on what the AquaFog package does, as `apt install ./x.deb` sees."""
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/share/aquafog-probe").mkdir(parents=True)
    (pkg / "usr/share/aquafog-probe/ok").write_text("ok\n")
    (pkg / "DEBIAN/control").write_text(
        "Package: aquafog-probe\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: AquaFog tests <tests@example.invalid>\n"
        f"Depends: {', '.join(DOWNLOAD_ONLY)}\nDescription: harness probe\n")
    debs = tmp_path / "debs"
    debs.mkdir()
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(pkg),
                    str(debs / "aquafog-probe_1.0_all.deb")], check=True, capture_output=True)
    return debs


def test_offline_apt_install_of_a_local_deb(make_container, tmp_path):
    c = make_container("offline", binds_ro=[(_probe_deb(tmp_path), "/debs")])
    # Offline for real: no default route, so nothing can be fetched.
    assert "default" not in c.run("ip route").stdout
    connect = "import socket; socket.create_connection(('151.101.2.132', 80), 2)"  # a mirror
    assert "Network is unreachable" in c.run(["python3", "-c", connect], check=False).stderr
    c.run("apt-get install -y /debs/aquafog-probe_1.0_all.deb", timeout=180)
    assert c.run("cat /usr/share/aquafog-probe/ok").stdout == "ok\n"
    c.run("python3 -m venv /tmp/venv && /tmp/venv/bin/pip --version")
    assert "mosquitto_pub" in c.run("mosquitto_pub --help", check=False).stdout
    # The broker came in as a dependency and its unit started (systemd is PID 1).
    c.wait_for(lambda: c.run("systemctl is-active mosquitto", check=False).stdout.strip()
               == "active", 20, "mosquitto.service active")


def test_stop_leaves_nothing_behind(amd64_root, tmp_path):
    c = Container(amd64_root, "gone", free_subnet_index(), workdir=tmp_path / "gone").start()
    c.run(["systemd-run", "--unit=sleeper", "sleep", "infinity"])
    pids = [c.pid1, c.nspawn.pid, c.host_pid(c.main_pid("sleeper"))]
    os.kill(c.pid1, signal.SIGSTOP)  # a hung container: poweroff cannot work
    c.stop(timeout=4)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} still there"
    assert not Path(f"/run/netns/{c.netns}").exists()
    assert not Path(f"/sys/class/net/{c.veth}").exists()
    assert not c.merged.is_mount()
    c.stop()  # twice is fine


