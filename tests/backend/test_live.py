"""The live event hub (gateway/live.py) and what the writer feeds it: fan-out, bounded
per-client queues that drop the oldest and say so, replay for a reconnecting client,
the client limit, and events only after the writer's commit."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest

from aquafog.config import GatewayConfig
from aquafog.gateway import live as live_mod
from aquafog.gateway.live import LiveFull, LiveHub
from aquafog.gateway.writer import Writer
from aquafog.store.engine import open_engine
from aquafog.store.registry import add_meters


def parse(frames: list[bytes]) -> list[dict]:
    """SSE frames -> [{"id", "event", "data"}]."""
    out = []
    for frame in frames:
        for block in frame.decode().split("\n\n"):
            if not block.strip():
                continue
            ev = {"id": None}
            for line in block.split("\n"):
                key, _, value = line.partition(": ")
                ev[key] = json.loads(value) if key == "data" else value
            out.append(ev)
    return out


def drain(sub, timeout=0.0) -> list[dict]:
    frames = sub.get(timeout)
    return parse(frames or [])


def test_an_event_reaches_every_viewer_of_its_meter_and_nobody_else():
    hub = LiveHub()
    a1, a2, b = hub.subscribe("a"), hub.subscribe("a"), hub.subscribe("b")
    hub.publish("a", "reading", {"seq": 1})
    hub.publish("c", "reading", {"seq": 9})  # nobody watches c: dropped at once
    for s in (a1, a2):
        [ev] = drain(s)
        assert ev["event"] == "reading" and ev["data"] == {"seq": 1} and ev["id"] == f"{hub.epoch}-1"
    assert drain(b) == []
    assert not hub.watches("c")


def test_a_waiting_client_wakes_up_when_an_event_is_published():
    hub = LiveHub()
    sub = hub.subscribe("a")
    got = []
    t = threading.Thread(target=lambda: got.append(sub.get(5.0)))
    t.start()
    t0 = time.monotonic()
    hub.publish("a", "reading", {"seq": 1})
    t.join(5)
    assert got and len(got[0]) == 1 and time.monotonic() - t0 < 1.0


def test_a_slow_client_loses_its_oldest_events_and_is_told_how_many(monkeypatch):
    hub = LiveHub()
    slow, fast = hub.subscribe("a"), hub.subscribe("a")
    n = live_mod.QUEUE_EVENTS + 10
    t0 = time.perf_counter()
    for i in range(n):
        hub.publish("a", "reading", {"seq": i})
        if i % 50 == 0:
            drain(fast)
    assert (time.perf_counter() - t0) / n < 0.001  # publishing never waits for a client
    evs = drain(slow)
    assert evs[0]["event"] == "missed" and evs[0]["data"] == {"reason": "overflow", "dropped": 10}
    assert evs[0]["id"] is None  # a notice, not an event: Last-Event-ID stays at what the client has
    assert [e["data"]["seq"] for e in evs[1:]] == list(range(10, n))  # the newest are kept
    assert hub.stats()["dropped"] == 10
    assert drain(slow) == []  # told once


def test_a_reconnecting_client_gets_what_it_missed_replayed():
    hub = LiveHub()
    sub = hub.subscribe("a")
    for i in range(5):
        hub.publish("a", "reading", {"seq": i})
    seen = drain(sub)[:2]
    sub.close()
    hub.publish("a", "reading", {"seq": 5})  # while it is away
    again = hub.subscribe("a", seen[-1]["id"])
    assert [e["data"]["seq"] for e in drain(again)] == [2, 3, 4, 5]


def test_a_reconnecting_client_is_told_to_refetch_when_events_are_gone():
    hub = LiveHub()
    sub = hub.subscribe("a")
    hub.publish("a", "reading", {"seq": 0})
    first = drain(sub)[0]["id"]
    for i in range(live_mod.RING_EVENTS + 1):
        hub.publish("a", "reading", {"seq": i + 1})
    sub.close()
    evs = drain(hub.subscribe("a", first))
    assert [e["event"] for e in evs] == ["missed"] and evs[0]["data"]["reason"] == "gap"
    # another gateway run, a meter nobody watched meanwhile, a made-up id
    assert drain(hub.subscribe("a", "0-1"))[0]["data"]["reason"] == "restart"
    assert drain(hub.subscribe("b", f"{hub.epoch}-1"))[0]["data"]["reason"] == "gap"
    assert drain(hub.subscribe("a", f"{hub.epoch}-x"))[0]["data"]["reason"] == "gap"


def test_a_meters_recent_events_outlive_its_last_viewer_for_a_while():
    now = [0.0]
    hub = LiveHub(clock=lambda: now[0])
    hub.subscribe("a").close()
    assert hub.watches("a") and not hub.viewed("a")
    now[0] = live_mod.RETAIN_S + 1
    hub.subscribe("b").close()  # pruning happens as clients come and go
    assert not hub.watches("a")


def test_clients_beyond_the_limit_are_refused_and_a_closed_one_frees_its_slot():
    hub = LiveHub(max_clients=2)
    a = hub.subscribe("a")
    hub.subscribe_ranking()
    with pytest.raises(LiveFull, match="live_max_clients"):
        hub.subscribe("b")
    a.close()
    a.close()  # idempotent
    hub.subscribe("b")
    assert hub.stats()["clients"] == 2 and hub.stats()["refused"] == 1


def test_ranking_clients_are_poked_once_per_change_burst_and_the_gateway_stop_ends_every_stream():
    hub = LiveHub()
    r, m = hub.subscribe_ranking(), hub.subscribe("a")
    for _ in range(3):
        hub.consumption_changed()
    assert r.get(0) == [] and r.changed() and not r.changed()
    calls = []
    assert hub.memo("k", lambda: calls.append(1) or 1) == hub.memo("k", lambda: calls.append(1) or 2) == 1
    hub.consumption_changed()
    assert hub.memo("k", lambda: 3) == 3 and calls == [1]
    hub.close()
    assert r.get(5.0) is None and m.get(5.0) is None
    with pytest.raises(LiveFull):
        hub.subscribe("a")


# ------------------------------------------------------------------ the writer feeds the hub

class Publisher:
    def __init__(self, events):
        self.events, self.mid, self.connected = events, 0, True

    def publish(self, topic, payload, qos=1):
        self.mid += 1
        self.events.put(("published", self.mid))
        return self.mid


@pytest.fixture
def make_rig(tmp_path):
    made = []

    def make(batch_max_delay_ms: int = 10_000):
        cfg = GatewayConfig(db_path=str(tmp_path / f"gw{len(made)}.db"), batch_max_delay_ms=batch_max_delay_ms)
        engine = open_engine(cfg.db_path)
        add_meters(engine, ["m1", "m2"])
        events: queue.Queue = queue.Queue()
        hub = LiveHub()
        w = Writer(cfg, engine, events, Publisher(events), live=hub)
        w.start()
        made.append((w, engine))
        return w, hub, events
    yield make
    for w, engine in made:
        w.stop()
        engine.dispose()


@pytest.fixture
def rig(make_rig):
    return make_rig()


def reading(seq, ml, boot="aaaaaaaa"):
    return json.dumps({"v": 1, "boot": boot, "seq": seq, "ts": int(time.time()) - 60 + seq, "pulses": ml,
                       "litres": ml / 1000, "flow": 1.5, "valve": "open"}).encode()


def next_events(sub, n, timeout=5.0) -> list[dict]:
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(drain(sub, 0.2))
    return out


def stored(w) -> int:
    from sqlalchemy import text
    with w.engine.connect() as conn:
        return conn.execute(text("select count(*) from readings")).scalar()


def msg(mid, topic, payload):
    return (1, mid, 1, topic, payload, int(time.time() * 1000))


def test_a_watched_meters_new_reading_is_announced_when_it_joins_a_batch_before_the_commit(rig):
    w, hub, events = rig  # batches wait 10 s here
    sub, other = hub.subscribe("m1"), hub.subscribe("m2")
    w.deliver(("msgs", [msg(1, "aquafog/m1/tele/reading", reading(0, 1000)),
                         msg(2, "aquafog/m2/tele/reading", reading(0, 5)),
                         msg(3, "aquafog/m3/tele/reading", reading(0, 5))]))
    [ev] = next_events(sub, 1)
    assert ev["event"] == "reading"
    d = ev["data"]
    assert (d["meter"], d["boot"], d["seq"], d["litres"], d["pulses"], d["flow_lpm"], d["valve"], d["late"],
            d["persisted"]) == ("m1", "aaaaaaaa", 0, 1.0, 1000, 1.5, "open", False, False)
    assert stored(w) == 0  # not on disk yet: the broker still holds it
    assert [e["data"]["meter"] for e in next_events(other, 1)] == ["m2"]
    # what is not clearly new is not announced on arrival: a duplicate, a backwards register,
    # bad input; the next good one is
    w.deliver(("msgs", [msg(4, "aquafog/m1/tele/reading", reading(0, 1000)),
                         msg(5, "aquafog/m1/tele/reading", reading(1, 900)),
                         msg(6, "aquafog/m1/tele/reading", b"{not json"),
                         msg(7, "aquafog/m1/tele/reading", reading(2, 2000))]))
    assert [e["data"]["seq"] for e in next_events(sub, 1)] == [2]
    assert drain(sub, 0.2) == []


def test_a_late_reading_is_announced_once_stored_and_a_duplicate_never(make_rig):
    w, hub, events = make_rig(batch_max_delay_ms=20)
    sub = hub.subscribe("m1")
    w.deliver(("msgs", [msg(1, "aquafog/m1/tele/reading", reading(0, 1000)),
                         msg(2, "aquafog/m1/tele/reading", reading(5, 3000))]))
    assert [e["data"]["seq"] for e in next_events(sub, 2)] == [0, 5]
    w.deliver(("msgs", [msg(3, "aquafog/m1/tele/reading", reading(0, 1000)),   # a duplicate
                         msg(4, "aquafog/m1/tele/reading", reading(3, 2000))]))  # late
    [ev] = next_events(sub, 1)
    assert (ev["data"]["seq"], ev["data"]["late"], ev["data"]["persisted"]) == (3, True, True)
    assert stored(w) == 3
    assert drain(sub, 0.2) == []


def test_availability_and_every_ledger_change_of_a_viewed_meter_are_announced_once_committed(make_rig):
    w, hub, events = make_rig(batch_max_delay_ms=20)
    sub = hub.subscribe("m1")
    now_ms = int(time.time() * 1000)
    birth = b'{"v":1,"online":true,"boot":"aaaaaaaa","fw":"0.2.0","valve":"open"}'
    w.deliver(("msgs", [(1, 1, 1, "aquafog/m1/status", birth, now_ms)]))
    [ev] = next_events(sub, 1)
    assert ev["event"] == "status"
    assert (ev["data"]["online"], ev["data"]["boot"], ev["data"]["fw"]) == (True, "aaaaaaaa", "0.2.0")
    row, created = w.submit_valve("m1", "closed", "test", "op-1")
    evs = next_events(sub, 2)  # queued, then sent once the broker took it
    assert [(e["event"], e["data"]["id"], e["data"]["status"]) for e in evs] == \
        [("command", "op-1", "queued"), ("command", "op-1", "sent")]
    w.submit_valve("m1", "open", None, "op-2")  # supersedes op-1
    evs = next_events(sub, 3)
    assert sorted((e["data"]["id"], e["data"]["status"]) for e in evs) == \
        [("op-1", "failed"), ("op-2", "queued"), ("op-2", "sent")]
    result = b'{"v":1,"id":"op-2","state":"open","ok":true}'
    w.deliver(("msgs", [(1, 3, 1, "aquafog/m1/stat/valve", result, now_ms)]))
    [ev] = next_events(sub, 1)
    assert (ev["data"]["id"], ev["data"]["status"]) == ("op-2", "applied")
    will = b'{"v":1,"online":false,"boot":"aaaaaaaa"}'
    w.deliver(("msgs", [(1, 4, 1, "aquafog/m1/status", b'{"v":1,"online":false,"boot":"00000000"}', now_ms),
                         (1, 5, 1, "aquafog/m1/status", will, now_ms)]))
    evs = next_events(sub, 1)  # a stale will (another boot) changes nothing and is no event
    assert [(e["event"], e["data"]["online"]) for e in evs] == [("status", False)]


def test_a_rolled_back_transaction_announces_nothing(rig):
    w, hub, events = rig
    sub = hub.subscribe("m1")

    def fails(conn):
        w.ledger.submit(conn, w._meter(conn, "m1"), "closed", None, "op-9", "api", 0)
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        w.call(fails)
    w.call(lambda conn: (None, []))
    assert drain(sub, 0.3) == [] and w.ledger.changed == []
