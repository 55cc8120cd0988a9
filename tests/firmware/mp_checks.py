# Firmware logic on real MicroPython (run by test_fw_on_micropython.py through tools/mpwasm).
# MicroPython syntax only: this file runs on the device's interpreter, not on CPython.
import sys
import json

from aquameter import protocol as proto
from aquameter import config
from aquameter.register import Register
from aquameter.valve import Valve

assert sys.implementation.name == "micropython", sys.implementation

checks = []


def check(name, ok):
    if not ok:
        raise AssertionError(name)
    checks.append(name)


# --- the shared vectors ------------------------------------------------------------------
with open("/data/mqtt_v1.json") as f:
    vectors = json.load(f)

for c in vectors["meter_to_gateway"]:
    f = c["fields"]
    k = c["kind"]
    if k == "reading":
        got = proto.encode_reading(f["boot"], f["seq"], f["ts"], f["pulses"], f["ml"], f["flow_mlpm"], f["valve"])
        topic = proto.topic("aquafog", c["meter"], proto.READING)
    elif k == "birth":
        got = proto.encode_birth(f["boot"], f["fw"], f["valve"], f["conn"])
        topic = proto.topic("aquafog", c["meter"], proto.STATUS)
    elif k == "health":
        got = proto.encode_health(f["boot"], f["fw"], f["uptime_s"], f["reset"], f["rssi"], f["heap_free"],
                                  f["dropped"], f["buffer"], f["clock"], f["alarms"])
        topic = proto.topic("aquafog", c["meter"], proto.HEALTH)
    elif k == "will":
        got = proto.encode_will(f["boot"])
        topic = proto.topic("aquafog", c["meter"], proto.STATUS)
    else:
        got = proto.encode_valve_result(f["id"], f["state"], f["ok"], f["error"], f.get("cause"))
        topic = proto.topic("aquafog", c["meter"], proto.VALVE_RESULT)
    check("encode " + c["name"], got == c["payload"] and topic == c["topic"])

for c in vectors["gateway_to_meter"]:
    payload = c["payload"].encode()
    if c["kind"] == "valve_command":
        cmd_id, state, err = proto.decode_valve_command(payload)
        check("decode " + c["name"], err is None and {"id": cmd_id, "state": state} == c["fields"])
    else:
        fields, err = proto.decode_ack(payload)
        check("decode " + c["name"], err is None and fields == c["fields"])

for c in vectors["invalid_gateway_messages"]:
    if c["topic"].endswith("/cmnd/ack"):
        fields, err = proto.decode_ack(c["payload"].encode())
        check("reject " + c["name"], fields is None and err)
    elif c["name"] != "command_for_other_meter":
        cmd_id, state, err = proto.decode_valve_command(c["payload"].encode())
        check("reject " + c["name"], err and state is None and (cmd_id is not None) == (c["reply"] is not None))

fields, err = proto.decode_ack(b'{"v":1,"boot":"ffffffff","seq":3,"pulses":9007199254740991,"litres":98765432109.876}')
check("ack litres exact", err is None and fields["ml"] == 98765432109876)
check("bad utf8 ignored", proto.decode_valve_command(b"\xff\xfe{}")[0] is None)

# --- config, register, outbox, valve -----------------------------------------------------------
cfg, errors = config.validate({"meter_id": "m1", "wifi_ssid": "x", "broker_host": "h", "k_factor": 0.1})
check("config k 0.1", errors == [] and cfg["pulses_per_m3"] == 100)
cfg, errors = config.validate({"meter_id": "M 1", "broker_port": 0, "extra": 1})
check("config errors", len(errors) == 5)

for ppm3 in (450000, 1000, 100):
    r = Register(ppm3, 10000)
    r.start(0, 0)
    raw = 0
    ok = True
    for i in range(1, 500):
        raw += i % 5
        r.sample(raw, i * 250)
        ok = ok and r.ml == raw * 1000000 // ppm3
    check("register exact %d" % ppm3, ok)
r = Register(450000, 10000)
r.restore(900, 2000, 900, 2000, 450000)
r.start(0, 0)
r.sample(45, 1000)
check("reconcile", r.reconcile(4500, 10000) == (3600, 8000) and r.ml == 10100)
big = Register(1000, 10000)
big.restore(9007199254740000, 9007199254740000000, 9007199254740000, 9007199254740000000, 1000)
big.start(0, 0)
big.sample(991, 1000)
check("register beyond 2**53", big.pulses == 9007199254740991 and big.ml == 9007199254740991000)


v = Valve("open")
v.apply("closed", "c1")
v.apply("open", "c2")
check("valve duplicate", v.apply("closed", "c1") == "closed" and v.state == "open")

# --- the shared cases: the very functions tests/firmware/test_fw_shared.py runs on CPython ---------
import shared_cases

shared_cases.DATA = "/data"
for name in shared_cases.all_cases():
    getattr(shared_cases, name)()
    checks.append(name)
print("SHARED-CASES %d" % len(shared_cases.all_cases()))

print("MICROPYTHON-CHECKS-OK %d" % len(checks))
