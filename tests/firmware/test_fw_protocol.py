"""The firmware side of the MQTT contract, against the shared vectors (tests/vectors/mqtt_v1.json)."""

import pytest

from aquameter import protocol as proto

ENCODERS = {
    "reading": lambda f: proto.encode_reading(f["boot"], f["seq"], f["ts"], f["pulses"], f["ml"], f["flow_mlpm"], f["valve"]),
    "birth": lambda f: proto.encode_birth(f["boot"], f["fw"], f["valve"], f["conn"]),
    "will": lambda f: proto.encode_will(f["boot"]),
    "valve_result": lambda f: proto.encode_valve_result(f["id"], f["state"], f["ok"], f["error"], f.get("cause")),
    "health": lambda f: proto.encode_health(f["boot"], f["fw"], f["uptime_s"], f["reset"], f["rssi"], f["heap_free"],
                                            f["dropped"], f["buffer"], f["clock"], f["alarms"]),
}
LEAVES = {
    "reading": proto.READING,
    "birth": proto.STATUS,
    "will": proto.STATUS,
    "valve_result": proto.VALVE_RESULT,
    "health": proto.HEALTH,
    "valve_command": proto.VALVE_COMMAND,
    "ack": proto.ACK,
}


def test_meter_to_gateway_vectors_encode_byte_for_byte(vectors):
    cases = vectors["meter_to_gateway"]
    assert {c["kind"] for c in cases} == set(ENCODERS)
    for case in cases:
        payload = ENCODERS[case["kind"]](case["fields"])
        assert payload == case["payload"], case["name"]
        assert payload.encode() == case["payload"].encode("utf-8"), case["name"]
        assert proto.topic("aquafog", case["meter"], LEAVES[case["kind"]]) == case["topic"], case["name"]


def test_gateway_to_meter_vectors_decode_to_fields(vectors):
    for case in vectors["gateway_to_meter"]:
        assert proto.topic("aquafog", case["meter"], LEAVES[case["kind"]]) == case["topic"], case["name"]
        for payload in (case["payload"], case["payload"].encode()):
            if case["kind"] == "valve_command":
                cmd_id, state, err = proto.decode_valve_command(payload)
                assert err is None, case["name"]
                assert {"id": cmd_id, "state": state} == case["fields"], case["name"]
            else:
                fields, err = proto.decode_ack(payload)
                assert err is None, case["name"]
                assert fields == case["fields"], case["name"]


def test_invalid_gateway_messages_are_rejected_without_raising(vectors):
    for case in vectors["invalid_gateway_messages"]:
        if case["topic"].endswith("/cmnd/ack"):
            fields, err = proto.decode_ack(case["payload"])
            assert fields is None and err, case["name"]
        elif case["name"] == "command_for_other_meter":
            continue  # a valid payload; the topic is what makes it foreign (see test_fw_app)
        else:
            cmd_id, state, err = proto.decode_valve_command(case["payload"])
            assert err, case["name"]
            assert state is None, case["name"]
            # only a command with a usable id earns a reply
            assert (cmd_id is not None) == (case["reply"] is not None), case["name"]


@pytest.mark.parametrize("payload", [
    b"\xff\xfe{}", b"", b"null", b"[]", b'{"v":true,"id":"a","state":"open"}',
    b'{"v":1,"id":"","state":"open"}', b'{"v":1,"id":"' + b"a" * 65 + b'","state":"open"}',
    b'{"v":1,"id":7,"state":"open"}', b'{"v":1,"id":"a b","state":"open"}',
])
def test_bad_valve_commands_are_ignored(payload):
    assert proto.decode_valve_command(payload)[0] is None


@pytest.mark.parametrize("payload", [
    b'{"v":1,"boot":"3f2a9c1e","seq":1,"pulses":1,"litres":0.0025}',
    b'{"v":1,"boot":"3f2a9c1e","seq":1,"pulses":1,"litres":-0.002}',
    b'{"v":1,"boot":"3f2a9c1e","seq":1,"pulses":1,"litres":1e3}',
    b'{"v":1,"boot":"3f2a9c1e","seq":1,"pulses":1,"litres":"1.000"}',
    b'{"v":1,"boot":"3f2a9c1e","seq":1,"pulses":1,"litres":true}',
    b'{"v":1,"boot":"3f2a9c1e","seq":1,"pulses":1}',
    b'{"v":1,"boot":"3F2A9C1E","seq":1,"pulses":1,"litres":0.002}',
    b'{"v":1,"boot":"3f2a9c1e","seq":null,"pulses":1,"litres":0.002}',
    b'{"v":1,"boot":"3f2a9c1e","seq":2147483648,"pulses":1,"litres":0.002}',
    b'{"v":1,"boot":"3f2a9c1e","seq":1,"pulses":9007199254740992,"litres":0.002}',
    b'{"v":1,"boot":"3f2a9c1e","seq":1,"pulses":1.0,"litres":0.002}',
    b'{"v":2,"boot":"3f2a9c1e","seq":1,"pulses":1,"litres":0.002}',
])
def test_bad_acks_are_rejected(payload):
    fields, err = proto.decode_ack(payload)
    assert fields is None and err


def test_ack_litres_are_read_exactly_not_through_a_float():
    # 98765432109.876 is not representable in a single- (or double-) precision float
    fields, err = proto.decode_ack(b'{"v":1,"boot":"ffffffff","seq":3,"pulses":9007199254740991,"litres":98765432109.876}')
    assert err is None and fields["ml"] == 98765432109876
    fields, err = proto.decode_ack(b'{ "v" : 1 , "boot" : null , "seq" : null , "pulses" : 5 , "litres" : 12.5 , "x" : 1 }')
    assert err is None and fields == {"boot": None, "seq": None, "pulses": 5, "ml": 12500, "conn": None}


@pytest.mark.parametrize("ml,text", [(0, "0.000"), (1, "0.001"), (999, "0.999"), (1000, "1.000"), (274346, "274.346"),
                                     (98765432109876, "98765432109.876")])
def test_milli_formats_integers_with_three_decimals(ml, text):
    assert proto.milli(ml) == text
    assert proto.parse_milli('{"litres":%s}' % text, "litres") == ml
