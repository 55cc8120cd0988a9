"""Server-sent events from a real gateway process, fed by a real Mosquitto: a published
reading, a valve command's ledger changes and the live ranking reach a plain HTTP
client; a client that leaves frees its slot; beyond live_max_clients the gateway says
503; stopping the gateway ends the streams."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from .sse import SSE

pytestmark = pytest.mark.integration

NOW = int(time.time())
IDS = ["l001", "l002", "l003"]


def reading(seq: int, ml: int, valve="open") -> bytes:
    return json.dumps({"v": 1, "boot": "aaaaaaaa", "seq": seq, "ts": NOW - 60 + seq, "pulses": ml,
                       "litres": ml / 1000, "flow": 2.0, "valve": valve}).encode()


class Meter:
    """Publishes as the meters would (QoS 1, like the firmware)."""

    def __init__(self, port: int):
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="live-test-meters")
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def rig(gateway_factory, broker):
    gw = gateway_factory(meters=IDS, batch_max_delay_ms=250, live_max_clients=3).start()
    meter = Meter(broker.port)
    yield gw, meter
    meter.stop()


def auth(gw) -> dict:
    token = getattr(gw, "api_token", None)
    return {"Authorization": f"Bearer {token}"} if token else {}


def stream(gw, path: str) -> SSE:
    s = SSE(gw.url + path, auth(gw))
    assert s.status == 200, (s.status, s.resp.read()[:300])
    assert s.headers["Content-Type"].startswith("text/event-stream")
    return s


def test_a_published_reading_and_a_commands_ledger_reach_the_meters_live_stream(rig):
    gw, meter = rig
    s = stream(gw, "/meters/l001/live")
    try:
        meter.publish("aquafog/l001/tele/reading", reading(0, 1500))
        t0 = time.monotonic()
        ev = s.wait(lambda e: e["event"] == "reading", "the reading event", timeout=5)
        # announced on arrival, before the 250 ms batch delay is over
        assert time.monotonic() - t0 < 0.25
        d = ev["data"]
        assert (d["meter"], d["boot"], d["seq"], d["litres"], d["flow_lpm"], d["valve"], d["persisted"]) == \
            ("l001", "aaaaaaaa", 0, 1.5, 2.0, "open", False)
        assert ev["id"] and s.retry == 2000
        gw.wait_for(lambda: gw.get("/meters/l001")["register"]["seq"] == 0, "the reading on disk", timeout=5)

        status, body = gw.post("/meters/l001/valve", {"state": "closed", "command_id": "live-1"})
        assert status == 202
        s.wait(lambda e: e["event"] == "command" and e["data"]["status"] == "queued", "queued")  # meter offline
        meter.publish("aquafog/l001/status", b'{"v":1,"online":true,"boot":"aaaaaaaa","fw":"0.2.0","valve":"open"}',
                      retain=True)
        s.wait(lambda e: e["event"] == "status" and e["data"]["online"] is True, "online")
        s.wait(lambda e: e["event"] == "command" and e["data"]["status"] == "sent", "sent on the birth")
        meter.publish("aquafog/l001/stat/valve", b'{"v":1,"id":"live-1","state":"closed","ok":true}')
        ev = s.wait(lambda e: e["event"] == "command" and e["data"]["status"] == "applied", "applied")
        assert (ev["data"]["id"], ev["data"]["state"]) == ("live-1", "closed")
        meter.publish("aquafog/l001/status", b'{"v":1,"online":false,"boot":"aaaaaaaa"}', retain=True)
        s.wait(lambda e: e["event"] == "status" and e["data"]["online"] is False, "offline")
        last_id = ev["id"]
    finally:
        s.close()
    # reconnecting with Last-Event-ID replays what came after it
    s = SSE(gw.url + "/meters/l001/live", {**auth(gw), "Last-Event-ID": last_id})
    try:
        ev = s.wait(lambda e: True, "the replay")
        assert ev["event"] == "status" and ev["data"]["online"] is False
    finally:
        s.close()
    s = SSE(gw.url + "/meters/l001/live", {**auth(gw), "Last-Event-ID": "0-1"})  # another gateway run
    try:
        assert s.wait(lambda e: True, "a notice")["data"]["reason"] == "restart"
    finally:
        s.close()


def test_the_live_ranking_follows_consumption(rig):
    gw, meter = rig
    s = stream(gw, "/ranking/live?n=2&period=today")
    try:
        first = s.wait(lambda e: e["event"] == "ranking", "the first ranking", timeout=5)
        assert first["data"]["n"] == 2 and first["data"]["items"] == []
        meter.publish("aquafog/l002/tele/reading", reading(0, 1000))
        meter.publish("aquafog/l002/tele/reading", reading(1, 4000))
        meter.publish("aquafog/l003/tele/reading", reading(0, 0))
        meter.publish("aquafog/l003/tele/reading", reading(1, 1000))
        ev = s.wait(lambda e: e["event"] == "ranking" and len(e["data"]["items"]) == 2, "l002 and l003 ranked")
        assert [(i["meter"], i["litres"]) for i in ev["data"]["items"]] == [("l002", 3.0), ("l003", 1.0)]
        assert ev["data"] == {**gw.get("/ranking?n=2&period=today"), "n": 2}
    finally:
        s.close()


def test_live_slots_are_limited_and_freed_and_the_streams_end_with_the_gateway(rig):
    gw, _ = rig
    open_ = [stream(gw, "/meters/l001/live"), stream(gw, "/meters/l002/live"), stream(gw, "/ranking/live")]
    over = SSE(gw.url + "/meters/l003/live", auth(gw))
    assert over.status == 503
    assert over.headers.get("Retry-After")
    err = over.json()["error"]
    assert err["code"] == "too_many_live_clients" and "live_max_clients" in err["message"]
    over.close()
    assert gw.get("/health")["live"]["clients"] == 3
    assert gw.get("/meters")["items"]  # the JSON API still answers with every live slot taken

    open_.pop(0).close()  # the client goes away: its slot is free within a second
    gw.wait_for(lambda: gw.get("/health")["live"]["clients"] == 2, "the slot freed", timeout=5)
    open_.append(stream(gw, "/meters/l003/live"))

    t0 = time.monotonic()
    gw.stop()
    for s in open_:  # each stream ends (cleanly: the chunked body is terminated)
        deadline = time.monotonic() + 10
        while s.next(deadline) is not None:
            pass
        s.close()
    assert time.monotonic() - t0 < 10
