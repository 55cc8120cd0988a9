"""Fixtures for the emulator tests: a minimal acknowledging gateway stand-in on a real broker.

AckGateway is not the AquaFog gateway: it keeps everything in memory, acknowledges every
reading as soon as it arrives, answers every birth with an ack echoing its conn, and sends valve
commands. Enough to exercise the firmware's side of the contract end to end.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from decimal import Decimal

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion


class AckGateway:
    def __init__(self, host: str, port: int, root: str = "aquafog", username: str | None = None,
                 password: str | None = None):
        self.root = root
        self.cond = threading.Condition()
        self.readings: dict[str, list[dict]] = defaultdict(list)  # arrival order
        self.status: dict[str, list[dict]] = defaultdict(list)
        self.results: dict[str, list[dict]] = defaultdict(list)
        self.health: dict[str, list[dict]] = defaultdict(list)
        self.latest: dict[str, dict] = {}  # newest reading per meter (what an ack names)
        self.acks_sent = 0
        self.bad: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-ack-gateway", protocol=paho.MQTTv311)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = self._on_message
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.5)  # back soon after a broker restart
        if username is not None:  # a broker with a password file (a provisioned fog)
            c.username_pw_set(username, password)
        self.client = c
        c.connect(host, port, keepalive=30)
        c.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("test gateway did not subscribe")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([("%s/+/tele/reading" % self.root, 1), ("%s/+/status" % self.root, 1),
                          ("%s/+/stat/valve" % self.root, 1), ("%s/+/tele/health" % self.root, 0)])

    def _ack(self, meter: str, conn: int | None = None) -> None:
        r = self.latest.get(meter)
        if r is None:
            payload = '{"v":1,"boot":null,"seq":null,"pulses":0,"litres":0.000'
        else:
            payload = '{"v":1,"boot":"%s","seq":%d,"pulses":%d,"litres":%s' % (
                r["boot"], r["seq"], r["pulses"], r["litres"])
        payload += "}" if conn is None else ',"conn":%d}' % conn  # the answer to a birth echoes its conn
        self.client.publish("%s/%s/cmnd/ack" % (self.root, meter), payload, qos=1)
        self.acks_sent += 1

    def _on_message(self, client, userdata, msg):
        parts = msg.topic.split("/")
        meter, kind = parts[1], "/".join(parts[2:])
        try:
            data = json.loads(msg.payload, parse_float=Decimal)
        except ValueError:
            self.bad.append((msg.topic, msg.payload))
            return
        with self.cond:
            if kind == "tele/reading":
                data["ml"] = int(data["litres"] * 1000)
                self.readings[meter].append(data)
                prev = self.latest.get(meter)
                if prev is None or prev["boot"] != data["boot"] or data["seq"] > prev["seq"]:
                    self.latest[meter] = data
                self._ack(meter)
            elif kind == "status":
                if msg.payload:  # an empty retained message clears, it is not a status
                    self.status[meter].append(data)
                    if data.get("online") is True:
                        self._ack(meter, data.get("conn"))
            elif kind == "stat/valve":
                self.results[meter].append(data)
            elif kind == "tele/health":
                self.health[meter].append(data)
            self.cond.notify_all()

    def command(self, meter: str, cmd_id: str, state: str) -> None:
        payload = '{"v":1,"id":"%s","state":"%s"}' % (cmd_id, state)
        self.client.publish("%s/%s/cmnd/valve" % (self.root, meter), payload, qos=1)

    def wait_for(self, predicate, timeout: float, what: str = "condition"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("gateway: %s not seen within %.1f s" % (what, timeout))
                self.cond.wait(left)


@pytest.fixture
def gateway(broker):
    g = AckGateway(broker.host, broker.port)
    yield g
    g.close()


@pytest.fixture
def ack_gateway():
    """make(host, port, **kw) -> an AckGateway (a broker with passwords: username=, password=);
    every one is closed at teardown."""
    made = []

    def make(host: str, port: int, **kw) -> AckGateway:
        g = AckGateway(host, port, **kw)
        made.append(g)
        return g
    yield make
    for g in made:
        g.close()
