"""Reference consumer for the ingest benchmark: a paho-mqtt subscriber that does nothing
with the messages (the Python client's ceiling).

    bare_subscriber.py HOST PORT CLIENT_ID TOPIC setup      # create the persistent session
    bare_subscriber.py HOST PORT CLIENT_ID TOPIC drain N    # receive N messages, print timing JSON
"""

import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main() -> None:
    host, port, cid, topic, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    n = int(sys.argv[6]) if mode == "drain" else 0
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(65535)
    done = threading.Event()
    got = [0, 0.0, 0.0]

    def on_message(_c, _u, _m):
        if got[0] == 0:
            got[1] = time.time()
        got[0] += 1
        if got[0] >= n:
            got[2] = time.time()
            done.set()

    def on_subscribe(*_a):
        if mode == "setup":
            done.set()

    def on_connect(client, *_a):
        if mode == "setup":
            client.subscribe(topic, qos=1)

    c.on_message, c.on_subscribe, c.on_connect = on_message, on_subscribe, on_connect
    c.connect(host, port, clean_start=False, properties=props)
    c.loop_start()
    if not done.wait(300):
        print(json.dumps({"error": f"received {got[0]} of {n}"}))
        sys.exit(1)
    c.disconnect()
    c.loop_stop()
    if mode == "drain":
        print(json.dumps({"n": got[0], "first": got[1], "last": got[2]}))


if __name__ == "__main__":
    main()
