"""MQTT over TLS against a real Mosquitto: the broker's TLS listener (aquafog.tls), the
development CA of `aquafog tls`, and the clients (paho, the real gateway).

The broker runs as a provisioned fog does (allow_anonymous false, password file, ACL),
so every TLS client also logs in with its own account. What must fail is proved by the
failure itself (a verification error, a closed connection, a refused handshake), never
by waiting for nothing to happen.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aquafog.broker import LocalBroker, free_port
from aquafog.gateway.local import LocalGateway
from aquafog.tls import TlsListener
from integration.test_provision import TOPICS, WAIT, Client, Fog, reading

pytestmark = pytest.mark.integration

def devca(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "aquafog", "tls", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def pki():
    """A development CA with the broker's certificate (loopback names) and client
    certificates for the gateway and meter ma; a second, unrelated CA ("rogue") with a
    client certificate; and a broker certificate of the real CA for another host only."""
    root = Path(tempfile.mkdtemp(prefix="aquafog-tls-"))
    os.chmod(root, 0o755)
    good, rogue, other = root / "ca", root / "rogue", root / "other-host"
    devca("ca", "--dir", str(good))
    devca("server", "--dir", str(good))  # localhost, 127.0.0.1, ::1
    devca("client", "gateway", "--dir", str(good))
    devca("client", "ma", "--dir", str(good))
    devca("ca", "--dir", str(rogue), "--name", "Someone else's CA")
    devca("client", "ma", "--dir", str(rogue))
    # the real CA's certificate for fog.test only: right issuer, wrong name for 127.0.0.1
    other.mkdir()
    for name in ("ca.crt", "ca.key"):
        shutil.copy2(good / name, other / name)
    devca("server", "--dir", str(other), "--no-loopback", "fog.test")
    yield root
    shutil.rmtree(root)


class TlsFog(Fog):
    """A provisioned fog (meters ma, mb; the gateway's account) whose broker also has a TLS listener."""

    def __init__(self, root: Path, pki: Path, server_dir: str = "ca", require_certificate: bool = False):
        super().__init__(root)
        self.pki = pki
        self.tls = TlsListener(cafile=str(pki / "ca" / "ca.crt"), certfile=str(pki / server_dir / "server.crt"),
                               keyfile=str(pki / server_dir / "server.key"), port=free_port(),
                               require_certificate=require_certificate)
        self.broker = LocalBroker(root / "broker", port=self.broker.port, allow_anonymous=False,
                                  password_file=self.passwd, acl_file=self.acl, tls=self.tls)

    def context(self, ca: str = "ca", client: str | None = None, client_ca: str = "ca") -> ssl.SSLContext:
        """What a client trusts (the CA folder `ca`) and, optionally, its certificate from `client_ca`."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.pki / ca / "ca.crt")
        if client:
            ctx.load_cert_chain(self.pki / client_ca / "clients" / f"{client}.crt",
                                self.pki / client_ca / "clients" / f"{client}.key")
        return ctx

    def tls_client(self, user: str, password: str, ctx: ssl.SSLContext, client_id: str = "") -> Client:
        c = Client(self.tls.port, user, password, client_id or f"tls-{user}-{time.monotonic_ns()}")
        c.c.tls_set_context(ctx)
        return c


def make_fog(pki: Path, **kw):
    # Not tmp_path: Mosquitto reads the password and ACL files (see test_provision.py)
    root = Path(tempfile.mkdtemp(prefix="aquafog-tlsfog-"))
    os.chmod(root, 0o711)
    f = TlsFog(root, pki, **kw)
    f.provision("ma", "mb")
    f.account("gateway", "--password-out", str(root / "gateway.toml"))
    f.broker.start()
    return f


def running_fog(pki, **listener):
    f = make_fog(pki, **listener)
    f.clients = []
    yield f
    for c in f.clients:
        c.close()
    f.broker.stop()
    shutil.rmtree(f.root)


@pytest.fixture
def fog(pki):
    yield from running_fog(pki)


@pytest.fixture
def mtls_fog(pki):
    yield from running_fog(pki, require_certificate=True)


@dataclass
class TlsFailure:
    kind: type
    verify_code: int | None
    verify_message: str


def attempt(port: int, ctx: ssl.SSLContext, user: str, password: str) -> tuple[str, object]:
    """One connection, no retries: ("connack", reason code) when the broker answered the
    CONNECT, ("tls", error) when the handshake failed, ("closed", reason) when the broker
    dropped the connection before answering."""
    events: queue.Queue = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"attempt-{time.monotonic_ns()}",
                    reconnect_on_failure=False)
    c.username_pw_set(user, password)
    c.tls_set_context(ctx)
    c.on_connect = lambda _c, _u, _f, rc, _p: events.put(("connack", rc))
    c.on_disconnect = lambda _c, _u, _f, rc, _p: events.put(("closed", rc))
    failure = None
    # paho 2.1 leaves the sockets of a failed handshake (and its wake-up socket pair) to the
    # garbage collector: collect them here, where their ResourceWarning is expected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            c.connect("127.0.0.1", port, keepalive=30)
        except ssl.SSLError as exc:
            failure = TlsFailure(type(exc), getattr(exc, "verify_code", None), getattr(exc, "verify_message", ""))
        if failure is not None:
            del c
        gc.collect()
    if failure is not None:
        return "tls", failure
    c.loop_start()
    try:
        return events.get(timeout=WAIT)
    finally:
        c.disconnect()
        c.loop_stop()


def test_the_generated_config_has_the_tls_listener_after_the_plain_one(fog):
    conf = fog.broker.conf_path.read_text().splitlines()
    plain = conf.index(f"listener {fog.broker.port} 127.0.0.1")
    tls = conf.index(f"listener {fog.tls.port} 127.0.0.1")
    assert plain < tls
    assert conf[tls + 1:tls + 6] == [f"cafile {fog.pki / 'ca' / 'ca.crt'}", f"certfile {fog.pki / 'ca' / 'server.crt'}",
                                     f"keyfile {fog.pki / 'ca' / 'server.key'}", "tls_version tlsv1.2",
                                     "require_certificate false"]


def test_a_meter_publishes_over_tls_and_the_gateway_account_receives_it(fog):
    gw = fog.tls_client("gateway", fog.service_password("gateway"), fog.context())
    fog.clients.append(gw)
    assert not gw.connect().is_failure
    assert isinstance(gw.c.socket(), ssl.SSLSocket) and gw.c.socket().version() in ("TLSv1.2", "TLSv1.3")
    assert all(not rc.is_failure for rc in gw.subscribe(*TOPICS.subscriptions()))
    ma = fog.tls_client("ma", fog.config("ma")["mqtt_password"], fog.context(), client_id="ma")
    fog.clients.append(ma)
    assert not ma.connect().is_failure
    assert ma.publish(TOPICS.reading("ma"), reading(0, 450)) == "acked"
    assert gw.until(TOPICS.reading("ma")) == [(TOPICS.reading("ma"), reading(0, 450))]


def test_passwords_still_apply_on_the_tls_listener(fog):
    kind, rc = attempt(fog.tls.port, fog.context(), "ma", "wrong-password")
    assert kind == "connack" and str(rc) == "Not authorized"


def answer(port: int, data: bytes) -> bytes:
    """Everything the broker sends back to `data` until it closes the connection."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(data)
        try:
            while chunk := s.recv(64):
                got += chunk
                if got.startswith(b"\x20") and len(got) >= 4:  # a whole CONNACK
                    break
        except ConnectionResetError:
            pass
    return got


def test_plain_mqtt_on_the_tls_port_gets_no_connack(fog):
    # an MQTT 3.1.1 CONNECT (client id "plain", clean session, no password), sent in clear
    connect = bytes([0x10, 17, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 5]) + b"plain"
    assert answer(fog.broker.port, connect) == b"\x20\x02\x00\x05"  # plain port: CONNACK "not authorized"
    assert not answer(fog.tls.port, connect).startswith(b"\x20")  # TLS port: closed, no CONNACK


def test_a_client_trusting_another_ca_refuses_the_broker(fog):
    kind, exc = attempt(fog.tls.port, fog.context(ca="rogue"), "ma", fog.config("ma")["mqtt_password"])
    assert kind == "tls" and exc.kind is ssl.SSLCertVerificationError
    # Mosquitto sends its CA along: "self-signed certificate in certificate chain" (19);
    # without it, "unable to get local issuer certificate" (20)
    assert exc.verify_code in (19, 20), exc.verify_message


def test_a_certificate_for_another_host_is_refused(pki):
    f = make_fog(pki, server_dir="other-host")  # signed by the right CA, for fog.test only
    try:
        kind, exc = attempt(f.tls.port, f.context(), "ma", f.config("ma")["mqtt_password"])
        assert kind == "tls" and exc.kind is ssl.SSLCertVerificationError
        assert "mismatch" in exc.verify_message  # "IP address mismatch, certificate is not valid for '127.0.0.1'"
    finally:
        f.broker.stop()
        shutil.rmtree(f.root)


def test_mutual_tls_refuses_a_client_without_a_certificate_or_with_another_cas(mtls_fog):
    password = mtls_fog.config("ma")["mqtt_password"]
    for ctx in (mtls_fog.context(), mtls_fog.context(client="ma", client_ca="rogue")):
        kind, why = attempt(mtls_fog.tls.port, ctx, "ma", password)
        # TLS 1.2 fails the handshake; TLS 1.3 finishes it and the broker closes the connection
        assert kind in ("tls", "closed"), (kind, why)


def test_mutual_tls_lets_a_client_with_a_certificate_of_the_ca_in(mtls_fog):
    look = mtls_fog.tls_client("gateway", mtls_fog.service_password("gateway"), mtls_fog.context(client="gateway"))
    mtls_fog.clients.append(look)
    assert not look.connect().is_failure
    look.subscribe(TOPICS.reading("ma"))
    ma = mtls_fog.tls_client("ma", mtls_fog.config("ma")["mqtt_password"], mtls_fog.context(client="ma"), "ma")
    mtls_fog.clients.append(ma)
    assert not ma.connect().is_failure
    assert ma.publish(TOPICS.reading("ma"), reading(0, 900)) == "acked"
    assert look.until(TOPICS.reading("ma")) == [(TOPICS.reading("ma"), reading(0, 900))]


def gateway(f: TlsFog, name: str, **tls) -> LocalGateway:
    return LocalGateway(f.root / name, f.tls.port, db_path=str(f.db), mqtt_host="127.0.0.1",
                        mqtt_username="gateway", mqtt_password=f.service_password("gateway"),
                        mqtt_client_id=f"aquafog-gateway-{name}", batch_max_delay_ms=50, ack_interval_ms=100, **tls)


def test_the_gateway_ingests_a_reading_over_mutual_tls(mtls_fog):
    pki = mtls_fog.pki
    gw = gateway(mtls_fog, "gw", mqtt_cafile=str(pki / "ca" / "ca.crt"),
                 mqtt_certfile=str(pki / "ca" / "clients" / "gateway.crt"),
                 mqtt_keyfile=str(pki / "ca" / "clients" / "gateway.key"))
    try:
        gw.start()  # healthy = both of its broker links are up, over TLS (the only port it knows)
        ma = mtls_fog.tls_client("ma", mtls_fog.config("ma")["mqtt_password"], mtls_fog.context(client="ma"), "ma")
        mtls_fog.clients.append(ma)
        assert not ma.connect().is_failure
        ma.subscribe("aquafog/ma/cmnd/#")
        assert ma.publish(TOPICS.reading("ma"), reading(0, 4500)) == "acked"
        got = ma.until(TOPICS.ack("ma"))  # acknowledged = stored
        assert json.loads(got[-1][1])["seq"] == 0
    finally:
        gw.stop()


def test_a_gateway_that_does_not_trust_the_broker_says_why(fog):
    gw = gateway(fog, "gw-rogue", mqtt_cafile=str(fog.pki / "rogue" / "ca.crt"))
    proc = subprocess.Popen([sys.executable, "-m", "aquafog", "gateway", "-c", str(gw.conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:  # its log, line by line, until it tells why it cannot connect
            if "TLS to the broker failed" in line:
                break
        else:
            raise AssertionError(f"the gateway exited ({proc.wait()}) without a TLS error")
        assert "[SSL: CERTIFICATE_VERIFY_FAILED]" in line and "mqtt_cafile" in line
    finally:
        proc.terminate()
        proc.wait(WAIT)
        proc.stdout.close()
