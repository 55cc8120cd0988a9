"""The gateway's outgoing MQTT connection: persistence acks (QoS 0) and valve commands
(QoS 1).

Separate from the receiver's connection so that a flood of incoming readings never
delays a command, and so the core process can publish without a round trip through
the receiver. paho calls `on_publish` (broker PUBACK) in its own thread while holding
its internal lock, so the callback only hands the mid to the writer's queue.
"""

from __future__ import annotations

import logging
import queue

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..tls import ClientTls, apply_client_tls

log = logging.getLogger("aquafog.publisher")


class Publisher:
    def __init__(self, host: str, port: int, client_id: str, username: str, password: str,
                 events: "queue.Queue", tls: ClientTls | None = None):
        self.events = events
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username:
            c.username_pw_set(username, password or None)
        apply_client_tls(c, tls)
        c.reconnect_delay_set(0.2, 5)
        # 0 = no client-side window: paho rescans its whole outgoing queue on every PUBACK
        # while a window is full, which is quadratic when a batch acks thousands of meters.
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self.client = c
        self.host, self.port = host, port

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int | None:
        """Never retained. Returns the mid, or None when not connected."""
        if not self.client.is_connected():
            return None
        info = self.client.publish(topic, payload, qos=qos, retain=False)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return info.mid

    def _on_connect(self, _c, _u, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            log.error("broker refused the publisher connection: %s", reason_code)
            return
        self.events.put(("tx", "connected"))

    def _on_disconnect(self, _c, _u, _flags, reason_code, _props) -> None:
        self.events.put(("tx", "disconnected"))

    def _on_publish(self, _c, _u, mid, _reason_code, _props) -> None:
        self.events.put(("published", mid))
