"""The single writer: batching, PUBACK only after commit, persistence acks, the command
ledger, and surviving bad input and a full disk. Unit level: a real SQLite file, fakes
for the two MQTT connections (the integration tests use the real broker)."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest
from sqlalchemy import select, text

from aquafog.config import GatewayConfig
from aquafog.gateway.commands import CommandConflict, UnknownMeter
from aquafog.gateway.writer import Writer
from aquafog.store.engine import open_engine
from aquafog.store.registry import add_meters
from aquafog.store.schema import commands, ingest_counters, readings


class FakePublisher:
    """Stands in for the outgoing paho connection: records, and 'PUBACKs' at once."""

    def __init__(self, events: queue.Queue):
        self.events = events
        self.sent: list[tuple[str, bytes]] = []
        self.mid = 0
        self.connected = True
        self.published = threading.Condition()

    def publish(self, topic, payload, qos=1):
        if not self.connected:
            return None
        with self.published:
            self.mid += 1
            self.sent.append((topic, payload))
            self.published.notify_all()
        self.events.put(("published", self.mid))
        return self.mid

    def wait_for(self, pred, timeout=5.0):
        with self.published:
            assert self.published.wait_for(lambda: any(pred(t, p) for t, p in self.sent), timeout), self.sent
        return [(t, p) for t, p in self.sent if pred(t, p)]


class FakeAckPipe:
    """Stands in for the pipe to the receiver; records how many readings were on disk
    at the moment each PUBACK was requested."""

    def __init__(self, engine):
        self.engine = engine
        self.acks: list[tuple[int, list[int], int]] = []
        self.cond = threading.Condition()

    def send(self, item):
        with self.engine.connect() as conn:
            stored = conn.execute(text("select count(*) from readings")).scalar()
        with self.cond:
            self.acks.append((item[1], item[2], stored))
            self.cond.notify_all()

    def wait_mids(self, n, timeout=5.0):
        with self.cond:
            assert self.cond.wait_for(lambda: sum(len(a[1]) for a in self.acks) >= n, timeout), self.acks


NOW = int(time.time())


def reading(meter="m1", boot="aaaaaaaa", seq=0, ml=0, ts=None, valve="open"):
    return json.dumps({"v": 1, "boot": boot, "seq": seq, "ts": ts or NOW - 5000 + seq // 10, "pulses": ml, "litres":
                       ml / 1000, "flow": 0.5, "valve": valve}).encode()


class Harness:
    def __init__(self, tmp_path, **cfg):
        self.cfg = GatewayConfig(db_path=str(tmp_path / "gw.db"), batch_max_delay_ms=20, **cfg)
        self.engine = open_engine(self.cfg.db_path)
        add_meters(self.engine, ["m1", "m2"])
        self.events: queue.Queue = queue.Queue()
        self.pub = FakePublisher(self.events)
        self.pipe = FakeAckPipe(self.engine)
        self.writer = Writer(self.cfg, self.engine, self.events, self.pub, self.pipe)
        self.mid = 0
        self.writer.start()

    def send(self, *msgs, qos=1):
        batch = []
        for topic, payload in msgs:
            self.mid += 1
            batch.append((1, self.mid, qos, topic, payload, int(time.time() * 1000)))
        self.events.put(("msgs", batch))
        return self.mid

    def settle(self):
        """Wait until the writer has committed everything sent so far."""
        self.pipe.wait_mids(self.mid)

    def db(self, stmt):
        with self.engine.connect() as conn:
            return conn.execute(stmt).all()

    def stop(self):
        self.writer.stop()
        self.engine.dispose()


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.stop()


def test_puback_is_requested_only_once_the_readings_are_on_disk(h):
    h.send(*[("aquafog/m1/tele/reading", reading(seq=i, ml=i * 10)) for i in range(50)])
    h.settle()
    gen, mids, stored_at_ack = h.pipe.acks[0]
    assert mids == list(range(1, 51)) and stored_at_ack == 50


def test_each_meter_gets_a_persistence_ack_naming_its_newest_stored_reading(h):
    h.send(("aquafog/m1/tele/reading", reading(seq=0, ml=0)), ("aquafog/m1/tele/reading", reading(seq=1, ml=1234)),
           ("aquafog/m2/tele/reading", reading(meter="m2", boot="bbbbbbbb", seq=7, ml=5)))
    h.settle()
    acks = dict(h.pub.wait_for(lambda t, p: t.endswith("/cmnd/ack")))
    assert acks["aquafog/m1/cmnd/ack"] == b'{"v":1,"boot":"aaaaaaaa","seq":1,"pulses":1234,"litres":1.234}'
    assert acks["aquafog/m2/cmnd/ack"] == b'{"v":1,"boot":"bbbbbbbb","seq":7,"pulses":5,"litres":0.005}'


def test_batches_respect_the_row_limit(tmp_path):
    h = Harness(tmp_path, batch_max_rows=10)
    try:
        h.send(*[("aquafog/m1/tele/reading", reading(seq=i, ml=i)) for i in range(35)])
        h.settle()
        assert [len(a[1]) for a in h.pipe.acks] == [35]  # one pipe message is taken whole...
        h.send(*[("aquafog/m1/tele/reading", reading(seq=100 + i, ml=100 + i)) for i in range(5)])
        h.send(*[("aquafog/m1/tele/reading", reading(seq=200 + i, ml=200 + i)) for i in range(5)])
        h.settle()
        assert [len(a[1]) for a in h.pipe.acks][1:] == [10]  # ...and small ones gather up to the limit
    finally:
        h.stop()


def test_bad_messages_are_counted_by_reason_and_good_ones_keep_flowing(h):
    h.send(("aquafog/m1/tele/reading", b"not json"),
           ("aquafog/m1/tele/reading", reading(seq=0, ml=10)),
           ("aquafog/zz9/tele/reading", reading(meter="zz9")),
           ("aquafog/m1/tele/reading", reading(seq=1, ml=5)),
           ("aquafog/m1/tele/reading", reading(seq=2, ml=20)))
    h.settle()
    counts = {(r.reason, r.field): r.count for r in h.db(select(ingest_counters))}
    assert counts == {("accepted", ""): 2, ("not_json", ""): 1, ("unknown_meter", ""): 1,
                      ("register_backwards", "litres"): 1}
    assert h.pipe.acks[0][1] == [1, 2, 3, 4, 5]  # rejected messages are PUBACKed too: no redelivery loop


def test_a_poisonous_message_is_rejected_alone(h, monkeypatch):
    from aquafog.gateway import accounting
    real = accounting.Batch.reading

    def explode(self, conn, st, r, rx_ms):
        if r.seq == 13:
            raise ZeroDivisionError("boom")
        return real(self, conn, st, r, rx_ms)
    monkeypatch.setattr(accounting.Batch, "reading", explode)
    h.send(*[("aquafog/m1/tele/reading", reading(seq=i, ml=i)) for i in range(20)])
    h.settle()
    assert len(h.db(select(readings.c.seq))) == 19
    counts = {r.reason: r.count for r in h.db(select(ingest_counters))}
    assert counts == {"accepted": 19, "internal_error": 1}


def test_a_full_disk_holds_the_batch_unacknowledged_and_it_lands_when_space_returns(tmp_path):
    h = Harness(tmp_path)
    try:
        with h.engine.connect() as conn:
            pages = conn.execute(text("pragma page_count")).scalar()

        def full(conn):
            conn.exec_driver_sql(f"pragma max_page_count = {pages}")
            return None, []
        h.writer.call(full)
        h.send(*[("aquafog/m1/tele/reading", reading(seq=i, ml=i)) for i in range(2000)])
        deadline = time.time() + 5
        while h.writer.stats.store_error is None and time.time() < deadline:
            time.sleep(0.01)
        assert "full" in h.writer.stats.store_error
        assert h.pipe.acks == [] and h.db(text("select count(*) from readings")) == [(0,)]

        def space(conn):
            conn.exec_driver_sql("pragma max_page_count = 1073741823")
            return None, []
        h.writer.call(space)
        h.settle()
        assert h.db(text("select count(*), max(ml) from readings")) == [(2000, 1999)]
        assert h.writer.stats.store_error is None
    finally:
        h.stop()


# ---------------------------------------------------------------- commands

def birth(valve="open", boot="aaaaaaaa"):
    return json.dumps({"v": 1, "online": True, "boot": boot, "fw": "0.1.0", "valve": valve}).encode()


def result(cid, state="closed", ok=True, error=None):
    d = {"v": 1, "id": cid, "state": state, "ok": ok}
    if error:
        d["error"] = error
    return json.dumps(d).encode()


def status_of(h, cid):
    return h.db(select(commands.c.status, commands.c.error).where(commands.c.id == cid))[0]


def test_command_to_an_offline_meter_is_queued_then_sent_on_birth_then_applied(h):
    row, created = h.writer.submit_valve("m1", "closed", "test", None)
    assert created and row["status"] == "queued"
    assert not [s for s in h.pub.sent if "cmnd/valve" in s[0]]  # offline: not published
    h.send(("aquafog/m1/status", birth()))
    h.settle()
    [(topic, payload)] = h.pub.wait_for(lambda t, p: t == "aquafog/m1/cmnd/valve")
    assert json.loads(payload) == {"v": 1, "id": row["id"], "state": "closed"}
    h.pub.wait_for(lambda t, p: t == "aquafog/m1/cmnd/ack")  # every birth is answered
    h.send(("aquafog/m1/stat/valve", result(row["id"])))
    h.settle()
    assert status_of(h, row["id"]) == ("applied", None)


def test_a_failed_result_is_recorded_with_the_meters_reason(h):
    h.send(("aquafog/m1/status", birth()))
    h.settle()
    row, _ = h.writer.submit_valve("m1", "closed", None, None)
    h.pub.wait_for(lambda t, p: t == "aquafog/m1/cmnd/valve")
    h.send(("aquafog/m1/stat/valve", result(row["id"], state="open", ok=False, error="valve stuck")))
    h.settle()
    assert status_of(h, row["id"]) == ("failed", "valve stuck")


def test_command_ids_are_idempotency_keys(h):
    a, created_a = h.writer.submit_valve("m1", "closed", None, "op-1")
    b, created_b = h.writer.submit_valve("m1", "closed", None, "op-1")
    assert created_a and not created_b and a["id"] == b["id"] == "op-1"
    with pytest.raises(CommandConflict) as exc:
        h.writer.submit_valve("m1", "open", None, "op-1")
    assert exc.value.field == "command_id"
    with pytest.raises(UnknownMeter):
        h.writer.submit_valve("nope", "open", None, None)


def test_a_newer_command_supersedes_a_pending_one(h):
    first, _ = h.writer.submit_valve("m1", "closed", None, None)
    second, _ = h.writer.submit_valve("m1", "open", None, None)
    assert status_of(h, first["id"]) == ("failed", f"superseded by command {second['id']}")
    assert status_of(h, second["id"])[0] == "queued"


def test_a_meter_back_in_the_wrong_state_gets_the_desired_state_again(h):
    h.send(("aquafog/m1/status", birth()))
    h.settle()
    row, _ = h.writer.submit_valve("m1", "closed", None, None)
    h.pub.wait_for(lambda t, p: t == "aquafog/m1/cmnd/valve")
    h.send(("aquafog/m1/stat/valve", result(row["id"])))
    h.settle()
    h.send(("aquafog/m1/status", birth(valve="open", boot="bbbbbbbb")))  # rebooted, relay fell open
    h.settle()
    cmds = h.db(select(commands.c.id, commands.c.origin, commands.c.state).order_by(commands.c.created_ms))
    assert [(c.origin, c.state) for c in cmds] == [("api", "closed"), ("reconcile", "closed")]
    h.pub.wait_for(lambda t, p: t == "aquafog/m1/cmnd/valve" and cmds[1].id.encode() in p)


def test_unanswered_commands_expire(tmp_path):
    h = Harness(tmp_path, command_ttl_s=1)
    try:
        row, _ = h.writer.submit_valve("m1", "closed", None, None)
        deadline = time.time() + 5
        while status_of(h, row["id"])[0] != "expired" and time.time() < deadline:
            time.sleep(0.05)
        assert status_of(h, row["id"])[0] == "expired"
    finally:
        h.stop()


def test_a_result_for_an_unknown_command_is_rejected(h):
    h.send(("aquafog/m1/stat/valve", result("c-doesnotexist")))
    h.settle()
    counts = {(r.reason, r.field): r.count for r in h.db(select(ingest_counters))}
    assert counts == {("unknown_command", "id"): 1}


def test_acks_are_coalesced_to_one_per_meter_per_interval_and_the_last_one_is_never_lost(tmp_path):
    h = Harness(tmp_path, ack_interval_ms=1000)
    try:
        acks = lambda: [(t, p) for t, p in h.pub.sent if t == "aquafog/m1/cmnd/ack"]  # noqa: E731
        h.send(("aquafog/m1/tele/reading", reading(seq=0, ml=0)))
        h.settle()
        h.pub.wait_for(lambda t, p: t == "aquafog/m1/cmnd/ack")
        t_first = time.monotonic()
        for i in range(1, 6):  # five more batches within the interval
            h.send(("aquafog/m1/tele/reading", reading(seq=i, ml=i)))
            h.settle()
        assert len(acks()) == 1
        h.pub.wait_for(lambda t, p: t == "aquafog/m1/cmnd/ack" and b'"seq":5' in p)
        assert time.monotonic() - t_first >= 0.99
        assert [json.loads(p)["seq"] for _, p in acks()] == [0, 5]  # one ack says it all
        h.send(("aquafog/m1/status", birth()))  # a birth is answered at once
        h.settle()
        h.pub.wait_for(lambda t, p: len(acks()) == 3)
    finally:
        h.stop()
