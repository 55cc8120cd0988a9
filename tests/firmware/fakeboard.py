"""A fake Board for driving the firmware app step by step on CPython (no broker, no threads).

It mirrors aquameter.hal.Board's interface. Time is explicit (advance()), ticks wrap
like MicroPython's (2**30 ms), and every MQTT call is recorded.
"""

import io
import json

TICKS_PERIOD = 1 << 30
TICKS_MASK = TICKS_PERIOD - 1
TICKS_HALF = TICKS_PERIOD // 2


def make_cfg(**over):
    from aquameter import config

    raw = {"meter_id": "m0001", "wifi_ssid": "lab", "broker_host": "127.0.0.1"}
    raw.update(over)
    cfg, errors = config.validate(raw)
    assert not errors, errors
    return cfg


class FakeBoard:
    def __init__(self, cfg, ticks0=TICKS_PERIOD - 30_000, epoch0=1_763_990_000, files=None, boot_ids=None,
                 rtc_valid=True):
        self.cfg = cfg
        self.ticks = ticks0 & TICKS_MASK  # starts 30 s before the ticks wrap on purpose
        self.elapsed_ms = 0
        self.epoch0 = epoch0
        self.pulses = 0
        self.relay_closed = None
        self.files = {} if files is None else files
        self.events = []  # ordered log of hardware/network actions
        self.poll_ms = 100
        self.wifi_up = True
        self.wifi_joined = False
        self.broker_up = True
        self.connected = False
        self.will = None
        self.callback = None
        self.published = []  # (topic, payload, retain, qos)
        self.subscribed = []
        self.inbound = []
        self.connect_attempts = []  # elapsed_ms of each attempt
        self.fail_next_publish = False
        self.pings = 0
        self.rtc_valid = rtc_valid  # False: a cold power-on, the RTC says 2000
        self.ntp_up = True
        self.ntp_calls = 0
        self.feedback = None  # None: no position switch; else True (closed) / False (open)
        self.watchdog = []  # ("start", ms) / "feed" / ("hold", ms)
        self.cause = "power_on"
        self._boot_ids = list(boot_ids or ["0badc0de", "00000002", "00000003", "00000004"])

    # time
    def advance(self, ms):
        self.elapsed_ms += ms
        self.ticks = (self.ticks + ms) & TICKS_MASK

    def ticks_ms(self):
        return self.ticks

    def ticks_diff(self, a, b):
        return ((a - b + TICKS_HALF) & TICKS_MASK) - TICKS_HALF

    def ticks_add(self, t, d):
        return (t + d) & TICKS_MASK

    def epoch(self):
        if not self.rtc_valid:
            return 946684800 + self.elapsed_ms // 1000
        return self.epoch0 + self.elapsed_ms // 1000

    def ntp_time(self, host):
        self.ntp_calls += 1
        if not (self.ntp_up and self.wifi_up):
            raise OSError("ntp %s: timeout" % host)
        self.rtc_valid = True
        return self.epoch()

    def sleep_ms(self, ms):
        self.advance(ms)

    # hardware
    def pulse_count(self):
        return self.pulses

    def set_valve(self, closed):
        self.relay_closed = bool(closed)
        self.events.append(("relay", self.relay_closed))

    def valve_feedback(self):
        return self.feedback

    def watchdog_start(self, ms):
        self.watchdog.append(("start", ms))

    def watchdog_feed(self):
        self.watchdog.append("feed")

    def watchdog_hold(self, ms):
        self.watchdog.append(("hold", ms))

    def reset_cause(self):
        return self.cause

    def rssi(self):
        return -61 if self.wifi_connected() else None

    def heap_free(self):
        return 90112

    def open_ring(self, name, size):
        """A ring file kept in `files` as a BytesIO, so a new FakeBoard on the same files reboots."""
        f = self.files.get(name)
        fresh = not isinstance(f, io.BytesIO) or len(f.getvalue()) != size
        if fresh:
            f = self.files[name] = io.BytesIO(bytes(size))
        self.events.append(("open_ring", name))
        return _RingFile(f, self), fresh

    def boot_id(self):
        return self._boot_ids.pop(0)

    def load(self, name):
        return self.files.get(name)

    def save(self, name, data):
        self.files[name] = data
        self.events.append(("save", name))

    def state(self):
        return json.loads(self.files["state.json"])

    # wifi
    def wifi_connect(self):
        self.events.append(("wifi_connect",))
        if self.wifi_up:
            self.wifi_joined = True

    def wifi_connected(self):
        return self.wifi_up and self.wifi_joined

    # mqtt
    def mqtt_connect(self, will_topic, will_msg, callback):
        self.connect_attempts.append(self.elapsed_ms)
        self.events.append(("mqtt_connect",))
        if not (self.wifi_up and self.broker_up):
            raise OSError("refused")
        self.connected = True
        self.will = (will_topic, will_msg)
        self.callback = callback

    def _need(self):
        if not (self.connected and self.wifi_up and self.broker_up):
            self.connected = False
            raise OSError("not connected")

    def mqtt_publish(self, topic, msg, retain=False, qos=1):
        self._need()
        if self.fail_next_publish:
            self.fail_next_publish = False
            self.connected = False
            raise OSError("connection reset")
        self.published.append((topic, msg, retain, qos))
        self.events.append(("publish", topic))

    def mqtt_subscribe(self, topic, qos=1):
        self._need()
        self.subscribed.append((topic, qos))

    def mqtt_check_msg(self):
        self._need()
        if not self.inbound:
            return None
        topic, msg = self.inbound.pop(0)
        self.callback(topic, msg)
        return 0x30

    def mqtt_ping(self):
        self._need()
        self.pings += 1

    def mqtt_close(self, graceful=True):
        if self.connected:
            self.events.append(("mqtt_close", graceful))
        self.connected = False

    def reset(self):
        raise RuntimeError("reset")

    # test helpers
    def deliver(self, topic, payload):
        """Queue an inbound message as umqtt would hand it over (bytes)."""
        if isinstance(topic, str):
            topic = topic.encode()
        if isinstance(payload, str):
            payload = payload.encode()
        self.inbound.append((topic, payload))

    def readings(self):
        return [json.loads(p) for (t, p, r, q) in self.published if t.endswith("/tele/reading")]

    def on(self, suffix):
        return [p for (t, p, r, q) in self.published if t.endswith(suffix)]


class _RingFile:
    """A file opened r+b over a BytesIO that outlives it; counts the writes (flash wear)."""

    def __init__(self, f, board):
        self.f, self.board = f, board
        self.writes = 0

    def seek(self, pos):
        self.f.seek(pos)

    def read(self, n):
        return self.f.read(n)

    def write(self, data):
        self.board.events.append(("ring_write", len(data)))
        return self.f.write(data)

    def flush(self):
        pass


def run(meter, board, duration_ms, max_steps=100_000):
    """The device main loop for `duration_ms` of fake time: step, then sleep what it asked."""
    end = board.elapsed_ms + duration_ms
    steps = 0
    while True:
        wait = meter.step()
        assert wait >= 0
        steps += 1
        assert steps < max_steps, "step() keeps asking to run at once"
        if board.elapsed_ms + wait > end:
            board.advance(end - board.elapsed_ms)
            return
        board.advance(wait)


def ack_payload(boot, seq, pulses, ml, conn=None):
    """conn: the echo of a birth's conn (the gateway's answer to that birth); None: a reading's ack,
    or a gateway older than conn."""
    if boot is None:
        text = '{"v":1,"boot":null,"seq":null,"pulses":%d,"litres":%d.%03d' % (pulses, ml // 1000, ml % 1000)
    else:
        text = '{"v":1,"boot":"%s","seq":%d,"pulses":%d,"litres":%d.%03d' % (boot, seq, pulses, ml // 1000, ml % 1000)
    if conn is not None:
        text += ',"conn":%d' % conn
    return text + "}"
