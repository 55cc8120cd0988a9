"""The cloud guide (docs/install-cloud.md) on two fresh Debian 12 machines booted with
systemd: a server installs the cloud and adds fogs; a fog installed as in the Pi guide joins
the city with its join file; meters (the real firmware, emulated) report to the fog, and the
city ranking and mean at the cloud show them; meter detail comes through the cloud with the
fog's token. The cloud broker takes the fog's bridge only with its own account, and that
account only on its own region's topics."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from .guide import (INSTALL, REPO, RAN, active, connack, guide_commands, http, on_computer, on_pi, put_debs,
                    put_file)

CLOUD_GUIDE = REPO / "docs" / "install-cloud.md"
CLOUD_INSTALL = "sudo apt install ./aquafog_*_all.deb ./aquafog-cloud_*_all.deb"
METERS = 3


@pytest.fixture
def forwarding():
    """The host routes between the containers' networks (each its own /24), as a LAN would."""
    knob = Path("/proc/sys/net/ipv4/ip_forward")
    before = knob.read_text()
    knob.write_text("1\n")
    yield
    knob.write_text(before)


def routes(a, b) -> None:
    a.run(["ip", "route", "replace", f"{b.ip.rsplit('.', 1)[0]}.0/24", "via", a.host_ip])
    b.run(["ip", "route", "replace", f"{a.ip.rsplit('.', 1)[0]}.0/24", "via", b.host_ip])


@pytest.mark.timeout(1200)
def test_a_cloud_and_a_fog_that_joins_it(make_container, debs, forwarding, timings):
    from emulator import Fleet

    server = make_container("server")
    fog = make_container("north")
    routes(server, fog)
    put_debs(server, debs, only=("aquafog", "aquafog-cloud"))
    put_debs(fog, debs)

    # the cloud: one command, then the fogs
    out = on_pi(server, CLOUD_INSTALL, path=CLOUD_GUIDE).stdout
    assert "aquafog-cloud.service is running" in out, out
    password = re.search(r"First admin: user 'admin', password (\S+)", out)[1]
    out = on_pi(server, "--fog north --fog south", path=CLOUD_GUIDE).stdout
    assert "fog north: copy /etc/aquafog/fogs/north.join" in out, out
    join = server.host_path("/etc/aquafog/fogs/north.join")
    assert oct(join.stat().st_mode & 0o777) == "0o600"
    # nobody on the cloud broker without an account; a fog's account only as itself
    assert connack(1883, host=server.ip) == "Not authorized"
    fog_pw = re.search(r'^password = "(\S+)"', join.read_text(), re.M)[1]
    assert connack(1883, "fog-north", fog_pw, "fog-north", host=server.ip) == "Success"
    assert connack(1883, "fog-north", "not-its-password", "fog-north", host=server.ip) == "Not authorized"

    # the fog: installed as in the Pi guide, then it joins with the file from the server
    out = on_pi(fog, INSTALL).stdout
    assert "aquafog-gateway.service is running" in out, out
    put_file(fog, join)
    out = on_pi(fog, "--join north.join", path=CLOUD_GUIDE).stdout
    assert f"bridged to the cloud broker {server.ip}:1883" in out, out
    assert active(fog, "aquafog-gateway") and active(fog, "mosquitto")
    token_file = fog.host_path("/etc/aquafog/cloud-reader.token")
    put_file(server, token_file, "north.token")
    on_pi(server, "--fog-token north=north.token", path=CLOUD_GUIDE)

    # MQTT over TLS for the meters, TLS only: a development CA made on the fog, the broker's
    # certificate for its address; the meters provisioned after it get the CA and port 8883
    fog.run(["aquafog", "tls", "ca", "--dir", "/root/certs"])
    fog.run(["aquafog", "tls", "server", "--dir", "/root/certs", fog.ip])
    out = fog.run(["aquafog", "setup", "fog", "--tls-cert", "/root/certs/server.crt", "--tls-key",
                   "/root/certs/server.key", "--tls-ca", "/root/certs/ca.crt", "--meter-port", "0"]).stdout
    assert f"meters connect to {fog.ip}:8883 (MQTT over TLS)" in out, out
    listening = fog.run(["ss", "-ltnH"]).stdout
    assert " 0.0.0.0:8883 " in listening and ":1883 " not in listening, listening
    assert connack(1883, host=fog.ip) == "refused"  # no plain listener for meters any more

    # meters report to the fog over TLS; the city sees them
    fog.run(["aquafog", "meter", "provision", "--count", str(METERS), "--prefix", "n", "--wifi-ssid", "pumphouse"])
    cfg = json.loads(fog.host_path("/var/lib/aquafog/meters/n0001/config.json").read_text())
    assert (cfg["mqtt_tls"], cfg["broker_port"], cfg["mqtt_cafile"]) == (True, 8883, "ca.crt"), cfg
    ids = [f"n{i:04d}" for i in range(1, METERS + 1)]
    fleet = Fleet.from_meters_dir(fog.host_path("/var/lib/aquafog/meters"), ids=ids, speed=60.0,
                                  start_epoch=time.time() - 3600, fs_root=fog.workdir / "flash")
    cloud = f"http://{server.ip}:8090/api/v1"
    status, body = http(f"{cloud}/auth/login", body={"username": "admin", "password": password})
    assert status == 200, body
    token = next(t for t in on_pi(server, "sudo aquafog token add admin", path=CLOUD_GUIDE).stdout.split()
                 if t.startswith("aft_"))
    fleet.start()
    try:
        def city():
            status, body = http(f"{cloud}/city/mean?period=month", token)
            return status == 200 and body.get("meters") == METERS and body
        t0 = time.monotonic()
        server.wait_for(city, 120, "the fog's meters in the city mean at the cloud")
        timings.record("meters -> city mean at the cloud", time.monotonic() - t0)
        server.wait_for(lambda: len(http(f"{cloud}/city/ranking?n=3&period=month", token)[1].get("items", [])) == 3,
                        120, "the city ranking lists the fog's meters")
        ranking = http(f"{cloud}/city/ranking?n=3&period=month", token)[1]
        assert {i["region"] for i in ranking["items"]} == {"north"}
        assert {i["meter"] for i in ranking["items"]} <= set(ids)
        # meter detail, forwarded by the cloud to the fog with the fog's token
        status, body = http(f"{cloud}/meters/n0001", token)
        assert status == 200 and (body["meter"], body["region"]) == ("n0001", "north"), body
    finally:
        fleet.stop()
    health = on_computer(server, "curl -s http://cloud.example:8090/api/v1/health", path=CLOUD_GUIDE)
    assert '"status": "ok"' in health or '"status":"ok"' in health, health
    missed = [cmd for _, cmd in guide_commands(CLOUD_GUIDE) if cmd not in RAN]
    assert missed == []
