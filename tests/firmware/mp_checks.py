# Firmware logic on real MicroPython (run by test_fw_on_micropython.py through mp_runner.mjs).
# MicroPython syntax only: this file runs on the device's interpreter, not on CPython.
import sys
import json

from aquameter import protocol as proto
from aquameter import config
from aquameter.register import Register
from aquameter.outbox import Outbox
from aquameter.valve import Valve
from aquameter.app import Meter

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
        topic = proto.reading_topic("aquafog", c["meter"])
    elif k == "birth":
        got = proto.encode_birth(f["boot"], f["fw"], f["valve"])
        topic = proto.status_topic("aquafog", c["meter"])
    elif k == "will":
        got = proto.encode_will(f["boot"])
        topic = proto.status_topic("aquafog", c["meter"])
    else:
        got = proto.encode_valve_result(f["id"], f["state"], f["ok"], f["error"])
        topic = proto.valve_result_topic("aquafog", c["meter"])
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

ob = Outbox(3)
for s in range(5):
    ob.push(["b", s, 0, s, s, 0, "open"])
check("outbox overflow", ob.dropped == 2 and [e[1] for e in ob.entries()] == [2, 3, 4])
ob.mark_sent()
ob.mark_sent()
check("outbox ack", ob.ack("b", 3) == 2 and ob.unacked() == 0 and ob.peek_unsent()[1] == 4)

v = Valve("open")
v.apply("closed", "c1")
v.apply("open", "c2")
check("valve duplicate", v.apply("closed", "c1") == "closed" and v.state == "open")

# --- the app on a fake board --------------------------------------------------------------------
_MASK = (1 << 30) - 1


class Board:
    def __init__(self, cfg):
        self.cfg = cfg
        self.t = _MASK - 5000  # crosses the ticks wrap
        self.el = 0
        self.pulses = 0
        self.relay = None
        self.files = {}
        self.pub = []
        self.inbound = []
        self.cb = None
        self.poll_ms = 100
        self.up = True

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return ((a - b + (1 << 29)) & _MASK) - (1 << 29)

    def ticks_add(self, t, d):
        return (t + d) & _MASK

    def advance(self, ms):
        self.el += ms
        self.t = (self.t + ms) & _MASK

    def epoch(self):
        return 1763990000 + self.el // 1000

    def pulse_count(self):
        return self.pulses

    def set_valve(self, closed):
        self.relay = closed

    def boot_id(self):
        return "0a0b0c0d"

    def load(self, name):
        return self.files.get(name)

    def save(self, name, data):
        self.files[name] = data

    def wifi_connect(self):
        pass

    def wifi_connected(self):
        return True

    def mqtt_connect(self, topic, msg, cb):
        if not self.up:
            raise OSError("down")
        self.cb = cb

    def mqtt_subscribe(self, topic, qos=1):
        pass

    def mqtt_publish(self, topic, msg, retain=False, qos=1):
        if not self.up:
            raise OSError("down")
        self.pub.append((topic, msg))

    def mqtt_check_msg(self):
        if not self.inbound:
            return None
        t, m = self.inbound.pop(0)
        self.cb(t, m)
        return 0x30

    def mqtt_ping(self):
        pass

    def mqtt_close(self, graceful=True):
        pass


def run(meter, board, ms):
    end = board.el + ms
    while board.el < end:
        w = meter.step()
        board.advance(min(max(w, 1), end - board.el))


cfg, errors = config.validate({"meter_id": "m0001", "wifi_ssid": "x", "broker_host": "h", "report_interval_s": 10})
b = Board(cfg)
m = Meter(b, cfg)
m.start()
m.step()
b.inbound.append((b"aquafog/m0001/cmnd/ack", b'{"v":1,"boot":null,"seq":null,"pulses":900,"litres":2.000}'))
b.pulses = 450
run(m, b, 25000)
readings = [json.loads(p) for t, p in b.pub if t.endswith("/tele/reading")]
check("app readings", [r["seq"] for r in readings] == [0, 1, 2] and readings[0]["pulses"] == 900)
check("app register", readings[-1]["pulses"] == 1350 and readings[-1]["litres"] == 3.0)
b.inbound.append((b"aquafog/m0001/cmnd/valve", b'{"v":1,"id":"c-1","state":"closed"}'))
m.step()
results = [p for t, p in b.pub if t == "aquafog/m0001/stat/valve"]
check("app command", b.relay is True and results == ['{"v":1,"id":"c-1","state":"closed","ok":true}'])
check("app reading after command", json.loads(b.pub[-1][1])["valve"] == "closed")
b.inbound.append((b"aquafog/m0001/cmnd/ack", b'{"v":1,"boot":"0a0b0c0d","seq":3,"pulses":1350,"litres":3.000}'))
m.step()
check("app ack frees", len(m.outbox) == 0)
saved = json.loads(b.files["state.json"])
check("app persisted", saved["pulses"] == 1350 and saved["valve"] == "closed")

print("MICROPYTHON-CHECKS-OK %d" % len(checks))
