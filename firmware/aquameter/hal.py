"""The board: the ONLY module that touches machine, network, umqtt and time.

Every dependency is injected with the device's module as the default, so the host
emulator hands each meter its own stand-ins (a simulated clock, a pulse counter driven
by a water-use model, a relay pin it can read, an MQTT client on paho-mqtt):

    Board(cfg, machine=machine, network=network, mqtt_client=MQTTClient, clock=time, fs_root="")

Every MQTT or Wi-Fi failure surfaces as OSError; nothing here blocks on the network
except what umqtt.simple itself blocks on (connect, QoS 1 PUBACK).

Seams left for the next issues (not built yet): a hardware watchdog (feed it in
sleep_ms), NTP (epoch() trusts the RTC), a flash ring for the outbox (load/save are
whole-file, atomic), deeper PCNT use (glitch filter tuning, overflow interrupts).
"""

import os

try:
    import machine
except ImportError:  # CPython without the emulator's stand-ins
    machine = None
try:
    import network
except ImportError:
    network = None
try:
    from umqtt.simple import MQTTClient
except ImportError:
    MQTTClient = None
import time

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_EPOCH_2000 = const(946684800)  # seconds from 1970-01-01 to 2000-01-01
_FILTER_NS = const(10000)  # PCNT glitch filter; the hardware clamps it to its maximum
_PULSE_UNIT = const(0)  # PCNT unit used for the flow sensor


class Board:
    def __init__(self, cfg, machine=machine, network=network, mqtt_client=MQTTClient,
                 clock=time, fs_root="", poll_ms=100):
        self.cfg = cfg
        self._machine = machine
        self._network = network
        self._mqtt_factory = mqtt_client
        self._clock = clock
        self._fs_root = fs_root
        self.poll_ms = poll_ms  # how often the app polls MQTT for inbound messages
        self._epoch_offset = _EPOCH_2000 if clock.gmtime(0)[0] == 2000 else 0
        self._counter = None
        self._irq_pin = None
        self._irq_count = 0
        self._relay = None
        self._wlan = None
        self._client = None

    # --- time --------------------------------------------------------------------
    def ticks_ms(self):
        return self._clock.ticks_ms()

    def ticks_diff(self, a, b):
        return self._clock.ticks_diff(a, b)

    def ticks_add(self, t, delta):
        return self._clock.ticks_add(t, delta)

    def epoch(self):
        """Unix seconds (the ESP32 RTC counts from 2000)."""
        return int(self._clock.time()) + self._epoch_offset

    def sleep_ms(self, ms):
        self._clock.sleep_ms(ms)

    # --- pulse input ---------------------------------------------------------------
    def pulse_count(self):
        """Raw pulses counted since this boot (monotonic)."""
        if self._counter is None and self._irq_pin is None:
            self._start_counting()
        if self._counter is not None:
            return self._counter.value()
        return self._irq_count

    def _start_counting(self):
        m = self._machine
        pin = m.Pin(self.cfg["pulse_pin"], m.Pin.IN, m.Pin.PULL_UP)
        if hasattr(m, "Counter"):  # MicroPython >= 1.26: hardware PCNT, no CPU per pulse
            self._counter = m.Counter(_PULSE_UNIT, pin, edge=m.Counter.FALLING, filter_ns=_FILTER_NS)
        else:  # fallback: a pin interrupt that only counts
            self._irq_pin = pin
            pin.irq(trigger=m.Pin.IRQ_FALLING, handler=self._on_pulse)

    def _on_pulse(self, pin):
        self._irq_count += 1

    # --- valve relay -----------------------------------------------------------------
    def set_valve(self, closed):
        """Drive the relay: energised = valve closed (a normally-open valve fails open)."""
        energised = bool(closed)
        level = 1 if energised == self.cfg["relay_active_high"] else 0
        if self._relay is None:
            m = self._machine
            self._relay = m.Pin(self.cfg["relay_pin"], m.Pin.OUT, value=level)
        else:
            self._relay.value(level)

    # --- identity, files, reset --------------------------------------------------------------
    def boot_id(self):
        b = os.urandom(4)
        return "%02x%02x%02x%02x" % (b[0], b[1], b[2], b[3])

    def _path(self, name):
        if not self._fs_root:
            return name
        return self._fs_root + "/" + name

    def load(self, name):
        """File content as str, or None when missing or unreadable."""
        try:
            with open(self._path(name)) as f:
                return f.read()
        except OSError:
            return None

    def save(self, name, data):
        """Write atomically: a temporary file, then rename over the old one."""
        path = self._path(name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(data)
        try:
            os.rename(tmp, path)
        except OSError:  # a filesystem whose rename does not replace
            try:
                os.remove(path)
            except OSError:
                pass
            os.rename(tmp, path)

    def reset(self):
        self._machine.reset()

    # --- Wi-Fi (non-blocking) ---------------------------------------------------------------
    def wifi_connect(self):
        """Start (or restart) joining the network; returns at once."""
        try:
            if self._wlan is None:
                self._wlan = self._network.WLAN(self._network.STA_IF)
                self._wlan.active(True)
            self._wlan.connect(self.cfg["wifi_ssid"], self.cfg["wifi_password"])
        except Exception as e:
            raise OSError("wifi: %s" % e)

    def wifi_connected(self):
        try:
            return self._wlan is not None and bool(self._wlan.isconnected())
        except Exception:
            return False

    # --- MQTT -------------------------------------------------------------------------
    def mqtt_connect(self, will_topic, will_msg, callback):
        """Connect with a retained QoS 1 last will and a clean session."""
        self.mqtt_close(False)
        cfg = self.cfg
        try:
            c = self._mqtt_factory(cfg["meter_id"], cfg["broker_host"], port=cfg["broker_port"],
                                   user=cfg["mqtt_user"], password=cfg["mqtt_password"],
                                   keepalive=cfg["mqtt_keepalive_s"])
            c.set_callback(callback)
            c.set_last_will(will_topic, will_msg, retain=True, qos=1)
            c.connect(clean_session=True)
        except Exception as e:  # OSError, MQTTException (refused), protocol asserts
            raise OSError("mqtt connect: %r" % (e,))
        self._client = c

    def mqtt_connected(self):
        return self._client is not None

    def _call(self, what, fn):
        if self._client is None:
            raise OSError("mqtt: not connected")
        try:
            return fn()
        except Exception as e:
            self.mqtt_close(False)
            raise OSError("mqtt %s: %r" % (what, e))

    def mqtt_publish(self, topic, msg, retain=False, qos=1):
        """Publish; at QoS 1 returns once the broker's PUBACK arrived."""
        c = self._client
        return self._call("publish", lambda: c.publish(topic, msg, retain, qos))

    def mqtt_subscribe(self, topic, qos=1):
        c = self._client
        return self._call("subscribe", lambda: c.subscribe(topic, qos))

    def mqtt_check_msg(self):
        """Process at most one pending packet (the callback runs for a message); None if idle."""
        c = self._client
        return self._call("check_msg", lambda: c.check_msg())

    def mqtt_ping(self):
        c = self._client
        return self._call("ping", lambda: c.ping())

    def mqtt_close(self, graceful=True):
        """graceful: send DISCONNECT (the broker drops the will); else just drop the socket."""
        c = self._client
        self._client = None
        if c is None:
            return
        try:
            if graceful:
                c.disconnect()
            else:
                c.sock.close()
        except Exception:
            pass
