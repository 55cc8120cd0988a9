"""The generated Mosquitto config must not drop QoS 1 readings queued for a gateway that
is busy or restarting (real Mosquitto; Mosquitto's default of 1000 does drop them)."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from aquafog.broker import LocalBroker

pytestmark = pytest.mark.integration

N = 5000


def backlog_received(broker: LocalBroker) -> int:
    """A persistent session is away while N readings are published; how many reach it?"""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw", protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(broker.host, broker.port, clean_start=False, properties=props)
    sub.loop_start()
    sub.subscribe("aquafog/+/tele/reading", qos=1)
    assert subscribed.wait(5)
    sub.disconnect()
    sub.loop_stop()

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="m1")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    for i in range(N):
        info = pub.publish("aquafog/m1/tele/reading", b"%d" % i, qos=1)
    info.wait_for_publish(30)
    pub.disconnect()
    pub.loop_stop()

    got = []
    done = threading.Event()
    idle = threading.Event()

    def on_message(_c, _u, m):
        got.append(int(m.payload))
        idle.set()
        if len(got) == N:
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw", protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.connect(broker.host, broker.port, clean_start=False, properties=props)
    sub.loop_start()
    # all N, or the flow stops: no message for a whole second means the rest was dropped
    while not done.is_set():
        idle.clear()
        if not idle.wait(1.0):
            break
    sub.disconnect()
    sub.loop_stop()
    return len(got), got


def test_generated_config_keeps_every_queued_qos1_message_in_order(tmp_path):
    with LocalBroker(tmp_path / "generated") as broker:
        n, got = backlog_received(broker)
    assert n == N and got == list(range(N))


def test_mosquittos_default_queue_limit_would_drop_them(tmp_path):
    with LocalBroker(tmp_path / "default", extra=["max_queued_messages 1000"]) as broker:
        n, _ = backlog_received(broker)
    assert n < N / 2  # which is why the gateway's broker config sets max_queued_messages 0
