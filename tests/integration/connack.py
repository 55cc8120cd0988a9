"""One MQTT connect, for tests of who a broker lets in: the CONNACK's reason."""

from __future__ import annotations

import queue

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

WAIT = 10.0


def connack(port: int, user: str | None = None, password: str | None = None, client_id: str = "",
            host: str = "127.0.0.1") -> str:
    """"Success", or why not ("Not authorized"), or "refused" when nothing listens there."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if user is not None:
        c.username_pw_set(user, password)
    got: queue.Queue = queue.Queue()
    c.on_connect = lambda c_, u, flags, rc, props: got.put(rc.getName())
    try:
        c.connect(host, port, keepalive=30)
    except ConnectionRefusedError:
        c.on_connect = None
        return "refused"
    c.loop_start()
    try:
        return got.get(timeout=WAIT)
    finally:
        c.disconnect()
        c.loop_stop()
        c.on_connect = None  # paho's socket pair is closed by refcounting, not a later GC
