"""Provisioned meters (`<meters_dir>/<id>/config.json`) in the emulator, against a real
Mosquitto run as a provisioned fog runs it: anonymous access off, a password file made
with mosquitto_passwd, the meters' ACL patterns, and a mutual-TLS listener whose
development CA this module makes itself.

- each meter runs with its own config.json: its password gets it in, its k_factor and
  report interval show in what reaches the gateway; a wrong password never gets in;
- a TLS meter connects with the files next to its config.json, copied to its flash;
- `--broker` / `broker=` moves every meter to another broker (the TLS name follows);
- the CLI: end to end against the broker, and one line and exit code 2 for a folder
  that cannot run.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aquafog.broker import LocalBroker, free_port
from aquafog.tls import TlsListener
from aquameter.config import validate
from emulator import Fleet, MetersDirError
from emulator.usage import Profile

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WAIT = 20.0
UNREACHABLE = "192.0.2.10"  # TEST-NET-1: never answers, so only an override reaches a broker
LEAK = Profile(2, 1.0, leak_ml_per_s=5.0)  # water flows at once


# --- a development CA -------------------------------------------------------------------------
def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class DevCa:
    """A CA that issues the broker's certificate (localhost, 127.0.0.1) and meters' client certificates."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AquaFog emulator test CA")])
        self.name = name
        self.cert = (self._builder(name, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def _builder(self, subject, public_key):
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(getattr(self, "name", subject))
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30)))

    def issue(self, common_name: str, server: bool = False) -> tuple[bytes, bytes]:
        """(certificate, key) PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        b = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key.public_key())
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


# --- a provisioned fog: the broker's password file and ACL, the meters' folders ---------------
ACL = """\
pattern write aquafog/%u/tele/#
pattern write aquafog/%u/stat/#
pattern write aquafog/%u/status
pattern read aquafog/%u/cmnd/#

user gateway
topic read aquafog/+/tele/#
topic read aquafog/+/stat/#
topic read aquafog/+/status
topic write aquafog/+/cmnd/#
"""


class Site:
    """What provisioning leaves behind, written here: accounts (mosquitto_passwd -b), the ACL,
    and `meters/<id>/config.json` (checked by the firmware's validator) with its TLS files."""

    def __init__(self, root: Path):
        self.root = root
        self.passwd = root / "aquafog.passwd"
        self.acl = root / "aquafog.acl"
        self.acl.write_text(ACL)
        self.meters_dir = root / "meters"
        self.meters_dir.mkdir()
        self.ca = DevCa()
        certs = root / "broker-certs"
        certs.mkdir()
        (certs / "ca.crt").write_bytes(self.ca.pem)
        crt, key = self.ca.issue("localhost", server=True)
        (certs / "server.crt").write_bytes(crt)
        (certs / "server.key").write_bytes(key)
        self.tls = TlsListener(cafile=str(certs / "ca.crt"), certfile=str(certs / "server.crt"),
                               keyfile=str(certs / "server.key"), port=free_port(), require_certificate=True)
        # run as root, LocalBroker keeps Mosquitto root (`user root`), so it reads these files in tmp_path
        self.broker = LocalBroker(root / "broker", allow_anonymous=False, password_file=self.passwd,
                                  acl_file=self.acl, tls=self.tls)
        self.gateway_password = self.account("gateway")

    def account(self, user: str, password: str | None = None) -> str:
        password = password or secrets.token_urlsafe(18)
        create = [] if self.passwd.exists() else ["-c"]
        subprocess.run(["mosquitto_passwd", *create, "-b", str(self.passwd), user, password],
                       check=True, capture_output=True, timeout=30)
        return password

    def meter(self, mid: str, broker_host: str = "127.0.0.1", broker_port: int | None = None,
              tls: bool = False, password: str | None = None, **keys) -> dict:
        """Provision `mid`: its account, its folder, its config.json (and, with tls, its CA,
        certificate and key next to it). `password`: what config.json says, if not the account's."""
        own = self.account(mid)
        raw = {"meter_id": mid, "wifi_ssid": "pumphouse", "wifi_password": "w1f1-secret",
               "broker_host": broker_host, "broker_port": broker_port or self.broker.port,
               "mqtt_password": own if password is None else password, "topic_root": "aquafog", **keys}
        d = self.meters_dir / mid
        d.mkdir()
        if tls:
            raw.update(mqtt_tls=True, mqtt_cafile="ca.crt", mqtt_certfile="client.crt", mqtt_keyfile="client.key")
            crt, key = self.ca.issue(mid)
            (d / "ca.crt").write_bytes(self.ca.pem)
            (d / "client.crt").write_bytes(crt)
            (d / "client.key").write_bytes(key)
        cfg, errors = validate(raw)
        assert errors == [], errors  # a board would start with it
        (d / "config.json").write_text(json.dumps(raw, indent=2))
        return raw


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.broker.stop()


@pytest.fixture
def start(site, ack_gateway):
    """start() -> the acknowledging stand-in gateway, logged in with its own account, once the
    broker runs: call it after provisioning (Mosquitto reads its password file when it starts)."""
    def up():
        site.broker.start()
        return ack_gateway(site.broker.host, site.broker.port, username="gateway", password=site.gateway_password)
    return up


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "emulator"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))


# --- through the Fleet API --------------------------------------------------------------------
def test_provisioned_meters_run_with_their_own_config(site, start, tmp_path):
    """pa and pc with their own passwords, k_factors and report intervals; pw's config.json
    has a password the broker does not know; pt over mutual TLS with its own files."""
    site.meter("pa", k_factor=1, report_interval_s=120, pulse_pin=5, relay_pin=27)
    site.meter("pc")  # the defaults: 450 pulses per litre, a reading a minute
    site.meter("pw", password="not-its-password")
    site.meter("pt", broker_port=site.tls.port, tls=True, mqtt_tls_hostname="localhost")
    gateway = start()
    speed = 120.0
    fleet = Fleet.from_meters_dir(site.meters_dir, speed=speed, start_epoch=time.time() - 1800,
                                  fs_root=tmp_path / "flash", profiles={"pa": LEAK, "pc": LEAK})
    assert sorted(m.id for m in fleet.meters) == ["pa", "pc", "pt", "pw"]
    pa, pc, pw, pt = (fleet.meter(m) for m in ("pa", "pc", "pw", "pt"))
    with fleet:
        fleet.wait_for(lambda: all(m.online for m in (pa, pc, pt)), WAIT, "pa, pc and pt online")
        gateway.wait_for(lambda: len(gateway.readings["pa"]) >= 4 and len(gateway.readings["pc"]) >= 4
                         and gateway.readings["pt"], WAIT, "readings of pa, pc and pt")
        # pw: refused by the broker, again and again, while the others report
        fleet.wait_for(lambda: pw.app.stats["connect_failures"] >= 2, WAIT, "pw refused twice")
        with pw.step_lock:  # between two of its attempts: the client of the last one
            assert not pw.online and pw.app.stats["connects"] == 0 and pw.sent == []
            assert pw.client.connack == "Not authorized"
        assert pa.client.connack == "Success"
        lag = fleet.scheduler.max_lag_s
    assert fleet.errors == []
    assert "pw" not in gateway.readings and "pw" not in gateway.status
    # each reading's litres follow its meter's own k_factor (the firmware's integer rule)
    for mid, ppm3 in (("pa", 1000), ("pc", 450_000)):
        rs = gateway.readings[mid]
        assert rs[-1]["pulses"] > 0, mid
        assert all(r["ml"] == r["pulses"] * 1_000_000 // ppm3 for r in rs), (mid, rs)
    # and their readings come at their own intervals (after the first, randomly placed one)
    slack = 5 + math.ceil(lag * speed)
    for mid, interval in (("pa", 120), ("pc", 60)):
        ts = [r["ts"] for r in gateway.readings[mid][1:]]
        gaps = [b - a for a, b in zip(ts, ts[1:])]
        assert gaps and all(abs(g - interval) <= slack for g in gaps), (mid, gaps, slack)
    assert pa.cfg["relay_pin"] == 27 and pa.cfg["pulse_pin"] == 5 and pc.cfg["relay_pin"] == 26
    # pt's CA, certificate and key went to its flash, as `make flash` copies them
    for name in ("ca.crt", "client.crt", "client.key"):
        assert (pt.fs_dir / name).read_bytes() == (site.meters_dir / "pt" / name).read_bytes()
    assert not (pa.fs_dir / "ca.crt").exists()


def test_broker_override_moves_a_tls_meter_and_its_certificate_name(site, start, tmp_path):
    """Provisioned for a broker at 192.0.2.10 with no mqtt_tls_hostname: run against the
    test broker, the name it checks is the test broker's (as on a board given that address)."""
    site.meter("ox", broker_host=UNREACHABLE, broker_port=8883, tls=True)
    site.meter("oy", broker_host=UNREACHABLE, broker_port=1883)  # left out by ids
    gateway = start()
    fleet = Fleet.from_meters_dir(site.meters_dir, ids=["ox"], broker=("127.0.0.1", site.tls.port), speed=60.0,
                                  fs_root=tmp_path / "flash")
    assert [m.id for m in fleet.meters] == ["ox"]
    ox = fleet.meter("ox")
    assert (ox.cfg["broker_host"], ox.cfg["broker_port"], ox.cfg["mqtt_tls_hostname"]) == (
        "127.0.0.1", site.tls.port, "127.0.0.1")
    with fleet:
        fleet.wait_for(lambda: ox.online and ox.sent and ox.outbox_depth == 0, WAIT, "ox online over TLS, acked")
    assert gateway.readings["ox"] and fleet.errors == []


def test_emulator_settings_still_apply_to_provisioned_meters(site, tmp_path):
    site.meter("ea", mqtt_keepalive_s=120, k_factor=2.5, report_interval_s=300)
    fleet = Fleet.from_meters_dir(site.meters_dir, speed=7.0, seed=9, start_epoch=1_700_000_000,
                                  config_overrides={"ring_size": 50}, fs_root=tmp_path / "flash")
    cfg = fleet.meter("ea").cfg
    raw = json.loads((site.meters_dir / "ea" / "config.json").read_text())
    assert cfg["mqtt_keepalive_s"] == 0  # the stand-in keeps the link alive on real time
    assert cfg["ring_size"] == 50
    assert {k: cfg[k] for k in raw if k != "mqtt_keepalive_s"} == {k: v for k, v in raw.items()
                                                                   if k != "mqtt_keepalive_s"}
    assert (fleet.clock.speed, fleet.clock.start_epoch, fleet.seed) == (7.0, 1_700_000_000, 9)
    with pytest.raises(TypeError, match="k_factor"):  # invented meters' settings: config.json has its own
        Fleet.from_meters_dir(site.meters_dir, k_factor=450)
    with pytest.raises(MetersDirError, match="meter nope: .*nope/config.json: missing"):
        Fleet.from_meters_dir(site.meters_dir, ids=["ea", "nope"])


# --- the command line -------------------------------------------------------------------------
def test_cli_runs_provisioned_meters_against_another_broker(site, start, tmp_path):
    site.meter("ca", broker_host=UNREACHABLE, broker_port=1883)
    site.meter("cb", broker_host=UNREACHABLE, broker_port=1883, k_factor=1)
    (site.meters_dir / ".gitignore").write_text("*\n")  # what provisioning puts there too
    gateway = start()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "emulator"), "--meters-dir", str(site.meters_dir),
         "--broker", "%s:%d" % (site.broker.host, site.broker.port), "--speed", "60", "--status-every", "0.5",
         "--start", str(int(time.time()) - 1800), "--state-dir", str(tmp_path / "flash")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        cwd=str(REPO))
    try:
        gateway.wait_for(lambda: gateway.readings["ca"] and gateway.readings["cb"], WAIT, "readings from the CLI")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "2 meters from %s (ca..cb) -> %s:%d," % (site.meters_dir, site.broker.host, site.broker.port) in out
    assert "stopping" in out and "Traceback" not in err
    r = gateway.readings["cb"][-1]
    assert r["ml"] == r["pulses"] * 1000  # cb's own k_factor: one pulse per litre
    for mid in ("ca", "cb"):  # each stopped gracefully, its state on the flash given
        gateway.wait_for(lambda: any(s["online"] is False for s in gateway.status[mid]), 10, "%s offline" % mid)
        assert json.loads((tmp_path / "flash" / mid / "state.json").read_text())["v"] == 1


def _bad_json(site):
    site.meter("pa")
    (site.meters_dir / "pa" / "config.json").write_text('{"meter_id": "pa",')
    return [], "meter pa: %s: not valid JSON" % (site.meters_dir / "pa" / "config.json")


def _rejected(site):
    raw = site.meter("pa")
    (site.meters_dir / "pa" / "config.json").write_text(json.dumps(dict(raw, k_factor=-1)))
    return [], "meter pa: %s: the firmware rejects it: k_factor: must be" % (site.meters_dir / "pa" / "config.json")


def _wrong_folder(site):
    raw = site.meter("pa")
    (site.meters_dir / "pb").mkdir()
    (site.meters_dir / "pb" / "config.json").write_text(json.dumps(raw))
    return ["--ids", "pb"], "meter pb: %s: meter_id is 'pa', but the folder is 'pb'" % (
        site.meters_dir / "pb" / "config.json")


def _missing_tls_file(site):
    site.meter("pa")
    site.meter("pt", tls=True)
    (site.meters_dir / "pt" / "client.key").unlink()
    return [], "meter pt: %s: missing (config.json names it as mqtt_keyfile" % (site.meters_dir / "pt" / "client.key")


def _unknown_id(site):
    site.meter("pa")
    return ["--ids", "pa,zz"], "meter zz: %s: missing" % (site.meters_dir / "zz" / "config.json")


def _no_meters(site):
    (site.meters_dir / "half-done").mkdir()  # a folder without config.json is no meter
    return [], "%s: no meters" % site.meters_dir


def _no_folder(site):
    site.meters_dir.rmdir()
    return [], "%s: not a folder" % site.meters_dir


def _invented_flag(site):
    site.meter("pa")
    return ["--password", "x"], "--password: not with --meters-dir (each meter's config.json sets mqtt_password)"


@pytest.mark.parametrize("case", [_bad_json, _rejected, _wrong_folder, _missing_tls_file, _unknown_id, _no_meters,
                                  _no_folder, _invented_flag], ids=lambda f: f.__name__.strip("_"))
def test_cli_names_what_keeps_a_meters_folder_from_running(site, case):
    args, expected = case(site)
    r = run_cli("--meters-dir", str(site.meters_dir), "--broker", "127.0.0.1:%d" % free_port(), *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("emulator: error: " + expected), r.stderr
    assert r.stdout == ""  # nothing started
