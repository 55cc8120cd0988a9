"""The same install on arm64, the CPU of a 64-bit Raspberry Pi OS: a Debian 12 arm64 root
booted with systemd under qemu-user, the guide's install command, a few provisioned meters
(the real firmware, emulated on the host) reporting to it over the network, and every
reading stored exactly. Small on purpose: everything in the container runs emulated."""

from __future__ import annotations

import json
import re
import time

import pytest

from faults.ledger import integrity, tally

from .guide import INSTALL, active, http, on_pi, put_debs

METERS = 3


@pytest.mark.timeout(1500)
def test_the_install_on_arm64(make_container, arm64_root, debs, timings):
    from emulator import Fleet

    c = make_container("pi64", root=arm64_root)
    assert c.run(["dpkg", "--print-architecture"]).stdout.strip() == "arm64"
    put_debs(c, debs)
    t0 = time.monotonic()
    out = on_pi(c, INSTALL, timeout=900).stdout
    timings.record("install on arm64 (qemu)", time.monotonic() - t0)
    assert "aquafog-gateway.service is running" in out, out
    # the environment the package built holds arm64 code (the C speed-ups of SQLAlchemy)
    arch = c.run(["/opt/aquafog/venv/bin/python", "-c", "import platform; print(platform.machine())"])
    assert arch.stdout.strip() == "aarch64"
    assert c.run("ls /opt/aquafog/venv/lib/python3.11/site-packages/sqlalchemy/engine/*aarch64*.so").returncode == 0

    out = c.run(["aquafog", "meter", "provision", "--count", str(METERS), "--prefix", "a", "--wifi-ssid", "pumphouse"],
                timeout=300).stdout
    assert f"provisioned {METERS} meter(s)" in out, out
    meters_dir = c.host_path("/var/lib/aquafog/meters")
    ids = [f"a{i:04d}" for i in range(1, METERS + 1)]
    assert json.loads((meters_dir / "a0001" / "config.json").read_text())["broker_host"] == c.ip
    fleet = Fleet.from_meters_dir(meters_dir, ids=ids, speed=30.0, start_epoch=time.time() - 1800,
                                  fs_root=c.workdir / "flash")
    fleet.start()
    try:
        fleet.wait_for(lambda: sum(len(m.sent) for m in fleet.meters) >= 30, 240, "readings from every meter")
        fleet.quiesce(180, freeze=True)
        db = c.host_path("/var/lib/aquafog/gateway.db")
        t = tally("arm64 fog", fleet, db, ids)
        print(f"arm64: {t.sent} readings sent, {t.persisted} stored, {t.truth_ml / 1000:.3f} L truth, "
              f"{t.persisted_ml / 1000:.3f} L stored")
        assert t.sent >= 30 and t.lost == 0 and t.lost_ml == 0 and t.double_ml == 0 and not t.notes, t
        assert integrity(db) == "ok"
    finally:
        fleet.stop()
    health = http(f"http://{c.ip}:8080/api/v1/health")[1]
    assert health["status"] == "ok" and re.fullmatch(r"\d+\.\d+\.\d+.*", health["version"])
    assert active(c, "mosquitto")
