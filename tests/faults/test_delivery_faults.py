"""Faults in delivery: duplicated readings (the meter publishes copies, as after a lost
PUBACK) and readings reordered on their way to the gateway (a chaos relay between the
meters and the gateway). Real gateway process, real Mosquitto, the real firmware."""

from __future__ import annotations

import json
import random
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from emulator import meter_ids

from .ledger import tally

pytestmark = pytest.mark.integration

MIN = 60  # simulated seconds


def test_duplicated_deliveries_are_counted_once(gateway_factory, make_fleet, fault_table):
    """Every publish of a meter goes out twice with probability 0.3 (the copy is not in
    the meter's own record): the gateway stores each reading once and acks the copy."""
    ids = meter_ids(6, "dp")
    gw = gateway_factory(meters=ids).start()
    fleet = make_fleet(ids, speed=300.0, seed=41, duplicate_prob=0.3)
    t0 = fleet.clock.start_epoch
    fleet.start()
    fleet.wait_until(t0 + 30 * MIN, timeout=30)
    fleet.quiesce(timeout=30, freeze=True)
    copies = sum(len(m.copies) for m in fleet.meters)
    t = fault_table(tally("duplicated deliveries (p=0.3)", fleet, gw.db_path))
    assert fleet.errors == []
    assert t.ok and not t.notes, t
    # the fault happened: copies went out, and the gateway saw (and absorbed) every one of them
    assert copies >= 30 and t.duplicated >= copies, (copies, t.duplicated)
    assert gw.get("/ingest/stats")["duplicate"] >= copies
    t.notes.append(f"{copies} copies published by the meters; the rest of 'duplicated' are their resends")


class ChaosRelay:
    """Between the meters (topic root `chaos`) and the gateway (root `aquafog`): holds
    each meter's readings in a window and forwards them shuffled, some twice; forwards
    every other meter message (status, health, valve results) at once, retained as it
    came; relays the gateway's acks and commands back to the meter unchanged.

    A window goes out when it holds `window` readings, or when its oldest has waited
    `hold_s` (so a quiescing fleet's last readings get through)."""

    def __init__(self, host: str, port: int, *, window: int = 5, hold_s: float = 1.0, dup_prob: float = 0.2,
                 seed: int = 1):
        self.window, self.hold_s, self.dup_prob = window, hold_s, dup_prob
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.held: dict[str, list] = {}       # meter -> [(since, topic, payload)]
        self.forwarded: dict[str, set] = {}   # meter -> (boot, seq) forwarded at least once
        self.newest: dict[str, tuple] = {}    # meter -> highest (boot, seq) forwarded
        self.reordered = 0  # first deliveries of a reading after a later one of its meter
        self.copies = 0     # extra deliveries the relay made
        self.relayed_back = 0
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chaos-relay", protocol=mqtt.MQTTv311)
        c.on_connect = lambda cl, *_: cl.subscribe([("chaos/+/tele/#", 1), ("chaos/+/status", 1),
                                                    ("chaos/+/stat/#", 1), ("aquafog/+/cmnd/#", 1)])
        c.on_subscribe = lambda *_: self.subscribed.set()
        c.on_message = self._on_message
        c.connect(host, port)
        c.loop_start()
        self.client = c
        self._thread = threading.Thread(target=self._flusher, name="chaos-relay", daemon=True)
        self._thread.start()
        assert self.subscribed.wait(10), "chaos relay: no SUBACK"

    def _on_message(self, _c, _u, msg) -> None:
        root, meter, rest = msg.topic.split("/", 2)
        if root == "aquafog":  # the gateway's ack or command, back to the meter
            self.client.publish(f"chaos/{meter}/{rest}", msg.payload, qos=msg.qos)
            self.relayed_back += 1
            return
        if rest != "tele/reading":
            self.client.publish(f"aquafog/{meter}/{rest}", msg.payload, qos=1, retain=msg.retain)
            return
        with self.lock:
            self.held.setdefault(meter, []).append((time.monotonic(), msg.topic, msg.payload))
            if len(self.held[meter]) >= self.window:
                self._flush(meter)

    def _flush(self, meter: str) -> None:
        batch = self.held.pop(meter, [])
        out = [p for _, _, p in batch]
        out += [p for p in out if self.rng.random() < self.dup_prob]
        self.copies += len(out) - len(batch)
        self.rng.shuffle(out)
        seen = self.forwarded.setdefault(meter, set())
        for payload in out:
            r = json.loads(payload)
            key = (r["boot"], r["seq"])
            if key not in seen:
                seen.add(key)
                if meter in self.newest and self.newest[meter][0] == key[0] and key[1] < self.newest[meter][1]:
                    self.reordered += 1
            if meter not in self.newest or self.newest[meter][0] != key[0] or key[1] > self.newest[meter][1]:
                self.newest[meter] = key  # one boot per meter in this test
            self.client.publish(f"aquafog/{meter}/tele/reading", payload, qos=1)

    def _flusher(self) -> None:
        while not self._stop.wait(0.05):
            now = time.monotonic()
            with self.lock:
                for meter in [m for m, b in self.held.items() if b and now - b[0][0] >= self.hold_s]:
                    self._flush(meter)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def chaos_relay(broker):
    made = []

    def make(**kw) -> ChaosRelay:
        r = ChaosRelay(broker.host, broker.port, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def test_reordered_and_duplicated_deliveries_are_counted_once(gateway_factory, make_fleet, chaos_relay,
                                                              fault_table):
    """The gateway gets each meter's readings in shuffled windows of five, a fifth of them
    twice: a reading older than one already stored is a late arrival, stored, and the
    consumption between its neighbours is split at it, so no total changes by being late.
    The meters' ack timeout is longer than the relay holds a window (else they resend)."""
    ids = meter_ids(6, "ro")
    gw = gateway_factory(meters=ids).start()
    relay = chaos_relay(window=5, hold_s=1.0, dup_prob=0.2, seed=5)
    fleet = make_fleet(ids, speed=300.0, seed=51, config_overrides={"topic_root": "chaos", "ack_timeout_s": 900})
    t0 = fleet.clock.start_epoch
    fleet.start()
    fleet.wait_until(t0 + 30 * MIN, timeout=30)
    fleet.quiesce(timeout=40, freeze=True)
    t = fault_table(tally("reordered + duplicated (chaos relay)", fleet, gw.db_path, extra_deliveries=relay.copies))
    assert fleet.errors == []
    assert t.ok and not t.notes, t
    # the fault happened: readings reached the gateway out of order the first time it saw them
    stats = gw.get("/ingest/stats")
    assert relay.reordered >= 20 and stats["late"] == relay.reordered, (relay.reordered, stats)
    assert relay.copies >= 10 and stats["duplicate"] >= relay.copies and relay.relayed_back > 0
    assert stats["rejected_total"] == 0, stats
    t.notes.append(f"{relay.reordered} readings first reached the gateway after a later one (stored late: "
                   f"{stats['late']}); {relay.copies} copies by the relay")
