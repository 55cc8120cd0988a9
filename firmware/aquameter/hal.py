"""The board: the ONLY module that touches machine, network, umqtt, ntptime, ssl, gc and time.

Every dependency is injected with the device's module as the default, so the host
emulator hands each meter its own stand-ins (a simulated clock, a pulse counter driven
by a water-use model, a relay pin it can read, an MQTT client on paho-mqtt):

    Board(cfg, machine=machine, network=network, mqtt_client=MQTTClient, clock=time,
          fs_root="", ntp=ntptime, ssl=None)

With mqtt_tls the board builds one ssl.SSLContext (the CA in mqtt_cafile, the broker's
name mqtt_tls_hostname checked, mqtt_certfile/mqtt_keyfile for mutual TLS) and hands it
to umqtt.simple, which wraps its socket with it. `ssl` is imported only then (None: the
device's module), so a build or a test port without ssl runs a plain meter.

Every MQTT, Wi-Fi or NTP failure surfaces as OSError; nothing here blocks on the
network except what umqtt.simple (connect, QoS 1 PUBACK) and ntptime (1 s) block on.
"""

import gc
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
try:
    import ntptime
except ImportError:
    ntptime = None
import time

from aquameter.pulses import QuietFilter

from aquameter import const

_EPOCH_2000 = const(946684800)  # seconds from 1970-01-01 to 2000-01-01
_FILTER_NS = const(10000)  # PCNT glitch filter (electrical noise); the hardware clamps it at ~12.8 us
_PULSE_UNIT = const(0)  # PCNT unit used for the flow sensor
_RESETS = ("power_on", "hard", "watchdog", "deep_sleep", "soft", "brownout")
_RESET_NAMES = ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET", "BROWN_OUT_RESET")


class Board:
    def __init__(self, cfg, machine=machine, network=network, mqtt_client=MQTTClient,
                 clock=time, fs_root="", poll_ms=100, ntp=ntptime, ssl=None):
        self.cfg = cfg
        self._ssl = ssl  # the ssl module (injected), or None: imported at the first TLS connect
        self._tls = None  # the TLS context, built once
        self._machine = machine
        self._network = network
        self._mqtt_factory = mqtt_client
        self._clock = clock
        self._ntp = ntp
        self._fs_root = fs_root
        self.poll_ms = poll_ms  # how often the app polls MQTT for inbound messages
        self._epoch_offset = _EPOCH_2000 if clock.gmtime(0)[0] == 2000 else 0
        self._counter = None
        self._filter = None
        self._pulse_pin = None
        self._relay = None
        self._feedback = None
        self._wdt = None
        self._wdt_timer = None
        self._wlan = None
        self._client = None
        self._ring = None

    # --- time --------------------------------------------------------------------
    def ticks_ms(self):
        return self._clock.ticks_ms()

    def ticks_diff(self, a, b):
        return self._clock.ticks_diff(a, b)

    def ticks_add(self, t, delta):
        return self._clock.ticks_add(t, delta)

    def epoch(self):
        """Unix seconds from the RTC (the ESP32 counts from 2000)."""
        return int(self._clock.time()) + self._epoch_offset

    def sleep_ms(self, ms):
        self._clock.sleep_ms(ms)

    def ntp_time(self, host):
        """Set the RTC from NTP and return Unix seconds; OSError when no answer (1 s)."""
        try:
            self._ntp.host = host
            self._ntp.settime()
        except Exception as e:
            raise OSError("ntp %s: %r" % (host, e))
        return self.epoch()

    # --- pulse input ---------------------------------------------------------------
    def pulse_count(self):
        """Raw pulses counted since this boot (monotonic)."""
        if self._pulse_pin is None:
            self._start_counting()
        if self._counter is not None:
            return self._counter.value()
        f = self._filter
        if f.gap:
            now = self._clock.ticks_us()  # before masking: an edge after it leaves `last` newer
            m = self._machine
            irq = m.disable_irq()  # age() must not interleave with the edge handler
            try:
                f.age(now)
            finally:
                m.enable_irq(irq)
        return f.count

    def _start_counting(self):
        m = self._machine
        gap_ms = self.cfg["pulse_min_gap_ms"]
        pin = m.Pin(self.cfg["pulse_pin"], m.Pin.IN, m.Pin.PULL_UP)
        self._pulse_pin = pin
        if gap_ms == 0 and hasattr(m, "Counter"):  # hardware PCNT: no CPU per pulse
            self._counter = m.Counter(_PULSE_UNIT, pin, edge=m.Counter.FALLING, filter_ns=_FILTER_NS)
            return
        # a reed contact (bounce lasts ms, beyond the PCNT filter) or no Counter: count in
        # a hard interrupt; with a gap, both edges feed the quiet-time filter
        self._filter = QuietFilter(gap_ms * 1000, self._clock.ticks_diff)
        trigger = m.Pin.IRQ_FALLING | m.Pin.IRQ_RISING if gap_ms else m.Pin.IRQ_FALLING
        pin.irq(handler=self._on_edge, trigger=trigger, hard=True)

    def _on_edge(self, pin):
        self._filter.edge(self._clock.ticks_us(), pin.value())

    # --- valve relay and feedback --------------------------------------------------------
    def set_valve(self, closed):
        """Drive the relay: energised = valve closed (a normally-open valve fails open)."""
        level = 1 if bool(closed) == self.cfg["relay_active_high"] else 0
        if self._relay is None:
            m = self._machine
            self._relay = m.Pin(self.cfg["relay_pin"], m.Pin.OUT, value=level)
        else:
            self._relay.value(level)

    def valve_feedback(self):
        """True (closed) / False (open) from the position switch; None when none is fitted."""
        n = self.cfg["valve_feedback_pin"]
        if n is None:
            return None
        if self._feedback is None:
            m = self._machine
            self._feedback = m.Pin(n, m.Pin.IN, m.Pin.PULL_UP)
        return self._feedback.value() == self.cfg["valve_feedback_closed_level"]

    # --- watchdog, reset, health ------------------------------------------------------
    def watchdog_start(self, ms):
        if ms:
            self._wdt = self._machine.WDT(timeout=ms)

    def watchdog_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def watchdog_hold(self, ms):
        """Maintenance (someone interrupted the firmware at the REPL): a timer keeps the
        watchdog fed for ms, then stops, and the watchdog resets the board back to work."""
        wdt = self._wdt
        if wdt is None:
            return
        m = self._machine
        deadline = self.ticks_add(self.ticks_ms(), ms)

        def feed(t):
            if self.ticks_diff(deadline, self.ticks_ms()) > 0:
                wdt.feed()
        self._wdt_timer = m.Timer(0)
        self._wdt_timer.init(period=1000, mode=m.Timer.PERIODIC, callback=feed)

    def reset_cause(self):
        m = self._machine
        try:
            cause = m.reset_cause()
        except Exception:
            return "unknown"
        for i in range(len(_RESETS)):
            if getattr(m, _RESET_NAMES[i], None) == cause:
                return _RESETS[i]
        return "unknown"

    def rssi(self):
        try:
            v = int(self._wlan.status("rssi")) if self.wifi_connected() else None
        except Exception:
            return None
        return v if v is not None and -127 <= v <= 0 else None

    def heap_free(self):
        try:
            return gc.mem_free()
        except AttributeError:  # CPython (the emulator)
            return 0

    def reset(self):
        self._machine.reset()

    # --- identity, files ------------------------------------------------------------------
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

    def open_ring(self, name, size):
        """(file opened for update, fresh) of exactly size bytes; a missing file, or one of
        another size (ring_size changed), is created anew, zero-filled."""
        path = self._path(name)
        try:
            if os.stat(path)[6] == size:
                self._ring = open(path, "r+b")
                return self._ring, False
        except OSError:
            pass
        self.close()
        zeros = bytes(512)
        with open(path, "wb") as f:
            left = size
            while left > 0:
                f.write(zeros[:min(left, 512)])
                left -= 512
        self._ring = open(path, "r+b")
        return self._ring, True

    def close(self):
        """Release the ring file (the emulator powers a meter off; a chip just loses power)."""
        f, self._ring = self._ring, None
        if f is not None:
            f.close()

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
    def tls_context(self):
        """The SSLContext umqtt.simple wraps its socket with (built once), or None without
        mqtt_tls. OSError names the config key of a file that cannot be used."""
        cfg = self.cfg
        if not cfg["mqtt_tls"]:
            return None
        if self._tls is not None:
            return self._tls
        ssl = self._ssl
        if ssl is None:
            import ssl  # here only: the plain meter never needs it
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED  # mbedTLS checks nothing with CERT_NONE or CERT_OPTIONAL
        key = "mqtt_cafile"
        try:
            ctx.load_verify_locations(cafile=self._path(cfg[key]))
            if cfg["mqtt_certfile"]:
                key = "mqtt_certfile"
                ctx.load_cert_chain(self._path(cfg[key]), self._path(cfg["mqtt_keyfile"]))
        except Exception as e:  # missing file, not PEM, key not matching the certificate
            raise OSError("%s %s: %r" % (key, cfg[key], e))
        self._tls = _ServerName(ctx, cfg["mqtt_tls_hostname"])
        return self._tls

    def mqtt_connect(self, will_topic, will_msg, callback):
        """Connect with a retained QoS 1 last will and a clean session (over TLS with mqtt_tls)."""
        self.mqtt_close(False)
        cfg = self.cfg
        try:
            c = self._mqtt_factory(cfg["meter_id"], cfg["broker_host"], port=cfg["broker_port"],
                                   user=cfg["mqtt_user"], password=cfg["mqtt_password"],
                                   keepalive=cfg["mqtt_keepalive_s"], ssl=self.tls_context())
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


class _ServerName:
    """What umqtt.simple sees as its `ssl`: it calls wrap_socket(sock, server_hostname=broker_host);
    the name checked against the broker's certificate is mqtt_tls_hostname (by default the same)."""

    def __init__(self, ctx, name):
        self.ctx = ctx
        self.name = name

    def wrap_socket(self, sock, server_hostname=None):
        return self.ctx.wrap_socket(sock, server_hostname=self.name)
