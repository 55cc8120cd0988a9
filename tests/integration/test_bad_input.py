"""Bad MQTT input against a real Mosquitto and a real gateway process: every kind is
rejected and counted by reason, good readings keep flowing, nothing bad is stored."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.integration

NOW = int(time.time())


def good(seq: int, ml: int, **over) -> dict:
    d = {"v": 1, "boot": "aaaaaaaa", "seq": seq, "ts": NOW - 600 + seq, "pulses": ml * 45 // 100,
         "litres": float(f"{ml / 1000:.3f}"), "flow": 1.5, "valve": "open"}
    d.update(over)
    return d


def enc(d: dict) -> bytes:
    return json.dumps(d).encode()


def without(key: str) -> bytes:
    d = good(1, 100)
    del d[key]
    return enc(d)


def health(**over) -> bytes:
    return enc({"v": 1, "boot": "aaaaaaaa", "fw": "0.2.0", "uptime_s": 600, "reset": "power_on", "rssi": -70,
                "heap_free": 80000, "dropped": 0, "buffer": 0, "clock": "ntp", "alarms": [], **over})


def local(cid: str, state: str, cause="burst") -> bytes:
    return enc({"v": 1, "id": cid, "state": state, "ok": True, "cause": cause})


R = "aquafog/m1/tele/reading"
H = "aquafog/m1/tele/health"
V = "aquafog/m1/stat/valve"
LOCAL = "local-aaaaaaaa-1"  # a valve change m1 made on its own, accepted before the bad input
# (name, topic, payload, expected reason, expected field)
BAD = [
    ("not json", R, b"garbage", "not_json", ""),
    ("not utf-8", R, b"\xff\xfe{}", "not_json", ""),
    ("empty", R, b"", "not_json", ""),
    ("deeply nested", R, b"[" * 3000 + b"]" * 3000, "not_json", ""),
    ("array", R, b"[1,2]", "not_object", ""),
    ("no version", R, without("v"), "missing_field", "v"),
    ("version 2", R, enc(good(1, 100, v=2)), "unsupported_version", "v"),
    ("no seq", R, without("seq"), "missing_field", "seq"),
    ("no litres", R, without("litres"), "missing_field", "litres"),
    ("seq as text", R, enc({**good(1, 100), "seq": "1"}), "wrong_type", "seq"),
    ("seq fractional", R, enc({**good(1, 100), "seq": 1.5}), "wrong_type", "seq"),
    ("pulses boolean", R, enc(good(1, 100, pulses=True)), "wrong_type", "pulses"),
    ("negative pulses", R, enc(good(1, 100, pulses=-1)), "out_of_range", "pulses"),
    ("negative litres", R, enc(good(1, 100, litres=-0.5)), "out_of_range", "litres"),
    ("NaN flow", R, enc(good(1, 100)).replace(b'"flow": 1.5', b'"flow": NaN'), "not_finite", "flow"),
    ("infinite litres", R, enc(good(1, 100)).replace(b'"litres": 0.1', b'"litres": Infinity'), "not_finite",
     "litres"),
    ("impossible flow", R, enc(good(1, 100, flow=1e9)), "out_of_range", "flow"),
    ("seq too large", R, enc(good(2**31, 100)), "out_of_range", "seq"),
    ("sub-millilitre", R, enc(good(1, 100, litres=0.1005)), "bad_format", "litres"),
    ("ts a day ahead", R, enc(good(1, 100, ts=NOW + 86400)), "ts_future", "ts"),
    ("clock never set", R, enc(good(1, 100, ts=946684800 + 5)), "ts_too_old", "ts"),
    ("boot not hex", R, enc(good(1, 100, boot="xyz")), "bad_format", "boot"),
    ("valve ajar", R, enc(good(1, 100, valve="ajar")), "invalid_value", "valve"),
    ("1 MB payload", R, b'{"v":1,"pad":"' + b"x" * 1_048_576 + b'"}', "payload_too_large", ""),
    ("unknown meter", "aquafog/m404/tele/reading", enc(good(1, 100)), "unknown_meter", ""),
    ("unknown kind", "aquafog/m1/tele/gossip", enc(good(1, 100)), "topic_shape", ""),
    ("topic too deep", "aquafog/m1/tele/reading/x", enc(good(1, 100)), "topic_shape", ""),
    ("bad meter id", "aquafog/M 1!/tele/reading", enc(good(1, 100)), "bad_meter_id", ""),
    ("birth online not bool", "aquafog/m1/status", b'{"v":1,"online":"yes","boot":"aaaaaaaa"}', "wrong_type",
     "online"),
    ("result for unknown command", V, b'{"v":1,"id":"c-nope","state":"closed","ok":true}',
     "unknown_command", "id"),
    ("health rssi positive", H, health(rssi=3), "out_of_range", "rssi"),
    ("health unknown alarm", H, health(alarms=["fire"]), "invalid_value", "alarms"),
    ("health alarm twice", H, health(alarms=["leak", "leak"]), "invalid_value", "alarms"),
    ("health unknown reset", H, health(reset="gremlins"), "invalid_value", "reset"),
    ("health clock as bool", H, health(clock=True), "wrong_type", "clock"),
    ("health no buffer", H, health(buffer=None).replace(b', "buffer": null', b""), "missing_field", "buffer"),
    ("health of unknown meter", "aquafog/m404/tele/health", health(), "unknown_meter", ""),
    ("result unknown cause", V, local("local-aaaaaaaa-2", "closed", cause="vandals"), "invalid_value", "cause"),
    ("meter change with a non-local id", V, local("c-made-up", "closed"), "bad_format", "id"),
    # stateful: judged against what is already stored (good seq 0..9 precede these)
    ("register backwards", R, enc(good(50, 10)), "register_backwards", "litres"),
    ("conflicting duplicate", R, enc(good(3, 999_999)), "conflicting_duplicate", ""),
    ("meter change reported with the other state", V, local(LOCAL, "open"), "conflicting_duplicate", "id"),
    ("meter change id of another meter", "aquafog/m2/stat/valve", local(LOCAL, "closed"), "conflicting_duplicate",
     "id"),
]


def test_every_kind_of_bad_input_is_rejected_and_counted_while_good_data_flows(gateway_factory, broker):
    gw = gateway_factory(meters=["m1", "m2"]).start()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="m1")
    c.connect(broker.host, broker.port)
    c.loop_start()

    def pub(topic, payload):
        c.publish(topic, payload, qos=1).wait_for_publish(10)

    try:
        assert len(BAD) >= 20 and len({b[3] for b in BAD}) >= 15
        for seq in range(10):  # good data first, so the stateful cases have something to contradict
            pub(R, enc(good(seq, seq * 100)))
        pub(V, local(LOCAL, "closed"))
        pub(H, health(alarms=["burst"]))
        gw.wait_for(lambda: gw.get("/meters/m1")["register"]["seq"] == 9, "m1 seq 9 stored")
        gw.wait_for(lambda: gw.get("/meters/m1")["health"], "m1 health stored")
        assert gw.get(f"/commands/{LOCAL}")["command"]["origin"] == "meter"
        seq = 10
        for _name, topic, payload, _reason, _field in BAD:
            pub(topic, payload)
            pub(R, enc(good(seq, seq * 100)))      # good data keeps flowing between bad messages
            pub("aquafog/m2/tele/reading", enc(good(seq, seq)))
            seq += 1
        last = seq - 1
        gw.wait_for(lambda: gw.get("/meters/m1")["register"]["seq"] == last, "every good reading of m1 stored")
        # m2's last reading was published after m1's: it may be a batch behind
        gw.wait_for(lambda: gw.get("/meters/m2")["register"]["seq"] == last, "every good reading of m2 stored")
        stats = gw.get("/ingest/stats")
        expected: dict[str, dict] = {}
        for _name, _t, _p, reason, field in BAD:
            e = expected.setdefault(reason, {"count": 0, "fields": {}})
            e["count"] += 1
            if field:
                e["fields"][field] = e["fields"].get(field, 0) + 1
        assert stats["rejected"] == expected
        assert stats["accepted"] == 10 + 2 * len(BAD)
        m1 = gw.get("/meters/m1")
        assert m1["register"]["litres"] == last * 100 / 1000 and m1["readings"] == last + 1
        assert gw.get("/meters/m2")["readings"] == len(BAD)
        assert gw.get("/meters/m1")["health"]["alarms"] == ["burst"]  # no bad health replaced the good one
        assert gw.get("/meters/m1")["valve"]["desired"] == "closed"
        assert gw.get("/health")["status"] == "ok" and gw.proc.poll() is None
        reasons = {r["reason"] for r in gw.get("/ingest/stats?recent=100")["recent_rejects"]}
        assert reasons == set(expected)  # an operator can see what was refused and why
    finally:
        c.loop_stop()
        c.disconnect()
