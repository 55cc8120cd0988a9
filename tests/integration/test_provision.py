"""Provisioning against a real Mosquitto with allow_anonymous false and the password
and ACL files `aquafog meter provision` and `aquafog broker-account add` generated: the
meters and the gateway get in with their own passwords and nothing else does; a meter
reaches only its own topics; the gateway account does its job; a reload (SIGHUP) takes
new and rotated passwords; with the service listener's own files, a meter's password
does not open it; and the real gateway and the real firmware work with the provisioned
accounts.

Negatives are proved in order, without timeouts: a forbidden message is sent first,
then a marker on a permitted topic through the same broker path, and the receiver
must get the marker without the forbidden message before it.
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aquafog.broker import LocalBroker, free_port
from aquafog.gateway.local import LocalGateway
from aquafog.protocol import Topics
from aquafog.store.engine import open_engine

pytestmark = pytest.mark.integration

TOPICS = Topics("aquafog")
WAIT = 10.0


def reading(seq: int, pulses: int) -> bytes:
    return (b'{"v":1,"boot":"0badc0de","seq":%d,"ts":%d,"pulses":%d,"litres":%d.000,"flow":0.000,"valve":"open"}'
            % (seq, int(time.time()), pulses, pulses // 450))


class Client:
    """A paho client whose every step is awaited: CONNACK, SUBACK, PUBACK, messages."""

    def __init__(self, port: int, user: str | None, password: str | None, client_id: str = "",
                 protocol=mqtt.MQTTv311):
        self.port = port
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{user}-{id(self)}",
                             protocol=protocol)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.connack = queue.Queue()
        self.subacks: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()  # ("puback", mid) and ("disconnect", reason)
        self.messages: queue.Queue = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, props: self.connack.put(rc)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.setdefault(mid, queue.Queue()).put(rcs)
        self.c.on_publish = lambda c, u, mid, rc, props: self.events.put(("puback", mid))
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.events.put(("disconnect", rc))
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))

    def connect(self):
        """The CONNACK's reason code; a refused client is stopped (no reconnecting)."""
        self.c.connect("127.0.0.1", self.port, keepalive=30)
        self.c.loop_start()
        rc = self.connack.get(timeout=WAIT)
        if rc.is_failure:
            self.close()
        return rc

    def subscribe(self, *topics: str) -> list:
        _, mid = self.c.subscribe([(t, 1) for t in topics])
        return self.subacks.setdefault(mid, queue.Queue()).get(timeout=WAIT)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> str:
        """QoS 1; returns once the broker has handled the message: "acked" (PUBACK), or
        "disconnected" (Mosquitto 2.0.11 drops a client after a publish it may not make)."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        while True:
            kind, value = self.events.get(timeout=WAIT)
            if kind == "disconnect" or value == info.mid:
                return "acked" if kind == "puback" else "disconnected"

    def until(self, topic: str, payload: bytes | None = None) -> list[tuple[str, bytes]]:
        """Every message received up to and including the first on `topic` (with `payload`)."""
        got = []
        while True:
            msg = self.messages.get(timeout=WAIT)
            got.append(msg)
            if msg[0] == topic and (payload is None or msg[1] == payload):
                return got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
        # Break the cycle (callbacks -> self -> client): freed by reference counting, paho's
        # __del__ closes its socket pair; freed by a later GC, the pair may be finalized first
        # and warn (an error in whichever test happens to be running then).
        self.c.on_connect = self.c.on_subscribe = self.c.on_publish = None
        self.c.on_disconnect = self.c.on_message = None


class Fog:
    """A fog's files in a folder the broker can reach, provisioned by the real command."""

    def __init__(self, root: Path):
        self.root = root
        self.db = root / "gateway.db"
        self.passwd = root / "aquafog.passwd"
        self.acl = root / "aquafog.acl"
        self.meters_dir = root / "meters"
        self.site = root / "site.toml"
        open_engine(self.db).dispose()  # the gateway's store, as its first start makes it
        data_dir = root / "broker"
        data_dir.mkdir()
        if os.geteuid() == 0:
            # Mosquitto run by root drops to the `mosquitto` user (as the Debian service
            # does): its log and persistence folder must be its own.
            user = pwd.getpwnam("mosquitto")
            os.chown(data_dir, user.pw_uid, user.pw_gid)
        # user: read the files as the Debian service does (LocalBroker would keep root);
        # service_port: the gateway's loopback listener, meters' client ids bound to their names
        self.broker = LocalBroker(data_dir, allow_anonymous=False, password_file=self.passwd, acl_file=self.acl,
                                  user="mosquitto", service_port=free_port(),
                                  extra=["log_type information"])  # "Reloading config." is an info line
        self.site.write_text(f'''wifi_ssid = "pumphouse"
broker_host = "127.0.0.1"
broker_port = {self.broker.port}
db = "gateway.db"
passwd_file = "aquafog.passwd"
acl_file = "aquafog.acl"
meters_dir = "meters"
''')

    def aquafog(self, *command: str) -> str:
        """The installed command, with this fog's site file; the broker is reloaded only by
        --reload-pid, never a systemd-run Mosquitto this machine may have."""
        r = subprocess.run([sys.executable, "-m", "aquafog", *command, "--site", str(self.site), "--no-reload"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def provision(self, *args: str) -> str:
        """`aquafog meter provision ARGS`."""
        return self.aquafog("meter", "provision", *args)

    def account(self, *args: str) -> str:
        """`aquafog broker-account add ARGS`."""
        return self.aquafog("broker-account", "add", *args)

    def config(self, meter: str) -> dict:
        return json.loads((self.meters_dir / meter / "config.json").read_text())

    def service_password(self, name: str) -> str:
        return tomllib.loads((self.root / f"{name}.toml").read_text())["mqtt_password"]

    def meter(self, meter: str, client_id: str = "", password: str | None = None) -> Client:
        """Connected the way the firmware does, with what its config.json says."""
        cfg = self.config(meter)
        assert cfg["broker_host"] == "127.0.0.1" and cfg["broker_port"] == self.broker.port
        c = Client(cfg["broker_port"], cfg.get("mqtt_user", cfg["meter_id"]),
                   cfg["mqtt_password"] if password is None else password, client_id or meter)
        rc = c.connect()
        assert not rc.is_failure, f"{meter}: {rc}"
        return c

    def service(self, name: str, **kw) -> Client:
        c = Client(self.broker.service_port, name, self.service_password(name), **kw)
        rc = c.connect()
        assert not rc.is_failure, f"{name}: {rc}"
        return c

    def wait_log(self, line: str, count: int) -> None:
        """Until the broker's log holds `line` `count` times. Mosquitto handles SIGHUP in
        its main loop before the next packet, so a connection made after the line
        appears is checked against the reloaded files."""
        deadline = time.monotonic() + WAIT
        while self.broker.log_path.read_text(errors="replace").count(line) < count:
            assert time.monotonic() < deadline, f"no {line!r} in the broker log"
            time.sleep(0.01)


class SplitFog(Fog):
    """A fog whose service listener has password and ACL files of its own: the site's
    services_passwd_file and services_acl_file, the broker's per-listener files."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.services_passwd, self.services_acl = root / "services.passwd", root / "services.acl"
        with self.site.open("a") as f:
            f.write('services_passwd_file = "services.passwd"\nservices_acl_file = "services.acl"\n')
        self.broker = LocalBroker(self.broker.data_dir, port=self.broker.port, allow_anonymous=False,
                                  password_file=self.passwd, acl_file=self.acl, user="mosquitto",
                                  service_port=self.broker.config.service_port,
                                  service_password_file=self.services_passwd, service_acl_file=self.services_acl)


def running_fog(kind: type[Fog]):
    # Not tmp_path: pytest's folders are private to their owner, and Mosquitto reads
    # the password and ACL files as the `mosquitto` user after dropping root.
    root = Path(tempfile.mkdtemp(prefix="aquafog-provision-"))
    os.chmod(root, 0o711)
    f = kind(root)
    f.provision("ma", "mb")
    f.account("gateway", "--password-out", str(root / "gateway.toml"))
    f.account("look", "--role", "observer", "--password-out", str(root / "look.toml"))
    f.broker.start()
    clients: list[Client] = []
    f.clients = clients
    yield f
    for c in clients:
        c.close()
    f.broker.stop()
    shutil.rmtree(root)


@pytest.fixture
def fog():
    yield from running_fog(Fog)


@pytest.fixture
def split_fog():
    yield from running_fog(SplitFog)


def keep(fog: Fog, c: Client) -> Client:
    fog.clients.append(c)
    return c


def test_a_provisioned_meters_reading_reaches_the_gateway_account(fog):
    gw = keep(fog, fog.service("gateway"))
    assert all(not rc.is_failure for rc in gw.subscribe(*TOPICS.subscriptions()))
    ma = keep(fog, fog.meter("ma"))
    assert ma.publish(TOPICS.reading("ma"), reading(0, 450)) == "acked"
    assert gw.until(TOPICS.reading("ma")) == [(TOPICS.reading("ma"), reading(0, 450))]


@pytest.mark.parametrize("user, password", [
    ("ma", "wrong-password"),
    ("ma", ""),
    ("nobody", "x"),
    (None, None),       # anonymous
])
def test_wrong_passwords_unknown_users_and_anonymous_clients_are_refused(fog, user, password):
    for port in (fog.broker.port, fog.broker.service_port):  # the meters' listener and the services'
        rc = Client(port, user, password).connect()
        assert rc.is_failure and str(rc) == "Not authorized", port


def test_a_meter_cannot_use_another_meters_password(fog):
    rc = Client(fog.broker.port, "ma", fog.config("mb")["mqtt_password"]).connect()
    assert str(rc) == "Not authorized"


def forbidden(fog: Fog, client: Callable[[], Client], topic: str, payload: bytes, retain: bool = False) -> None:
    """Publish from a fresh connection and wait until the broker has dealt with it."""
    c = client()
    try:
        assert c.publish(topic, payload, retain) in ("acked", "disconnected")
    finally:
        c.close()


def test_a_meter_cannot_publish_on_another_meters_topics(fog):
    witness = keep(fog, fog.service("look"))  # reads aquafog/#: sees whatever gets through
    witness.subscribe("aquafog/#")
    as_ma = lambda: fog.meter("ma", client_id="ma-forger")  # noqa: E731
    forbidden(fog, as_ma, TOPICS.reading("mb"), reading(0, 900_000))
    forbidden(fog, as_ma, TOPICS.valve_result("mb"), b'{"v":1,"id":"c-1","state":"closed","ok":true}')
    forbidden(fog, as_ma, TOPICS.status("mb"), b'{"v":1,"online":false,"boot":"0badc0de"}', retain=True)
    forbidden(fog, as_ma, "aquafog/mb/tele/health", b"{}")
    forbidden(fog, as_ma, TOPICS.valve_command("mb"), b'{"v":1,"id":"c-2","state":"closed"}')
    forbidden(fog, as_ma, TOPICS.valve_command("ma"), b'{"v":1,"id":"c-3","state":"open"}')  # its own cmnd: read only
    forbidden(fog, as_ma, "aquafog/ma", b"{}")  # outside its subtrees
    ma = keep(fog, fog.meter("ma"))
    assert ma.publish(TOPICS.reading("ma"), b"marker") == "acked"
    assert witness.until(TOPICS.reading("ma"), b"marker") == [(TOPICS.reading("ma"), b"marker")]
    # and nothing was kept: a new subscriber to mb's status gets no forged retained message
    late = keep(fog, fog.service("look", client_id="look-late"))
    late.subscribe(TOPICS.status("mb"), TOPICS.status("ma"))
    assert ma.publish(TOPICS.status("ma"), b"marker", retain=True) == "acked"
    assert late.until(TOPICS.status("ma"), b"marker") == [(TOPICS.status("ma"), b"marker")]


def test_a_meter_cannot_take_over_another_meters_connection(fog):
    """Mosquitto closes the older of two connections with one client id: with ma's password
    and mb's client id, an attacker would knock mb off again and again. On the meters'
    listener a client id is its user name, so the attacker only ever gets "ma"."""
    mb = keep(fog, fog.meter("mb"))
    mb.subscribe("aquafog/mb/cmnd/#")
    keep(fog, fog.meter("ma", client_id="mb"))  # connected (CONNACK): the broker has dealt with it
    assert mb.publish(TOPICS.reading("mb"), reading(0, 4500)) == "acked"  # "disconnected" if knocked off
    assert mb.events.empty()
    gw = keep(fog, fog.service("gateway", client_id="gw-tx"))
    assert gw.publish(TOPICS.valve_command("mb"), b"marker") == "acked"
    assert mb.until(TOPICS.valve_command("mb"), b"marker")[-1] == (TOPICS.valve_command("mb"), b"marker")
    # the services' listener is the one that lets a client choose its id: the gateway's links
    gw_rx = keep(fog, fog.service("gateway", client_id="gw-rx"))
    assert gw.publish(TOPICS.valve_command("ma"), b"both") == "acked" and gw_rx.events.empty()


def test_a_meter_cannot_read_another_meters_commands_and_the_gateway_commands_a_meter(fog):
    gw = keep(fog, fog.service("gateway", client_id="gw-tx"))
    mb = keep(fog, fog.meter("mb"))
    mb.subscribe("aquafog/mb/cmnd/#")
    ma = keep(fog, fog.meter("ma"))
    # Mosquitto 2.0.11 grants these subscriptions (its ACL file is checked per message, at
    # delivery); what matters is that nothing of mb's reaches ma.
    ma.subscribe("aquafog/mb/cmnd/#", "aquafog/ma/cmnd/#", "#")
    for_mb = b'{"v":1,"id":"c-5f1a2b3c4d5e6f70","state":"closed"}'
    assert gw.publish(TOPICS.valve_command("mb"), for_mb) == "acked"
    assert gw.publish(TOPICS.ack("mb"), b'{"v":1,"boot":null,"seq":null,"pulses":0,"litres":0.000}') == "acked"
    assert gw.publish(TOPICS.valve_command("ma"), b"marker") == "acked"
    assert mb.until(TOPICS.valve_command("mb")) == [(TOPICS.valve_command("mb"), for_mb)]
    assert ma.until(TOPICS.valve_command("ma"), b"marker") == [(TOPICS.valve_command("ma"), b"marker")]


def test_service_accounts_are_confined_to_their_role(fog):
    look = keep(fog, fog.service("look"))
    look.subscribe("aquafog/#")
    ma = keep(fog, fog.meter("ma"))
    ma.subscribe("aquafog/ma/cmnd/#")
    # the gateway cannot forge a meter's reading or status; the observer cannot command
    forbidden(fog, lambda: fog.service("gateway", client_id="gw-forger"), TOPICS.reading("ma"), reading(0, 1))
    forbidden(fog, lambda: fog.service("gateway", client_id="gw-forger"), TOPICS.status("ma"), b"{}")
    forbidden(fog, lambda: fog.service("look", client_id="look-cmd"), TOPICS.valve_command("ma"),
              b'{"v":1,"id":"c-x","state":"closed"}')
    gw = keep(fog, fog.service("gateway"))
    assert gw.publish(TOPICS.valve_command("ma"), b"marker") == "acked"
    assert ma.until(TOPICS.valve_command("ma"), b"marker") == [(TOPICS.valve_command("ma"), b"marker")]
    assert look.until(TOPICS.valve_command("ma"), b"marker") == [(TOPICS.valve_command("ma"), b"marker")]


def test_new_and_rotated_passwords_take_effect_after_reload(fog):
    assert str(Client(fog.broker.port, "mc", "x").connect()) == "Not authorized"
    old_ma = fog.config("ma")["mqtt_password"]
    pid = str(fog.broker.proc.pid)
    out = fog.provision("mc", "--reload-pid", pid)
    assert f"Mosquitto (pid {pid}) was told to reload" in out
    fog.wait_log("Reloading config.", 1)
    keep(fog, fog.meter("mc"))

    fog.provision("ma", "--rotate-password", "--reload-pid", pid)
    fog.wait_log("Reloading config.", 2)
    assert fog.config("ma")["mqtt_password"] != old_ma
    assert str(Client(fog.broker.port, "ma", old_ma).connect()) == "Not authorized"
    keep(fog, fog.meter("ma"))


def test_the_gateway_runs_on_its_account_and_accepts_a_provisioned_meter(fog):
    gw = LocalGateway(fog.root / "gw", fog.broker.service_port, db_path=str(fog.db), mqtt_username="gateway",
                      mqtt_password=fog.service_password("gateway"), mqtt_client_id="aquafog-gateway-prov",
                      batch_max_delay_ms=50, ack_interval_ms=100)
    try:
        gw.start()  # healthy = both of its broker links are up with the gateway account
        ma = keep(fog, fog.meter("ma"))
        ma.subscribe("aquafog/ma/cmnd/#")
        assert ma.publish(TOPICS.reading("ma"), reading(0, 4500)) == "acked"
        # the gateway stored it (the meter is registered) and acknowledged it (it may write cmnd/)
        got = ma.until(TOPICS.ack("ma"))
        assert json.loads(got[-1][1])["seq"] == 0
        with open_engine(fog.db, create=False).connect() as conn:
            from sqlalchemy import select

            from aquafog.store.schema import meters
            assert conn.execute(select(meters.c.meter).order_by(meters.c.meter)).scalars().all() == ["ma", "mb"]
    finally:
        gw.stop()


def test_the_real_firmware_connects_with_its_provisioned_password(fog):
    from emulator import Fleet

    gw = LocalGateway(fog.root / "gw", fog.broker.service_port, db_path=str(fog.db), mqtt_username="gateway",
                      mqtt_password=fog.service_password("gateway"), mqtt_client_id="aquafog-gateway-prov2",
                      batch_max_delay_ms=50, ack_interval_ms=100)
    fleet = Fleet(fog.broker.host, fog.broker.port, ["ma", "mb"], seed=1, speed=1.0, report_interval_s=2,
                  start_epoch=time.time() - 5, fs_root=fog.root / "flash",
                  mqtt_password=lambda m: fog.config(m)["mqtt_password"])
    try:
        gw.start()
        fleet.start()
        # online = its birth on aquafog/<id>/status reached the gateway (will, birth and
        # subscription all passed the ACL); a reading acknowledged = stored at the gateway
        fleet.wait_for(lambda: all(m.online and m.sent and m.outbox_depth == 0 for m in fleet.meters),
                       WAIT * 3, "both meters online, with an acknowledged reading")
        assert not fleet.errors
    finally:
        fleet.stop()
        gw.stop()


# -- the service listener with files of its own --------------------------------------------------
def test_a_meters_password_does_not_open_the_service_listener(split_fog):
    fog = split_fog
    assert "gateway" not in fog.passwd.read_text() and "ma:" not in fog.services_passwd.read_text()
    ma_password = fog.config("ma")["mqtt_password"]
    # a stolen meter password: no way in where client ids are free (and the gateway's is there)
    assert str(Client(fog.broker.service_port, "ma", ma_password, "aquafog-gateway").connect()) == "Not authorized"
    # and the gateway's account is no meter: not on the meters' listener
    assert str(Client(fog.broker.port, "gateway", fog.service_password("gateway")).connect()) == "Not authorized"


def test_with_its_own_files_the_gateway_still_hears_and_commands_the_meters(split_fog):
    fog = split_fog
    gw = keep(fog, fog.service("gateway", client_id="aquafog-gateway"))
    assert all(not rc.is_failure for rc in gw.subscribe(*TOPICS.subscriptions()))
    ma = keep(fog, fog.meter("ma"))
    ma.subscribe("aquafog/ma/cmnd/#")
    assert ma.publish(TOPICS.reading("ma"), reading(0, 450)) == "acked"
    assert gw.until(TOPICS.reading("ma")) == [(TOPICS.reading("ma"), reading(0, 450))]
    assert gw.publish(TOPICS.valve_command("ma"), b"marker") == "acked"
    assert ma.until(TOPICS.valve_command("ma"), b"marker") == [(TOPICS.valve_command("ma"), b"marker")]
    # the gateway's role holds on its listener too: no forged reading
    forbidden(fog, lambda: fog.service("gateway", client_id="gw-forger"), TOPICS.reading("mb"), reading(0, 1))
    assert ma.publish(TOPICS.reading("ma"), b"after") == "acked"
    assert gw.until(TOPICS.reading("ma"), b"after") == [(TOPICS.reading("ma"), b"after")]
    assert gw.events.empty()  # never knocked off
