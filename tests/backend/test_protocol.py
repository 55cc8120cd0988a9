"""The gateway side of the MQTT contract, against the shared vectors (unit, no broker)."""

import json
from pathlib import Path

import pytest

from aquafog.protocol import (Health, Limits, Reading, Reject, Status, Topics, ValveResult, decode, encode_ack,
                              encode_valve_command)

TOPICS = Topics("aquafog")
LIMITS = Limits()
INVALID = json.loads((Path(__file__).parents[1] / "vectors" / "mqtt_v1.json").read_text())["invalid_meter_messages"]


def _payload(case) -> bytes:
    if "payload_hex" in case:
        return bytes.fromhex(case["payload_hex"].replace(" ", ""))
    return case["payload"].encode()


def _fields(decoded) -> dict:
    if isinstance(decoded, Reading):
        return {"boot": decoded.boot, "seq": decoded.seq, "ts": decoded.ts, "pulses": decoded.pulses,
                "ml": decoded.ml, "flow_mlpm": decoded.flow_mlpm, "valve": decoded.valve}
    if isinstance(decoded, Status) and decoded.online:
        return {"boot": decoded.boot, "fw": decoded.fw, "valve": decoded.valve, "conn": decoded.conn}
    if isinstance(decoded, Status):
        return {"boot": decoded.boot}
    if isinstance(decoded, ValveResult):
        d = {"id": decoded.id, "state": decoded.state, "ok": decoded.ok, "error": decoded.error}
        if decoded.cause is not None:  # only a change the meter made on its own has one
            d["cause"] = decoded.cause
        return d
    if isinstance(decoded, Health):
        d = decoded._asdict()
        del d["meter"]
        d["alarms"] = list(d["alarms"])
        return d
    raise AssertionError(f"unexpected {decoded!r}")


def test_every_meter_message_vector_decodes_to_its_fields(vectors):
    cases = vectors["meter_to_gateway"]
    assert {c["kind"] for c in cases} == {"reading", "birth", "will", "valve_result", "health"}
    for case in cases:
        decoded = decode(TOPICS, case["topic"], _payload(case), vectors["now"], LIMITS)
        assert not isinstance(decoded, Reject), (case["name"], decoded)
        assert decoded.meter == case["meter"], case["name"]
        assert _fields(decoded) == case["fields"], case["name"]


def test_every_gateway_message_vector_is_encoded_byte_for_byte(vectors):
    for case in vectors["gateway_to_meter"]:
        f = case["fields"]
        if case["kind"] == "valve_command":
            topic, payload = TOPICS.valve_command(case["meter"]), encode_valve_command(f["id"], f["state"])
        else:
            topic, payload = TOPICS.ack(case["meter"]), encode_ack(f["boot"], f["seq"], f["pulses"], f["ml"], f["conn"])
        assert topic == case["topic"], case["name"]
        assert payload == case["payload"].encode(), case["name"]
        json.loads(payload)  # and it is JSON


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c["name"])
def test_invalid_meter_message_is_rejected_naming_reason_and_field(case, vectors):
    decoded = decode(TOPICS, case["topic"], _payload(case), vectors["now"], LIMITS)
    assert isinstance(decoded, Reject), decoded
    assert (decoded.reason, decoded.field) == (case["reason"], case["field"])
    assert decoded.message  # a sentence for the log


def test_vectors_cover_at_least_twenty_distinct_kinds_of_bad_input(vectors):
    assert len(vectors["invalid_meter_messages"]) >= 20
    assert len({c["reason"] for c in vectors["invalid_meter_messages"]}) >= 12


def test_a_one_megabyte_payload_is_rejected_before_parsing():
    r = decode(TOPICS, "aquafog/m1/tele/reading", b"{" + b" " * 1_048_576 + b"}", 1764000000, LIMITS)
    assert isinstance(r, Reject) and r.reason == "payload_too_large"
    assert "1048578 bytes" in r.message and "8192" in r.message


def test_deeply_nested_json_is_rejected_not_a_crash():
    r = decode(TOPICS, "aquafog/m1/tele/reading", b"[" * 4000 + b"]" * 4000, 1764000000, LIMITS)
    assert isinstance(r, Reject) and r.reason == "not_json"


def test_an_empty_status_is_a_cleared_retained_message_and_ignored():
    assert decode(TOPICS, "aquafog/m1/status", b"", 1764000000, LIMITS) is None


def test_unknown_extra_keys_are_ignored_so_v1_can_grow(vectors):
    case = vectors["meter_to_gateway"][0]
    obj = json.loads(case["payload"])
    obj["rssi"] = -61
    decoded = decode(TOPICS, case["topic"], json.dumps(obj).encode(), vectors["now"], LIMITS)
    assert _fields(decoded) == case["fields"]


@pytest.mark.parametrize("topic,expected", [
    ("aquafog/m1/tele/reading", ("m1", "tele/reading")),
    ("aquafog/house-17_b/status", ("house-17_b", "status")),
    ("aquafog/m1/stat/valve", ("m1", "stat/valve")),
    ("aquafog/m1/tele/health", ("m1", "tele/health")),
    ("aquafog/m1/tele/health/x", "topic_shape"),
    ("aquafog/m1/cmnd/valve", "topic_shape"),
    ("aquafog/m1/cmnd/ack", "topic_shape"),
    ("aquafog/m1", "topic_shape"),
    ("aquafog/m1/tele", "topic_shape"),
    ("other/m1/tele/reading", "topic_shape"),
    ("aquafog/M1/tele/reading", "bad_meter_id"),
    ("aquafog/-m1/tele/reading", "bad_meter_id"),
    ("aquafog/" + "a" * 33 + "/tele/reading", "bad_meter_id"),
    ("aquafog//tele/reading", "bad_meter_id"),
])
def test_topic_table(topic, expected):
    got = TOPICS.parse(topic)
    if isinstance(expected, str):
        assert isinstance(got, Reject) and got.reason == expected
    else:
        assert got == expected


def test_topics_are_built_in_one_place_for_any_root():
    t = Topics("city/north")
    assert t.reading("m1") == "city/north/m1/tele/reading"
    assert t.health("m1") == "city/north/m1/tele/health"
    assert t.valve_command("m1") == "city/north/m1/cmnd/valve"
    assert t.ack("m1") == "city/north/m1/cmnd/ack"
    assert t.parse("city/north/m1/status") == ("m1", "status")
    assert t.subscriptions() == ["city/north/+/tele/#", "city/north/+/stat/#", "city/north/+/status"]


def test_encoders_refuse_what_the_contract_forbids():
    with pytest.raises(ValueError, match="command id"):
        encode_valve_command('x","ok":true', "closed")
    with pytest.raises(ValueError, match="valve state"):
        encode_valve_command("c1", "ajar")


# ---------------------------------------------------------------- health and meter-made valve changes

HEALTH_TOPIC = "aquafog/m1/tele/health"
HEALTH = {"v": 1, "boot": "3f2a9c1e", "fw": "0.2.0", "uptime_s": 86400, "reset": "watchdog", "rssi": -67,
          "heap_free": 81234, "dropped": 12, "buffer": 3, "clock": "ntp", "alarms": ["leak"]}
HEALTH_FIELDS = ("boot", "fw", "uptime_s", "reset", "rssi", "heap_free", "dropped", "buffer", "clock", "alarms")
# every field's bad forms: each must be rejected naming that field
BAD_HEALTH_VALUES = {
    "boot": ["3F2A9C1E", "3f2a9c1", 12345678, None],
    "fw": [1, ["0.2.0"], "x" * 33, None],
    "uptime_s": [-1, 2**31, 1.5, "86400", True, None],
    "reset": ["panic", "", 3, None],
    "rssi": [1, -128, -67.5, "-67", False],
    "heap_free": [-1, 2**31, 1e3, "81234", None],
    "dropped": [-1, 2**31, True, None],
    "buffer": [-1, 2**31, 3.0, None],
    "clock": ["gps", "NTP", 0, None],
    "alarms": ["leak", {"leak": True}, ["fire"], ["leak", "leak"], [None], None],
}


def _health(**over) -> bytes:
    return json.dumps({**HEALTH, **over}).encode()


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in BAD_HEALTH_VALUES.items() for v in vs],
                         ids=lambda x: repr(x)[:20])
def test_each_bad_health_field_is_rejected_naming_that_field(field, value):
    r = decode(TOPICS, HEALTH_TOPIC, _health(**{field: value}), 1764000000, LIMITS)
    assert isinstance(r, Reject), r
    assert r.field == field and r.reason in ("wrong_type", "out_of_range", "bad_format", "invalid_value")
    assert field in r.message


@pytest.mark.parametrize("field", HEALTH_FIELDS)
def test_every_health_field_is_required(field):
    obj = dict(HEALTH)
    del obj[field]
    r = decode(TOPICS, HEALTH_TOPIC, json.dumps(obj).encode(), 1764000000, LIMITS)
    assert isinstance(r, Reject) and (r.reason, r.field) == ("missing_field", field)


def test_health_bounds_and_alarm_order():
    h = decode(TOPICS, HEALTH_TOPIC, _health(uptime_s=2**31 - 1, rssi=0, heap_free=0, dropped=2**31 - 1,
                                             alarms=["valve_fault", "leak", "burst"], extra={"x": 1}),
               1764000000, LIMITS)
    assert isinstance(h, Health) and h.meter == "m1"
    assert (h.uptime_s, h.rssi, h.dropped) == (2**31 - 1, 0, 2**31 - 1)
    assert h.alarms == ("leak", "burst", "valve_fault")  # one order, so a change is a change of the set
    assert decode(TOPICS, HEALTH_TOPIC, _health(rssi=-127, fw=""), 1764000000, LIMITS).rssi == -127


def test_a_result_with_a_cause_is_a_change_the_meter_made_on_its_own():
    topic = "aquafog/m1/stat/valve"
    r = decode(TOPICS, topic, b'{"v":1,"id":"local-3f2a9c1e-1","state":"closed","ok":true,"cause":"burst"}',
               1764000000, LIMITS)
    assert r == ValveResult("m1", "local-3f2a9c1e-1", "closed", True, None, "burst")
    r = decode(TOPICS, topic, b'{"v":1,"id":"c-1","state":"closed","ok":true,"cause":null}', 1764000000, LIMITS)
    assert r.cause is None  # null is the same as absent
    for cause, reason in (("leak", "invalid_value"), ("", "invalid_value"), (1, "wrong_type"), ([], "wrong_type")):
        payload = json.dumps({"v": 1, "id": "local-3f2a9c1e-1", "state": "closed", "ok": True, "cause": cause})
        r = decode(TOPICS, topic, payload.encode(), 1764000000, LIMITS)
        assert isinstance(r, Reject) and (r.reason, r.field) == (reason, "cause"), cause


def test_a_birth_without_conn_from_older_firmware_is_accepted_without_one():
    d = decode(TOPICS, "aquafog/m1/status", b'{"v":1,"online":true,"boot":"3f2a9c1e","fw":"0.1.0","valve":"open"}',
               1764000000, LIMITS)
    assert d == Status("m1", True, "3f2a9c1e", "0.1.0", "open", None)
    assert encode_ack(None, None, 0, 0, None) == b'{"v":1,"boot":null,"seq":null,"pulses":0,"litres":0.000}'
