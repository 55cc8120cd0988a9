# Runs ON MicroPython (tools/bench/heap.py puts it there): the firmware's heap in use
# after main.py's start-up and one reporting cycle, measured with gc.mem_alloc().
#
# The baseline is taken after what is built into the ESP32 firmware image (json, struct,
# binascii, os, time, gc; machine (tests/firmware/fakemachine.py), network, umqtt.simple
# and ntptime as stand-ins), so the figure is what the firmware's own modules and objects
# hold. Each "#@toplevel" ends a run: garbage is collected only between two.
import gc
import os
import sys

for name in ("json", "struct", "binascii", "time", "micropython", "errno"):
    __import__(name)
import fakemachine  # noqa: E402

if not hasattr(os, "urandom"):  # the WebAssembly port's os lacks it; the ESP32's has it
    os.urandom = lambda n: b"\x5e\xed\xc0\xde"[:n]


class _Mod:
    pass


class _WLAN:
    def __init__(self, i=0):
        pass

    def active(self, on=None):
        return True

    def connect(self, ssid=None, key=None):
        pass

    def isconnected(self):
        return True

    def status(self, *a):
        return -50


class _MQTT:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        self.cb = None
        self.inbox = []
        self.sent = 0

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        pass

    def connect(self, clean_session=True):
        return False

    def subscribe(self, topic, qos=0):
        pass

    def publish(self, topic, msg, retain=False, qos=0):
        self.sent += 1

    def check_msg(self):
        if self.inbox:
            t, m = self.inbox.pop(0)
            self.cb(t, m)

    def ping(self):
        pass

    def disconnect(self):
        pass


machine = fakemachine.Machine()  # tests/firmware/fakemachine.py, put next to this probe by heap.py
network = _Mod()
network.STA_IF = 0
network.WLAN = _WLAN
umqtt = _Mod()
umqtt_simple = _Mod()
umqtt_simple.MQTTClient = _MQTT
umqtt.simple = umqtt_simple
ntptime = _Mod()
ntptime.host = ""


def _settime():
    pass


ntptime.settime = _settime
sys.modules["machine"] = machine
sys.modules["network"] = network
sys.modules["umqtt"] = umqtt
sys.modules["umqtt.simple"] = umqtt_simple
sys.modules["ntptime"] = ntptime

CONFIG = ('{"meter_id":"m0001","wifi_ssid":"home","wifi_password":"secret","broker_host":"192.168.1.10",'
          '"mqtt_password":"pw"}')
with open("config.json", "w") as f:
    f.write(CONFIG)
ACK0 = '{"v":1,"boot":null,"seq":null,"pulses":0,"litres":0.000,"conn":%d}'  # the birth's answer echoes its conn
ACK1 = '{"v":1,"boot":"%s","seq":1,"pulses":0,"litres":0.000}'


def one_cycle(meter, board, cfg):
    """Stands in for app.run (which loops forever): connect, then one reporting cycle."""
    meter.step()  # Wi-Fi is up: connect, subscribe, birth
    client = board._client
    client.inbox.append((b"aquafog/m0001/cmnd/ack", (ACK0 % meter._conn).encode()))
    meter.step()  # the birth's ack: reading 0 goes out
    meter.request_reading()
    meter.step()  # one reporting cycle: a reading taken and published
    client.inbox.append((b"aquafog/m0001/cmnd/ack", (ACK1 % meter.boot).encode()))
    meter.step()  # acknowledged and freed
    assert client.sent >= 3 and len(meter.outbox) == 0, (client.sent, len(meter.outbox))


with open("/fw/main.py") as f:
    MAIN = f.read()
#@toplevel
gc.collect()  # this port frees garbage only between two top-level runs (see tools/mpwasm/runner.mjs)
base = gc.mem_alloc()
#@toplevel
import aquameter.app  # noqa: E402  (main.py imports it first thing too)

aquameter.app.run = one_cycle
exec(MAIN)  # main.py as on the board: config, Board, Meter, start(), run()
#@toplevel
gc.collect()
print("HEAP base=%d cycle=%d free=%d modules=%s" % (
    base, gc.mem_alloc() - base, gc.mem_free(),
    ",".join(sorted(m[10:] for m in sys.modules if m.startswith("aquameter.")))))
