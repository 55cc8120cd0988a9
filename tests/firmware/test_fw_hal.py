"""aquameter.hal.Board against fake machine/network/MQTT modules (all injected)."""

import os
import time as _time

import pytest

from aquameter.hal import Board
from fakeboard import make_cfg


class FakePin:
    IN, OUT, PULL_UP, IRQ_FALLING = 1, 2, 3, 4

    def __init__(self, n, mode=None, pull=None, value=None):
        self.n, self.mode, self.pull, self.level, self.handler = n, mode, pull, value, None

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = v

    def irq(self, trigger=None, handler=None, hard=False):
        self.handler, self.hard = handler, hard


class MachineNoCounter:
    Pin = FakePin

    def __init__(self):
        self.resets = 0

    def reset(self):
        self.resets += 1


class FakeCounter:
    FALLING = 2

    def __init__(self, unit, pin, edge=None, filter_ns=0):
        self.unit, self.pin, self.edge, self.filter_ns, self.count = unit, pin, edge, filter_ns, 0

    def value(self):
        return self.count


class MachineWithCounter(MachineNoCounter):
    Counter = FakeCounter


class Clock2000:
    """MicroPython's ESP32 time: the epoch is 2000-01-01."""

    def __init__(self):
        self.t = 100

    def gmtime(self, s):
        return (2000, 1, 1, 0, 0, 0, 5, 1)

    def time(self):
        return self.t

    def ticks_ms(self):
        return 5

    def ticks_us(self):
        return 5000

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, b):
        return a + b

    def sleep_ms(self, ms):
        pass


class UnixClock(Clock2000):
    def gmtime(self, s):
        return _time.gmtime(s)


def test_epoch_adds_the_2000_offset_only_when_the_port_counts_from_2000():
    assert Board(make_cfg(), machine=MachineNoCounter(), clock=Clock2000()).epoch() == 946684800 + 100
    assert Board(make_cfg(), machine=MachineNoCounter(), clock=UnixClock()).epoch() == 100


def test_pulses_from_hardware_counter_when_available():
    m = MachineWithCounter()
    b = Board(make_cfg(pulse_pin=13), machine=m, clock=UnixClock())
    assert b.pulse_count() == 0
    b._counter.count = 42
    assert b.pulse_count() == 42
    assert b._counter.pin.n == 13 and b._counter.edge == FakeCounter.FALLING and b._counter.filter_ns > 0


def test_pulses_from_pin_interrupt_without_counter():
    b = Board(make_cfg(pulse_pin=13), machine=MachineNoCounter(), clock=UnixClock())
    assert b.pulse_count() == 0
    pin = b._pulse_pin
    assert pin.hard  # counted in the interrupt itself, not a scheduled callback that can be dropped
    for _ in range(3):
        pin.handler(pin)
    assert b.pulse_count() == 3


@pytest.mark.parametrize("active_high,closed,level", [(True, True, 1), (True, False, 0), (False, True, 0), (False, False, 1)])
def test_relay_polarity(active_high, closed, level):
    b = Board(make_cfg(relay_active_high=active_high), machine=MachineNoCounter(), clock=UnixClock())
    b.set_valve(closed)
    assert b._relay.level == level and b._relay.mode == FakePin.OUT
    b.set_valve(not closed)
    assert b._relay.level == 1 - level


def test_files_are_written_atomically(tmp_path):
    b = Board(make_cfg(), machine=MachineNoCounter(), clock=UnixClock(), fs_root=str(tmp_path))
    assert b.load("state.json") is None
    b.save("state.json", '{"a":1}')
    b.save("state.json", '{"a":2}')
    assert b.load("state.json") == '{"a":2}'
    assert sorted(os.listdir(tmp_path)) == ["state.json"]  # no temporary left behind


def test_boot_id_is_8_lowercase_hex():
    b = Board(make_cfg(), machine=MachineNoCounter(), clock=UnixClock())
    ids = {b.boot_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 8 and all(c in "0123456789abcdef" for c in i) for i in ids)


class FakeUmqtt:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        self.args = (client_id, server, port, user, password, keepalive)
        self.ssl = ssl
        self.will = None
        self.fail = None

    def set_callback(self, cb):
        self.cb = cb

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, retain, qos)

    def connect(self, clean_session=True):
        if FakeUmqtt.refuse:
            raise FakeUmqtt.refuse
        FakeUmqtt.last = self

    def publish(self, topic, msg, retain=False, qos=0):
        raise IndexError("socket read returned nothing")  # what umqtt does on a dead socket


FakeUmqtt.refuse = None


def test_mqtt_errors_of_any_kind_become_oserror():
    cfg = make_cfg(mqtt_password="pw")
    b = Board(cfg, machine=MachineNoCounter(), clock=UnixClock(), mqtt_client=FakeUmqtt)
    FakeUmqtt.refuse = AssertionError()
    with pytest.raises(OSError):
        b.mqtt_connect("aquafog/m0001/status", "{}", lambda t, m: None)
    FakeUmqtt.refuse = None
    b.mqtt_connect("aquafog/m0001/status", "will", lambda t, m: None)
    c = FakeUmqtt.last
    assert c.args == ("m0001", "127.0.0.1", 1883, "m0001", "pw", 60)
    assert c.will == ("aquafog/m0001/status", "will", True, 1)
    with pytest.raises(OSError):
        b.mqtt_publish("t", "m")
    assert not b.mqtt_connected()
    with pytest.raises(OSError):
        b.mqtt_check_msg()


class FakeWLAN:
    def __init__(self, iface):
        self.connects = []

    def active(self, on):
        self.on = on

    def connect(self, ssid, pw):
        self.connects.append((ssid, pw))

    def isconnected(self):
        return len(self.connects) > 0


class FakeNetwork:
    STA_IF = 0
    WLAN = FakeWLAN


def test_wifi_connect_is_non_blocking():
    b = Board(make_cfg(wifi_password="secret"), machine=MachineNoCounter(), network=FakeNetwork(), clock=UnixClock())
    assert not b.wifi_connected()
    b.wifi_connect()
    assert b._wlan.connects == [("lab", "secret")]
    assert b.wifi_connected()


def test_tls_context_on_cpythons_ssl_names_the_file_it_cannot_use(tmp_path):
    # The emulator's meters use CPython's ssl through the same code: the files are looked
    # up next to config.json (fs_root), and an unusable one is named by its config key.
    cfg = make_cfg(mqtt_tls=True, mqtt_cafile="ca.crt")
    b = Board(cfg, machine=MachineNoCounter(), clock=UnixClock(), mqtt_client=FakeUmqtt, fs_root=str(tmp_path))
    with pytest.raises(OSError, match="mqtt_cafile ca.crt"):
        b.mqtt_connect("aquafog/m0001/status", "will", lambda t, m: None)
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(OSError, match="mqtt_cafile ca.crt"):
        b.mqtt_connect("aquafog/m0001/status", "will", lambda t, m: None)
    assert not b.mqtt_connected()


def test_tls_context_on_cpythons_ssl_requires_the_certificate_and_checks_the_name(tmp_path):
    import ssl

    from aquafog.provisioning import tls as devca

    devca.make_ca(tmp_path)
    cfg = make_cfg(mqtt_tls=True, broker_host="127.0.0.1", mqtt_tls_hostname="fog1.lan")
    b = Board(cfg, machine=MachineNoCounter(), clock=UnixClock(), mqtt_client=FakeUmqtt, fs_root=str(tmp_path))
    b.mqtt_connect("aquafog/m0001/status", "will", lambda t, m: None)
    tls = FakeUmqtt.last.ssl
    assert tls.ctx.verify_mode == ssl.CERT_REQUIRED and tls.ctx.check_hostname
    assert tls.ctx.cert_store_stats()["x509_ca"] == 1 and tls.name == "fog1.lan"
