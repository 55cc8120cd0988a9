"""The gateway side of the MQTT contract, against the shared vectors (unit, no broker)."""

import json
from pathlib import Path

import pytest

from aquafog.protocol import (Limits, Reading, Reject, Status, Topics, ValveResult, decode, encode_ack,
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
        return {"boot": decoded.boot, "fw": decoded.fw, "valve": decoded.valve}
    if isinstance(decoded, Status):
        return {"boot": decoded.boot}
    if isinstance(decoded, ValveResult):
        return {"id": decoded.id, "state": decoded.state, "ok": decoded.ok, "error": decoded.error}
    raise AssertionError(f"unexpected {decoded!r}")


def test_every_meter_message_vector_decodes_to_its_fields(vectors):
    cases = vectors["meter_to_gateway"]
    assert {c["kind"] for c in cases} == {"reading", "birth", "will", "valve_result"}
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
            topic, payload = TOPICS.ack(case["meter"]), encode_ack(f["boot"], f["seq"], f["pulses"], f["ml"])
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
    assert t.valve_command("m1") == "city/north/m1/cmnd/valve"
    assert t.ack("m1") == "city/north/m1/cmnd/ack"
    assert t.parse("city/north/m1/status") == ("m1", "status")
    assert t.subscriptions() == ["city/north/+/tele/#", "city/north/+/stat/#", "city/north/+/status"]


def test_encoders_refuse_what_the_contract_forbids():
    with pytest.raises(ValueError, match="command id"):
        encode_valve_command('x","ok":true', "closed")
    with pytest.raises(ValueError, match="valve state"):
        encode_valve_command("c1", "ajar")
