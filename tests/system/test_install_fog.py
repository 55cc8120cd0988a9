"""The Pi guide (docs/install-fog.md) followed on a fresh Debian 12 booted with systemd as
PID 1, on amd64 and on arm64 (the CPU of a 64-bit Raspberry Pi OS, under qemu).

amd64: the guide's one install command; the services run, hardened; emulated meters running
the real firmware, provisioned by the guide's command, report over the network with their own
passwords; the gateway is killed (-9), hung (SIGSTOP: systemd's watchdog), Mosquitto
restarted, the container rebooted: every reading stored exactly once and every litre equal to
the meters' ground truth. Then: setup again changes nothing, a setting changes, an upgrade
keeps data, config and passwords, remove keeps the data, purge deletes it.

Every command of the guide is run here, as the guide writes it (test_every_guide_command_is_run
checks that none was skipped). The packages come from `make deb`, the guide's first command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from faults.ledger import integrity, released_unstored, tally

from .guide import INSTALL, RAN, active, connack, guide, guide_commands, http, on_computer, on_pi, put_debs, restarted

METERS = 8  # of the 10 the guide provisions

@pytest.mark.timeout(1200)
def test_the_pi_guide_on_a_fresh_debian_with_systemd(make_container, debs, timings):
    from emulator import Fleet

    c = make_container("pi")
    put_debs(c, debs)
    assert not c.host_path("/usr/sbin/mosquitto").exists()  # the install brings it

    # --- 2. the one install command -------------------------------------------------------
    t0 = time.monotonic()
    out = on_pi(c, INSTALL).stdout
    timings.record("install (apt, venv, setup)", time.monotonic() - t0)
    assert "aquafog-gateway.service is running" in out, out
    password = re.search(r"First admin: user 'admin', password (\S+)", out)[1]
    assert f"dashboard and API: http://{c.ip}:8080/" in out, out
    assert active(c, "mosquitto") and active(c, "aquafog-gateway")
    assert c.run("systemctl is-enabled aquafog-gateway mosquitto").stdout.split() == ["enabled", "enabled"]

    # the layout and its owners: secrets not readable by others, the store the service's own
    def stat(path) -> tuple[str, int]:
        owner, mode = c.run(["stat", "-c", "%U:%G %a", path]).stdout.split()
        return owner, int(mode, 8)
    assert stat("/etc/aquafog/gateway.toml") == ("root:aquafog", 0o640)
    assert stat("/etc/aquafog/setup.toml") == ("root:root", 0o600)
    assert stat("/var/lib/aquafog") == ("aquafog:aquafog", 0o750)
    assert stat("/var/lib/aquafog/gateway.db") == ("aquafog:aquafog", 0o640)
    assert stat("/var/lib/aquafog/meters") == ("root:root", 0o700)
    assert stat("/etc/mosquitto/aquafog/meters.passwd") == ("root:mosquitto", 0o640)
    assert stat("/etc/mosquitto/conf.d/aquafog.conf") == ("root:mosquitto", 0o640)
    assert c.run(["stat", "-c", "%U", f"/proc/{c.main_pid('aquafog-gateway')}"]).stdout.strip() == "aquafog"
    # the unit's hardening as systemd applies it
    show = dict(line.split("=", 1) for line in c.run(
        ["systemctl", "show", "aquafog-gateway", "-p", "Type,User,NoNewPrivileges,ProtectSystem,ProtectHome,"
         "PrivateTmp,CapabilityBoundingSet,WatchdogUSec,Restart,ReadWritePaths,BindsTo,PartOf"]).stdout.splitlines())
    assert (show["Type"], show["User"], show["NoNewPrivileges"], show["ProtectSystem"], show["ProtectHome"],
            show["PrivateTmp"], show["CapabilityBoundingSet"], show["Restart"]) == (
        "notify", "aquafog", "yes", "strict", "yes", "yes", "", "on-failure"), show
    assert show["WatchdogUSec"] == "20s" and show["ReadWritePaths"] == "/var/lib/aquafog", show
    assert show["BindsTo"] == "mosquitto.service" and show["PartOf"] == "mosquitto.service", show
    # the gateway cannot write outside its store (ProtectSystem=strict, as its user)
    denied = c.run(["systemd-run", "--wait", "--pipe", "-q", "-p", "User=aquafog", "-p", "ProtectSystem=strict",
                    "-p", "ReadWritePaths=/var/lib/aquafog", "sh", "-c", "touch /etc/aquafog/x"], check=False)
    assert denied.returncode != 0

    # --- 3. it runs: status, journal, health from the network, login ----------------------
    status = on_pi(c, "systemctl status aquafog-gateway").stdout
    assert "active (running)" in status and "API on 0.0.0.0:8080" in status, status
    assert "AquaFog gateway" in on_pi(c, "journalctl -u aquafog-gateway").stdout
    health = json.loads(on_computer(c, "curl -s http://raspberrypi.local:8080/api/v1/health"))
    assert health["status"] == "ok" and health["mqtt"] == {"receiver": "connected", "publisher": "connected"}
    assert http(f"http://{c.ip}:8080/api/v1/auth/login", body={"username": "admin", "password": password})[0] == 200

    # no anonymous client, no meter password on the service listener (loopback only)
    assert connack(1883, host=c.ip) == "Not authorized"
    listening = c.run(["ss", "-ltnH"]).stdout
    assert re.search(r"127\.0\.0\.1:1884\b", listening) and re.search(r"0\.0\.0\.0:1883\b", listening), listening
    assert not re.search(r"0\.0\.0\.0:1884\b|\*:1884\b", listening), listening

    # --- 4. provision meters (the broker reloads, no restart), then they report -------------
    mosquitto_pid = c.main_pid("mosquitto")
    out = on_pi(c, "sudo aquafog meter provision").stdout
    assert "provisioned 10 meter(s)" in out and "reload" in out, out
    assert c.main_pid("mosquitto") == mosquitto_pid  # reloaded, not restarted
    listed = on_pi(c, "sudo aquafog meter list").stdout
    assert listed.count("never seen") == 10, listed
    meters_dir = c.host_path("/var/lib/aquafog/meters")
    cfg = json.loads((meters_dir / "m0001" / "config.json").read_text())
    assert (cfg["broker_host"], cfg["broker_port"], cfg["wifi_ssid"]) == (c.ip, 1883, "pumphouse"), cfg
    # Mosquitto rereads its files a moment after the reload's SIGHUP
    c.wait_for(lambda: connack(1883, "m0001", cfg["mqtt_password"], "m0001", host=c.ip) == "Success", 10,
               "the new meter's account at the broker")
    assert connack(1883, "m0001", "a-wrong-password", "m0001", host=c.ip) == "Not authorized"
    token = on_pi(c, "sudo aquafog token add admin").stdout.split()
    token = next(t for t in token if t.startswith("aft_"))

    ids = [f"m{i:04d}" for i in range(1, METERS + 1)]
    # a reading every 3 s (60 s at 20x): the gateway acknowledges at most once a second, so a
    # meter's outbox empties between two readings and the fleet can be quiesced at the end
    fleet = Fleet.from_meters_dir(meters_dir, ids=ids, speed=20.0, start_epoch=time.time() - 3 * 3600,
                                  fs_root=c.workdir / "flash")
    gw = f"http://{c.ip}:8080/api/v1"

    def accepted() -> int:
        return http(f"{gw}/health")[1].get("ingest", {}).get("accepted", -1)

    def flowing(after: int, what: str) -> None:
        """Readings reach the store again: the running gateway accepts more than `after`."""
        c.wait_for(lambda: accepted() > after, 60, what)

    fleet.start()
    try:
        fleet.wait_for(lambda: all(m.online for m in fleet.meters) and
                       sum(len(m.sent) for m in fleet.meters) >= 20, 60, "every meter reporting")
        assert http(f"{gw}/meters/m0001", token)[1]["online"] is True

        # kill -9: systemd starts it again; the broker held what it had not stored
        pid = c.main_pid("aquafog-gateway")
        os.kill(c.host_pid(pid), signal.SIGKILL)
        t0 = time.monotonic()
        pid = restarted(c, "aquafog-gateway", pid, 30, "the gateway back after kill -9")
        timings.record("kill -9 -> running again", time.monotonic() - t0)
        flowing(0, "ingest after kill -9")
        assert released_unstored(fleet, c.host_path("/var/lib/aquafog/gateway.db")) == {}

        # hung: stopped, it no longer feeds the watchdog; systemd kills and restarts it
        os.kill(c.host_pid(pid), signal.SIGSTOP)
        t0 = time.monotonic()
        pid = restarted(c, "aquafog-gateway", pid, 60, "the hung gateway restarted by the watchdog")
        timings.record("SIGSTOP -> restarted by the watchdog", time.monotonic() - t0)
        assert "Watchdog timeout" in c.journal("aquafog-gateway") or "watchdog" in c.journal("aquafog-gateway")
        flowing(0, "ingest after the watchdog restart")

        # Mosquitto restarted: the gateway, bound to it, restarts with it; meters reconnect
        c.run(["systemctl", "restart", "mosquitto"])
        pid = restarted(c, "aquafog-gateway", pid, 60, "the gateway restarted with Mosquitto")
        flowing(0, "ingest after a Mosquitto restart")

        # a reboot (a power cut, gently): everything comes back at boot
        t0 = time.monotonic()
        c.reboot()
        c.wait_for(lambda: active(c, "aquafog-gateway") and active(c, "mosquitto"), 60, "services after reboot")
        timings.record("reboot -> gateway running", time.monotonic() - t0)
        flowing(0, "ingest after the reboot")
        before = accepted()
        fleet.wait_for(lambda: all(m.online for m in fleet.meters), 60, "meters back online")
        flowing(before, "more readings after the reboot")
        assert "AquaFog gateway" in c.journal("aquafog-gateway", boot_only=True)

        try:
            fleet.quiesce(90, freeze=True)
        except TimeoutError:
            states = {m.id: (m.online, m.outbox_depth, m.app.reading_requested, list(m.app.outbox.runs),
                             m.sent[-1] if m.sent else None, m.app.stats) for m in fleet.meters}
            raise AssertionError(f"meters {states}\ngateway {http(f'{gw}/health')}\n"
                                 f"stored {http(f'{gw}/meters/m0001', token)}\n"
                                 + c.journal("aquafog-gateway", boot_only=True)[-4000:]
                                 + c.run("tail -60 /var/log/mosquitto/mosquitto.log").stdout) from None
        db = c.host_path("/var/lib/aquafog/gateway.db")
        t = tally("installed fog: kill -9, hang, Mosquitto restart, reboot", fleet, db, ids)
        print(f"{t.sent} readings sent, {t.persisted} stored, {t.lost} lost; {t.truth_ml / 1000:.3f} L truth, "
              f"{t.persisted_ml / 1000:.3f} L stored")
        assert t.sent > 60 and t.lost == 0 and t.lost_ml == 0 and t.double_ml == 0 and not t.notes, t
        assert integrity(db) == "ok"
    finally:
        fleet.stop()

    # --- setup again: nothing changes; a setting changes only what it touches ------------------
    pid = c.main_pid("aquafog-gateway")
    c.run(["aquafog", "setup", "fog"])
    assert c.main_pid("aquafog-gateway") == pid  # nothing changed, nothing restarted
    toml = c.host_path("/etc/aquafog/gateway.toml")
    gateway_password = re.search(r'^mqtt_password = "(\S+)"', toml.read_text(), re.M)[1]
    toml.write_text(toml.read_text() + "\n# the operator's own setting\nbatch_max_delay_ms = 300\n")
    on_pi(c, "sudo aquafog setup fog --timezone")
    text = toml.read_text()
    assert 'timezone = "America/Sao_Paulo"' in text and "batch_max_delay_ms = 300" in text
    assert f'mqtt_password = "{gateway_password}"' in text
    pid = restarted(c, "aquafog-gateway", pid, 60, "the gateway on its new time zone")

    # --- an upgrade (the same command, newer files): data, config and passwords kept ---------
    c.wait_for(lambda: http(f"{gw}/health")[0] == 200, 30, "healthy on the new time zone")
    before = {m: http(f"{gw}/meters/{m}", token)[1]["consumption"]["total_litres"] for m in ids}
    repack(debs, c.workdir / "newer", "upgrade1")
    put_debs(c, c.workdir / "newer")
    out = on_pi(c, INSTALL).stdout
    assert "First admin" not in out, out  # the admin exists: no new password
    assert c.run(["dpkg-query", "-W", "-f", "${Version}", "aquafog-fog"]).stdout.endswith("+upgrade1")
    pid = restarted(c, "aquafog-gateway", pid, 60, "the gateway restarted by the upgrade")
    text = toml.read_text()
    assert f'mqtt_password = "{gateway_password}"' in text and "batch_max_delay_ms = 300" in text
    c.wait_for(lambda: http(f"{gw}/health")[0] == 200, 30, "healthy after the upgrade")
    assert {m: http(f"{gw}/meters/{m}", token)[1]["consumption"]["total_litres"] for m in ids} == before
    assert sum(before.values()) > 0
    assert http(f"{gw}/auth/login", body={"username": "admin", "password": password})[0] == 200
    assert connack(1883, "m0001", cfg["mqtt_password"], "m0001", host=c.ip) == "Success"

    # --- remove keeps the data; purge deletes it ---------------------------------------------
    on_pi(c, "sudo apt remove aquafog-fog aquafog")
    assert not active(c, "aquafog-gateway")
    assert c.host_path("/var/lib/aquafog/gateway.db").exists() and toml.exists()
    assert not c.host_path("/opt/aquafog").exists()
    on_pi(c, "sudo apt purge aquafog-fog aquafog")
    for gone in ("/var/lib/aquafog", "/etc/aquafog", "/etc/mosquitto/conf.d/aquafog.conf", "/etc/mosquitto/aquafog"):
        assert not c.host_path(gone).exists(), gone
    c.wait_for(lambda: active(c, "mosquitto"), 30, "Mosquitto on its stock configuration")


def repack(debs: Path, dest: Path, suffix: str) -> None:
    """The same packages under a newer version (<version>+<suffix>), as a next release."""
    dest.mkdir(parents=True, exist_ok=True)
    for deb in debs.iterdir():
        tree = dest / (deb.name + ".d")
        subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
        control = tree / "DEBIAN" / "control"
        text = control.read_text()
        version = re.search(r"^Version: (\S+)", text, re.M)[1]
        text = re.sub(r"^Version: .*$", f"Version: {version}+{suffix}", text, flags=re.M)
        control.write_text(text.replace(f"(= {version})", f"(= {version}+{suffix})"))
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "-b", str(tree),
                        str(dest / f"{deb.name.split('_')[0]}_{version}+{suffix}_all.deb")], check=True,
                       capture_output=True)
        shutil.rmtree(tree)


def test_every_guide_command_is_run():
    """Runs after the guide test (same module, in order): nothing the guide shows went untested."""
    missed = [cmd for _, cmd in guide_commands() if cmd not in RAN]
    if not RAN:
        pytest.skip("the guide test did not run in this session")
    assert missed == []


def test_the_guide_says_where_each_command_runs():
    assert {where for where, _ in guide_commands()} == {"the Pi", "your computer"}
    assert guide("make deb") and guide(INSTALL) == INSTALL
