"""Stand-ins for what the firmware's HAL imports: machine, network, umqtt.simple, ntptime.

One set of objects per emulated meter, injected into aquameter.hal.Board. The module
level names (registered in sys.modules by emulator/__init__.py) exist only so that
`import machine` etc. succeed on CPython; the Board never uses them in the emulator.

The MQTT client has umqtt.simple's API and blocking behaviour (connect waits for
CONNACK, a QoS 1 publish waits for PUBACK, check_msg delivers at most one message to
the callback in the caller's thread) on top of paho-mqtt 2.x: one real connection and
client id per meter, its network loop on a paho thread.

TLS: the HAL hands the client what it hands umqtt.simple, an object whose
wrap_socket(sock, server_hostname=...) does the handshake with CPython's ssl (the
SSLContext the HAL built from the meter's own CA and certificate files). paho calls it
through _PahoTls, so the handshake, the certificate check and the host name check are
the firmware's, and a failed one is the OSError umqtt would raise.
"""

from __future__ import annotations

import socket
import threading
import types
from collections import deque
from typing import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

CONNECT_TIMEOUT_S = 10.0
PUBACK_TIMEOUT_S = 10.0
DISCONNECT_TIMEOUT_S = 5.0
IDLE_KEEPALIVE_S = 60  # real seconds; used when the firmware asks for no keepalive


class MachineReset(Exception):
    """machine.reset() was called: the emulator reboots the meter (not gracefully)."""


# --- machine --------------------------------------------------------------------------------
class _PinBase:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    _machine: "Machine"

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        self._level = 1 if pull == self.PULL_UP else 0  # an open contact reads its pull-up
        self.irq_handler = None
        self.irq_trigger = 0
        self._machine.pins[id] = self
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return self._level
        self._level = 1 if v else 0
        self._machine.pin_changed(self)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING, hard=False):
        """Register the handler; the emulator then drives this input's edges (see drive())."""
        self.irq_handler = handler
        self.irq_trigger = trigger if handler is not None else 0
        self._machine.irq_set(self)

    def drive(self, level: int) -> bool:
        """The outside world sets this input's level; True when the handler should run
        (a change in a direction the trigger asks for). The caller runs it."""
        level = 1 if level else 0
        if level == self._level:
            return False
        self._level = level
        return bool(self.irq_trigger & (self.IRQ_RISING if level else self.IRQ_FALLING))


class _CounterBase:
    RISING = 1
    FALLING = 2
    UP = 1
    DOWN = -1

    _machine: "Machine"

    def __init__(self, id, src=None, *, edge=RISING, direction=UP, filter_ns=0):
        self.id = id
        self.src = src
        self.edge = edge
        self.filter_ns = filter_ns
        self._machine.counters[id] = self

    def value(self, v=None):
        if v is not None:
            raise NotImplementedError("the firmware never presets the counter")
        return self._machine.read_counter()


class Machine:
    """The `machine` module of one meter.

    reset_cause() is what MicroPython's ESP32 port reports (ports/esp32/modmachine.c):
    PWRON_RESET after power-on (and brownout), HARD_RESET after machine.reset() or a
    panic (ESP_RST_SW / ESP_RST_PANIC), WDT_RESET after a watchdog, SOFT_RESET only after
    a soft reboot of the interpreter (Ctrl-D at the REPL), which the emulator never does.
    """

    PWRON_RESET = 1
    HARD_RESET = 2
    WDT_RESET = 3
    DEEPSLEEP_RESET = 4
    SOFT_RESET = 5

    def __init__(self, read_counter: Callable[[], int], pin_changed: Callable[["_PinBase"], None], uid: bytes,
                 reset_cause: int = PWRON_RESET, irq_set: Callable[["_PinBase"], None] | None = None):
        self.read_counter = read_counter
        self.pin_changed = pin_changed
        self.irq_set = irq_set or (lambda pin: None)
        self._uid = uid
        self._reset_cause = reset_cause
        self.pins: dict[int, _PinBase] = {}
        self.counters: dict[int, _CounterBase] = {}
        self.Pin = type("Pin", (_PinBase,), {"_machine": self})
        self.Counter = type("Counter", (_CounterBase,), {"_machine": self})

    def unique_id(self) -> bytes:
        return self._uid

    def disable_irq(self) -> int:
        # edges are delivered between steps, under the meter's step lock: nothing to mask
        return 0

    def enable_irq(self, state: int) -> None:
        pass

    def reset_cause(self) -> int:
        return self._reset_cause

    def reset(self):
        raise MachineReset()


# --- network ----------------------------------------------------------------------------------
class Network:
    """The `network` module of one meter: a station interface that is up unless the
    emulator cut this meter's network."""

    STA_IF = 0
    AP_IF = 1

    def __init__(self, link_up: Callable[[], bool]):
        self._link_up = link_up
        self._wlan = None

    def WLAN(self, interface=STA_IF):
        if self._wlan is None:
            self._wlan = _WLAN(self._link_up)
        return self._wlan


class _WLAN:
    def __init__(self, link_up):
        self._link_up = link_up
        self._active = False
        self._joined = False

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            self._joined = False

    def connect(self, ssid=None, key=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        self._joined = self._link_up()

    def disconnect(self):
        self._joined = False

    def isconnected(self):
        if self._joined and not self._link_up():
            self._joined = False
        return self._joined

    def status(self, *args):
        if args and args[0] == "rssi":
            return -61  # dBm
        return 1010 if self.isconnected() else 1001


# --- ntptime -------------------------------------------------------------------------------------
class Ntp:
    """The `ntptime` module of one meter: settime() sets the meter's RTC to what an NTP
    server answers, the simulated Unix time. With no network, or when the emulator makes
    NTP fail, it raises OSError after ntptime's socket timeout (1 s, simulated)."""

    def __init__(self, set_rtc: Callable[[], None], reachable: Callable[[], bool],
                 sleep_ms: Callable[[int], None] = lambda ms: None):
        self.host = "pool.ntp.org"
        self.timeout = 1
        self._set_rtc = set_rtc
        self._reachable = reachable
        self._sleep_ms = sleep_ms

    def settime(self):
        if not self._reachable():
            self._sleep_ms(self.timeout * 1000)
            raise OSError(110, "ETIMEDOUT")
        self._set_rtc()


# --- umqtt.simple -------------------------------------------------------------------------------
class MQTTException(Exception):
    pass


class _Sock:
    """umqtt exposes .sock; closing it is how the HAL drops a link without DISCONNECT."""

    def __init__(self, client: "MQTTClient"):
        self._client = client

    def close(self):
        self._client.cut()


class MQTTHooks:
    """What the emulator wants to know from, and inject into, a meter's MQTT client."""

    def __init__(self, wake=None, on_publish=None, link_up=None, duplicate=None, on_duplicate=None, net=None):
        self.wake = wake or (lambda: None)  # an inbound message or a lost link: run the meter now
        self.on_publish = on_publish or (lambda topic, payload: None)
        self.link_up = link_up or (lambda: True)
        self.duplicate = duplicate or (lambda: False)  # publish this message twice?
        self.on_duplicate = on_duplicate or (lambda topic, payload: None)  # the copy went out
        self.net = net  # a netloop.NetLoop serving this client's socket; None: paho's own thread


class MQTTClient:
    """umqtt.simple.MQTTClient on paho-mqtt (MQTT 3.1.1, one real connection)."""

    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None,
                 hooks: MQTTHooks | None = None):
        self.ssl = ssl  # the HAL's TLS object (umqtt's `ssl`), or None
        self.client_id = client_id.decode() if isinstance(client_id, bytes) else client_id
        self.server = server
        self.port = port or 1883
        self.user = user
        self.pswd = password
        self.keepalive = keepalive
        self.cb = None
        self.lw = None
        self.hooks = hooks or MQTTHooks()
        self.sock = None
        self._paho: paho.Client | None = None
        self._cond = threading.Condition()
        self._connected = False
        self._connack = None
        self._acked: set[int] = set()
        self._inbox: deque = deque()

    # umqtt API -------------------------------------------------------------------------
    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.lw = (topic, msg, retain, qos)

    def connect(self, clean_session=True):
        if not self.hooks.link_up():
            raise OSError(113, "EHOSTUNREACH")
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=clean_session,
                        protocol=paho.MQTTv311, reconnect_on_failure=False)
        if self.user:
            c.username_pw_set(self.user, self.pswd or "")
        if self.lw:
            topic, msg, retain, qos = self.lw
            c.will_set(_s(topic), _b(msg), qos, retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_ack
        c.on_subscribe = self._on_ack
        if self.ssl:
            c.tls_set_context(_PahoTls(self.ssl))
        self._paho = c
        net = self.hooks.net
        if net is not None:
            net.attach(c)
        try:
            c.connect(self.server, self.port, keepalive=self.keepalive or IDLE_KEEPALIVE_S)
        except (OSError, ValueError) as e:
            self._paho = None
            if net is not None:
                net.forget(c)
            raise OSError("connect to %s:%s failed: %s" % (self.server, self.port, e)) from None
        if net is None:
            c.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None, CONNECT_TIMEOUT_S)
            rc = self._connack
        if rc != 0:
            self._stop(graceful=False)
            if rc is None:
                raise OSError(110, "ETIMEDOUT waiting for CONNACK")
            raise MQTTException(int(rc.value) if hasattr(rc, "value") else rc)
        self.sock = _Sock(self)
        return 0

    def disconnect(self):
        self._stop(graceful=True)

    def ping(self):
        self._need()  # paho keeps the link alive on real time

    def publish(self, topic, msg, retain=False, qos=0):
        self._need()
        t, m = _s(topic), _b(msg)
        info = self._paho.publish(t, m, qos, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise OSError("publish failed: %s" % paho.error_string(info.rc))
        if qos:
            self._wait_ack(info.mid)
        self.hooks.on_publish(t, m)
        if self.hooks.duplicate():  # a duplicate delivery, as after a lost PUBACK
            dup = self._paho.publish(t, m, qos, retain)
            if dup.rc == paho.MQTT_ERR_SUCCESS:
                if qos:
                    self._wait_ack(dup.mid)
                self.hooks.on_duplicate(t, m)

    def subscribe(self, topic, qos=0):
        self._need()
        rc, mid = self._paho.subscribe(_s(topic), qos)
        if rc != paho.MQTT_ERR_SUCCESS:
            raise OSError("subscribe failed: %s" % paho.error_string(rc))
        self._wait_ack(mid)

    def check_msg(self):
        """Deliver one pending message to the callback; None when there is none."""
        with self._cond:
            item = self._inbox.popleft() if self._inbox else None
            alive = self._connected
        if item is None:
            if not alive:
                raise OSError(-1, "connection closed")
            return None
        self.cb(item[0], item[1])
        return 0x30

    def wait_msg(self):
        return self.check_msg()

    # fault injection --------------------------------------------------------------------
    def cut(self):
        """Drop the TCP connection without DISCONNECT: the broker publishes the last will."""
        c = self._paho
        if c is None:
            return
        s = c.socket()
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._stop(graceful=False)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def connack(self) -> str | None:
        """The broker's answer to connect() (paho's reason name: "Success", "Not authorized"
        ...); None before one came."""
        rc = self._connack
        return None if rc is None or rc == -1 else str(rc)

    # internals --------------------------------------------------------------------------
    def _need(self):
        if not self._connected or self._paho is None:
            raise OSError(-1, "not connected")

    def _wait_ack(self, mid):
        with self._cond:
            ok = self._cond.wait_for(lambda: mid in self._acked or not self._connected, PUBACK_TIMEOUT_S)
            got = mid in self._acked
            self._acked.discard(mid)
        if not got:
            raise OSError(-1 if ok else 110, "connection lost before the broker acknowledged")

    def _stop(self, graceful):
        c, self._paho = self._paho, None
        self.sock = None
        if c is None:
            return
        net = self.hooks.net
        if graceful and self._connected:
            c.disconnect()
            if net is not None:  # the loop writes the DISCONNECT, then paho closes the socket
                with self._cond:
                    self._cond.wait_for(lambda: not self._connected, DISCONNECT_TIMEOUT_S)
        if net is None:
            c.loop_stop()
        else:
            net.forget(c)
        if not graceful:
            try:
                s = c.socket()
                if s is not None:
                    s.close()
            except OSError:
                pass
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    # paho callbacks (paho's thread): keep them trivial, never raise
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self._connack = reason_code
            self._connected = not reason_code.is_failure
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self._connected = False
            if self._connack is None:
                self._connack = reason_code if reason_code.is_failure else -1
            self._cond.notify_all()
        self.hooks.wake()

    def _on_message(self, client, userdata, message):
        with self._cond:
            self._inbox.append((message.topic.encode(), bytes(message.payload)))
        self.hooks.wake()

    def _on_ack(self, client, userdata, mid, *rest):
        with self._cond:
            self._acked.add(mid)
            self._cond.notify_all()


class _PahoTls:
    """paho's TLS context, made of the firmware's: paho calls wrap_socket(sock,
    server_hostname=host, do_handshake_on_connect=False) and then do_handshake(); umqtt's
    `ssl` object does the handshake in wrap_socket (a blocking socket, as on the board)
    and checks the certificate and the name. A handshake that fails closes the socket."""

    check_hostname = True  # the firmware's context checked the name; paho must not check another

    def __init__(self, fw_ssl):
        self._fw = fw_ssl

    def wrap_socket(self, sock, server_hostname=None, do_handshake_on_connect=True):
        try:
            return self._fw.wrap_socket(sock, server_hostname=server_hostname)
        except BaseException:
            sock.close()
            raise


def _s(x) -> str:
    return x.decode() if isinstance(x, (bytes, bytearray)) else x


def _b(x) -> bytes:
    return x.encode() if isinstance(x, str) else bytes(x)


def install_modules() -> None:
    """Register import-only stand-ins for machine, network, umqtt.simple (if absent)."""
    import sys

    if "machine" not in sys.modules:
        sys.modules["machine"] = Machine(lambda: 0, lambda pin: None, b"\0" * 6)  # type: ignore[assignment]
    if "network" not in sys.modules:
        sys.modules["network"] = Network(lambda: False)  # type: ignore[assignment]
    if "umqtt.simple" not in sys.modules:
        pkg = types.ModuleType("umqtt")
        simple = types.ModuleType("umqtt.simple")
        simple.MQTTClient = MQTTClient
        simple.MQTTException = MQTTException
        pkg.simple = simple
        sys.modules["umqtt"] = pkg
        sys.modules["umqtt.simple"] = simple
