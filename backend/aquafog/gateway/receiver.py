"""The gateway's MQTT receiver: its own process, so that reading from the broker and
writing to the database use two cores (CPython runs one thread at a time).

It holds a persistent MQTT 5 session (clean start off, long session expiry) with
manual acknowledgement: a QoS 1 message is PUBACKed only when the core process says
the batch holding it is committed. If the gateway dies before that, the broker still
has the message and delivers it again; the core dedupes.

Messages go to the core as lists of
    (generation, mid, qos, topic, payload, rx_ms)
where `generation` counts connections: a mid is only meaningful on the connection it
arrived on, so acknowledgements for an older generation are dropped.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..sdnotify import under_systemd
from ..tls import ClientTls, apply_client_tls

log = logging.getLogger("aquafog.receiver")

FLUSH_EVERY_S = 0.002
FLUSH_MAX = 2000


@dataclass
class ReceiverSettings:
    host: str
    port: int
    client_id: str
    username: str
    password: str
    subscriptions: list[str]
    session_expiry_s: int
    log_level: str = "INFO"
    tls: ClientTls | None = None  # the context is made in the receiver's process (it does not pickle)


class Receiver:
    def __init__(self, s: ReceiverSettings, to_core: Connection, from_core: Connection):
        self.s = s
        self.to_core = to_core
        self.from_core = from_core
        self.inbox: collections.deque = collections.deque()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.gen = 0
        self.send_lock = threading.Lock()
        self.core_gone = False
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=mqtt.MQTTv5,
                        manual_ack=True)
        if s.username:
            c.username_pw_set(s.username, s.password or None)
        apply_client_tls(c, s.tls)
        c.reconnect_delay_set(0.2, 5)
        c.max_inflight_messages_set(65535)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    def _send(self, item) -> bool:
        """Hand an item to the core; False once the core is gone (its pipe broke)."""
        with self.send_lock:
            if self.core_gone:
                return False
            try:
                self.to_core.send(item)
                return True
            except OSError:  # BrokenPipeError: the core died (kill -9, OOM) before us
                self._core_lost()
                return False

    def _core_lost(self) -> None:
        """The core process is gone: stop without a traceback; what we hold was never acked,
        so the broker keeps it in the gateway's session for the next start."""
        if not self.core_gone:
            self.core_gone = True
            log.error("the gateway's core process is gone: disconnecting; the broker keeps every message the "
                      "gateway has not acknowledged and delivers it again when the gateway starts")
        self.stopping.set()
        self.wake.set()

    # paho thread ----------------------------------------------------------
    def _on_connect(self, client, _u, flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            log.error("broker refused the gateway's connection: %s", reason_code)
            self._send(("rx", "refused", str(reason_code)))
            return
        self.gen += 1
        if flags.session_present:
            log.info("connected to the broker at %s:%s: session resumed (what it queued for the gateway follows)",
                     self.s.host, self.s.port)
        elif self.gen > 1:
            log.warning("reconnected to the broker at %s:%s but it kept no session for the gateway: what it queued "
                        "while the link was down is gone from the broker (its persistence was off, or it was "
                        "killed before saving); meters send again whatever the gateway has not acknowledged",
                        self.s.host, self.s.port)
        else:
            log.info("connected to the broker at %s:%s: new session (the broker held nothing for the gateway)",
                     self.s.host, self.s.port)
        client.subscribe([(t, 1) for t in self.s.subscriptions])
        self._send(("rx", "connected", self.gen))

    def _on_disconnect(self, _client, _u, _flags, reason_code, _props) -> None:
        if not self.stopping.is_set():
            log.warning("lost the broker (%s); reconnecting", reason_code)
        self._send(("rx", "disconnected", str(reason_code)))

    def _on_message(self, _client, _u, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "replace")
        self.inbox.append((self.gen, msg.mid, msg.qos, topic, msg.payload, int(time.time() * 1000)))
        self.wake.set()

    # main thread: forward batches to the core ------------------------------
    def _forward(self) -> None:
        inbox, popleft = self.inbox, self.inbox.popleft
        while not self.stopping.is_set():
            self.wake.wait(0.5)
            self.wake.clear()
            time.sleep(FLUSH_EVERY_S)  # let a burst gather into one pipe message
            while inbox:
                n = min(len(inbox), FLUSH_MAX)
                if not self._send(("msgs", [popleft() for _ in range(n)])):
                    return

    # ack thread: PUBACK what the core has committed ------------------------
    def _acks(self) -> None:
        try:
            while True:
                item = self.from_core.recv()
                if item[0] == "ack":
                    _, gen, mids = item
                    if gen != self.gen:
                        continue  # those were redelivered on the new connection
                    for mid in mids:
                        self.client.ack(mid, 1)
                elif item[0] == "stop":
                    break
        except (EOFError, OSError):
            self._core_lost()  # the core is gone: stop too
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.s.session_expiry_s
        props.ReceiveMaximum = 65535
        self.client.connect_async(self.s.host, self.s.port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()
        acker = threading.Thread(target=self._acks, name="acks", daemon=True)
        acker.start()
        try:
            self._forward()
        finally:
            self.client.disconnect()
            self.client.loop_stop()


def receiver_main(settings: ReceiverSettings, to_core: Connection, from_core: Connection) -> None:
    """Entry point of the receiver process."""
    stamp = "" if under_systemd() else "%(asctime)s "  # journald stamps each line itself
    logging.basicConfig(level=settings.log_level.upper(),
                        format=f"{stamp}%(levelname)s receiver[{os.getpid()}] %(message)s")
    try:
        Receiver(settings, to_core, from_core).run()
    except KeyboardInterrupt:
        pass
