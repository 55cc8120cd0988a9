"""Health telemetry and a valve change a meter makes on its own, against a real Mosquitto
and a real gateway process: the meter's side is a bare paho client publishing the
contract's exact bytes (tests/vectors/mqtt_v1.json), the gateway's side is its API."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.integration

M = "m0001"  # the meter of the vectors
BOOT_BEFORE, BOOT_AFTER = "0a0b0c0d", "3f2a9c1e"  # the local change's id names the boot it happened in


class Meter:
    """Publishes as the meter and records what the gateway sends it, in arrival order."""

    def __init__(self, broker):
        self.got: list[tuple[str, dict]] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=M)
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        self.c.subscribe(f"aquafog/{M}/cmnd/#", qos=1)
        assert subscribed.wait(10)

    def _on_message(self, _c, _u, msg):
        with self.cond:
            self.got.append((msg.topic.rsplit("/", 1)[1], json.loads(msg.payload)))
            self.cond.notify_all()

    def pub(self, kind: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.c.publish(f"aquafog/{M}/{kind}", payload, qos=qos)
        if qos:
            info.wait_for_publish(10)

    def wait(self, pred, what: str, timeout: float = 10.0):
        """The payload of the first message (by arrival) that pred(kind, payload) accepts."""
        with self.cond:
            found = self.cond.wait_for(lambda: next((m for m in self.got if pred(*m)), None), timeout)
        assert found, f"timed out waiting for {what}; got {self.got}"
        return found[1]

    def count(self, kind: str) -> int:
        with self.cond:
            return sum(k == kind for k, _ in self.got)

    def valve_commands(self) -> list[dict]:
        with self.cond:
            return [p for k, p in self.got if k == "valve"]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def birth(boot: str, valve: str) -> bytes:
    return json.dumps({"v": 1, "online": True, "boot": boot, "fw": "0.2.0", "valve": valve}).encode()


def reading(boot: str, seq: int) -> bytes:
    return json.dumps({"v": 1, "boot": boot, "seq": seq, "ts": int(time.time()) - 5, "pulses": 450 * (seq + 1),
                       "litres": float(seq + 1), "flow": 0.0, "valve": "closed"}).encode()


def vector(vectors, name: str) -> dict:
    return next(c for c in vectors["meter_to_gateway"] if c["name"] == name)


def test_health_and_a_burst_close_by_the_meter_reach_the_api_and_the_valve_stays_closed(
        gateway_factory, broker, vectors):
    gw = gateway_factory(meters=[M, "m0002"]).start()
    meter = Meter(broker)
    try:
        # the operator opened m0001's valve earlier: desired "open"
        meter.pub("status", birth(BOOT_BEFORE, "closed"))
        status, body = gw.post(f"/meters/{M}/valve", {"state": "open", "reason": "unblocked"})
        assert status == 202
        cmd = meter.wait(lambda k, p: k == "valve" and p["state"] == "open", "the open command")
        meter.pub("stat/valve", json.dumps({"v": 1, "id": cmd["id"], "state": "open", "ok": True}))
        gw.wait_for(lambda: gw.get(f"/commands/{cmd['id']}")["command"]["status"] == "applied", "applied")

        # health (QoS 0), the exact bytes of the vector, with a leak alarm
        h = vector(vectors, "health")
        meter.pub("tele/health", h["payload"], qos=0)
        got = gw.wait_for(lambda: gw.get(f"/meters/{M}")["health"], "health stored")
        received = got.pop("received")
        assert got == h["fields"]
        assert received.endswith("Z") and abs(_epoch(received) - time.time()) < 60
        assert [i["meter"] for i in gw.get("/meters?alarm=leak")["items"]] == [M]
        assert gw.get("/meters?alarm=burst")["items"] == []
        assert gw.get("/meters/m0002")["health"] is None
        gw.wait_for(lambda: f"meter {M} alarms: leak (raised leak)" in gw.log(), "the alarm change logged")

        # the meter closed its valve on a burst and rebooted: it reports the change, then its birth
        local = vector(vectors, "valve_result_local_burst")
        assert local["fields"]["id"] == f"local-{BOOT_AFTER}-1"
        acks = meter.count("ack")
        meter.pub("stat/valve", local["payload"])
        meter.pub("status", birth(BOOT_AFTER, "closed"))
        # a barrier: the birth is answered with an ack at once, and a valve command would
        # follow it from the same commit; a reading sent after that ack is committed later,
        # so its ack comes after anything published in answer to the birth (one publisher
        # connection, in order)
        meter.wait(lambda k, p: k == "ack" and meter.count("ack") > acks, "the birth's ack")
        meter.pub("tele/reading", reading(BOOT_AFTER, 0))
        meter.wait(lambda k, p: k == "ack" and p["boot"] == BOOT_AFTER and p["seq"] == 0, "the reading's ack")
        assert [c["state"] for c in meter.valve_commands()] == ["open"]  # the birth re-delivered nothing

        c = gw.get(f"/commands/{local['fields']['id']}")["command"]
        assert (c["origin"], c["state"], c["status"], c["error"]) == ("meter", "closed", "applied", None)
        assert c["reason"] == "burst: the meter closed its valve on its own"
        assert c["created_at"] == c["sent_at"] == c["done_at"]
        assert gw.get(f"/meters/{M}")["valve"] == {"desired": "closed", "reported": "closed", "pending_command": None}

        meter.pub("stat/valve", local["payload"])  # reported again: nothing new
        meter.pub("tele/reading", reading(BOOT_AFTER, 1))
        meter.wait(lambda k, p: k == "ack" and p["boot"] == BOOT_AFTER and p["seq"] == 1, "the second ack")
        assert [x["id"] for x in gw.get(f"/meters/{M}/commands")["items"]] == [local["fields"]["id"], cmd["id"]]
        assert gw.get("/ingest/stats")["rejected"] == {}

        # the operator re-opens it normally
        status, body = gw.post(f"/meters/{M}/valve", {"state": "open", "reason": "pipe repaired"})
        reopen = meter.wait(lambda k, p: k == "valve" and p["id"] == body["command"]["id"], "the re-open command")
        assert reopen["state"] == "open"
        meter.pub("stat/valve", json.dumps({"v": 1, "id": reopen["id"], "state": "open", "ok": True}))
        gw.wait_for(lambda: gw.get(f"/meters/{M}")["valve"]["reported"] == "open", "re-opened")
        assert gw.get(f"/meters/{M}")["valve"]["desired"] == "open"
    finally:
        meter.close()


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
