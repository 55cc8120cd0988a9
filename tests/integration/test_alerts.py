"""Alerts against a real Mosquitto and a real gateway process: a meter's health report with a
leak raises a `leak` alert an operator sees at /alerts and acknowledges; a meter that vanishes
(the broker publishes its last will) raises `offline` after offline_alert_s, and both clear
when their cause is gone. The meters are bare paho clients publishing the contract's bytes."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.integration

LEAKY, VANISHING = "m0001", "m0002"


def health(boot: str, alarms) -> bytes:
    return json.dumps({"v": 1, "boot": boot, "fw": "0.2.0", "uptime_s": 60, "reset": "power_on", "rssi": -60,
                       "heap_free": 90000, "dropped": 0, "buffer": 0, "clock": "ntp",
                       "alarms": list(alarms)}).encode()


class Meter:
    """A meter's MQTT session: its last will registered at connect, its birth published."""

    def __init__(self, broker, meter: str, boot: str):
        self.meter, self.boot = meter, boot
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=meter)
        self.c.will_set(f"aquafog/{meter}/status", json.dumps({"v": 1, "online": False, "boot": boot}),
                        qos=1, retain=True)
        connected = threading.Event()
        self.c.on_connect = lambda *a: connected.set()
        self.c.connect(broker.host, broker.port, keepalive=60)
        self.c.loop_start()
        assert connected.wait(10)
        self.pub("status", json.dumps({"v": 1, "online": True, "boot": boot, "fw": "0.2.0", "valve": "open"}),
                 retain=True)

    def pub(self, kind: str, payload, qos: int = 1, retain: bool = False) -> None:
        self.c.publish(f"aquafog/{self.meter}/{kind}", payload, qos=qos, retain=retain).wait_for_publish(10)

    def vanish(self) -> None:
        """Power cut: the connection drops without a DISCONNECT, so the broker sends the will."""
        self.c.loop_stop()
        self.c.socket().close()

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def alerts(gw, query: str = "") -> list[dict]:
    return gw.get(f"/alerts{query}")["items"]


def test_a_leak_and_a_vanished_meter_raise_alerts_that_clear_when_their_cause_is_gone(gateway_factory, broker):
    gw = gateway_factory(meters=[LEAKY, VANISHING], offline_alert_s=1).start()
    leaky = Meter(broker, LEAKY, "0a0b0c0d")
    vanishing = Meter(broker, VANISHING, "1a1b1c1d")
    try:
        leaky.pub("tele/health", health(leaky.boot, ["leak"]), qos=0)   # health is QoS 0, as meters send it
        [leak] = gw.wait_for(lambda: alerts(gw, "?kind=leak"), "the leak alert")
        assert (leak["meter"], leak["cleared_ms"], leak["acked_ms"]) == (LEAKY, None, None)
        assert leak["message"].startswith(f"meter {LEAKY} reports a leak") and leak["details"]["alarms"] == ["leak"]
        assert [a["id"] for a in alerts(gw, "?state=open")] == [leak["id"]]

        status, acked = gw.post(f"/alerts/{leak['id']}/ack")
        assert status == 200 and acked["acked_by"] == "test-admin" and acked["acked_ms"] is not None
        assert alerts(gw, "?state=open") == [] and [a["id"] for a in alerts(gw, "?state=active")] == [leak["id"]]

        vanishing.vanish()
        [offline] = gw.wait_for(lambda: alerts(gw, "?kind=offline"), "the offline alert", timeout=15)
        assert (offline["meter"], offline["cleared_ms"]) == (VANISHING, None)
        assert offline["details"]["boot"] == vanishing.boot and offline["details"]["offline_alert_s"] == 1
        assert offline["raised_ms"] - offline["details"]["offline_since_ms"] >= 1000
        assert gw.get(f"/meters/{VANISHING}")["online"] is False

        back = Meter(broker, VANISHING, "2a2b2c2d")   # it comes back (a new boot)
        try:
            gw.wait_for(lambda: alerts(gw, "?kind=offline")[0]["cleared_ms"], "the offline alert cleared")
        finally:
            back.close()
        leaky.pub("tele/health", health(leaky.boot, []), qos=0)
        gw.wait_for(lambda: alerts(gw, "?kind=leak")[0]["cleared_ms"], "the leak alert cleared")
        assert alerts(gw, "?state=active") == []
        assert len(alerts(gw)) == 2                    # each raised once, cleared once
    finally:
        leaky.close()
