"""The single writer: batching, PUBACK only after commit, persistence acks, the command
ledger, and surviving bad input and a full disk. Unit level: a real SQLite file, fakes
for the two MQTT connections (the integration tests use the real broker)."""

from __future__ import annotations

import json
import logging
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
from aquafog.store.schema import commands, ingest_counters, meter_alarms, meter_health, meters, readings


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
        self.qos1 = 0
        self.writer.start()

    def send(self, *msgs, qos=1):
        """One receiver hand-over; a message is (topic, payload) or (topic, payload, qos)."""
        batch = []
        for topic, payload, *q in msgs:
            self.mid += 1
            mq = q[0] if q else qos
            self.qos1 += mq > 0
            batch.append((1, self.mid, mq, topic, payload, int(time.time() * 1000)))
        self.events.put(("msgs", batch))
        return self.mid

    def settle(self):
        """Wait until the writer has committed everything sent so far (a QoS 0 message
        is never PUBACKed: send a QoS 1 one after it to settle on)."""
        self.pipe.wait_mids(self.qos1)
        self.writer.call(lambda conn: (None, []))  # and has finished publishing what that commit sent

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
        err = h.writer.stats.store_error
        # what went wrong, where, and what to do
        assert "database or disk is full" in err and str(tmp_path / "gw.db") in err and "free space" in err, err
        assert h.pipe.acks == [] and h.db(text("select count(*) from readings")) == [(0,)]
        assert h.writer.stats.uncommitted == 2000 and h.writer.stats.uncommitted_since_ms is not None

        def space(conn):
            conn.exec_driver_sql("pragma max_page_count = 1073741823")
            return None, []
        h.writer.call(space)
        h.settle()
        assert h.db(text("select count(*), max(ml) from readings")) == [(2000, 1999)]
        assert h.writer.stats.store_error is None
        assert h.writer.stats.uncommitted == 0 and h.writer.stats.uncommitted_since_ms is None
    finally:
        h.stop()


# ---------------------------------------------------------------- commands

def birth(valve="open", boot="aaaaaaaa", conn=None):
    d = {"v": 1, "online": True, "boot": boot, "fw": "0.1.0", "valve": valve}
    if conn is not None:
        d["conn"] = conn
    return json.dumps(d).encode()


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


def test_the_answer_to_a_birth_echoes_its_conn_and_reading_acks_carry_none(tmp_path):
    # the meter syncs only on the answer to its current connection's birth (docs/mqtt-api.md "Availability")
    h = Harness(tmp_path, ack_interval_ms=0)
    try:
        acks = lambda: [p for t, p in h.pub.sent if t == "aquafog/m1/cmnd/ack"]  # noqa: E731
        h.send(("aquafog/m1/status", birth(conn=41)))
        h.settle()
        h.pub.wait_for(lambda t, p: len(acks()) == 1)
        assert acks()[0] == b'{"v":1,"boot":null,"seq":null,"pulses":0,"litres":0.000,"conn":41}'
        h.send(("aquafog/m1/tele/reading", reading(seq=0, ml=1234)))
        h.settle()
        h.pub.wait_for(lambda t, p: len(acks()) == 2)
        assert "conn" not in json.loads(acks()[1])  # a reading's ack answers no birth
        # a reconnect's birth in the same batch as a reading: the answer names both
        h.send(("aquafog/m1/tele/reading", reading(seq=1, ml=2000)), ("aquafog/m1/status", birth(conn=42)))
        h.settle()
        h.pub.wait_for(lambda t, p: len(acks()) == 3)
        assert json.loads(acks()[2]) == {"v": 1, "boot": "aaaaaaaa", "seq": 1, "pulses": 2000, "litres": 2.0,
                                         "conn": 42}
        # firmware older than conn: its birth is answered as before, without one
        h.send(("aquafog/m1/status", birth()))
        h.settle()
        h.pub.wait_for(lambda t, p: len(acks()) == 4)
        assert acks()[3] == b'{"v":1,"boot":"aaaaaaaa","seq":1,"pulses":2000,"litres":2.000}'
    finally:
        h.stop()


# ---------------------------------------------------------------- health

def health(alarms=(), uptime_s=100, boot="aaaaaaaa", **over):
    return json.dumps({"v": 1, "boot": boot, "fw": "0.2.0", "uptime_s": uptime_s, "reset": "power_on",
                       "rssi": -60, "heap_free": 90000, "dropped": 0, "buffer": 0, "clock": "ntp",
                       "alarms": list(alarms), **over}).encode()


def alarm_rows(h):
    return sorted((r.alarm, r.meter) for r in h.db(select(meter_alarms)))


def alarm_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "aquafog.health" and r.levelno == logging.WARNING]


def test_the_latest_health_is_stored_replaced_and_alarm_changes_are_logged(h, caplog):
    caplog.set_level(logging.INFO)
    h.send(("aquafog/m1/tele/health", health(["leak"], uptime_s=100, rssi=None), 0),
           ("aquafog/m1/tele/reading", reading(seq=0)))
    h.settle()
    [row] = h.db(select(meter_health))
    assert (row.uptime_s, row.rssi, row.alarms, row.clock) == (100, None, "leak", "ntp")
    assert alarm_rows(h) == [("leak", "m1")]
    assert alarm_warnings(caplog) == ["meter m1 alarms: leak (raised leak)"]
    assert h.pipe.acks[-1][1] == [2]  # the QoS 0 health needs no PUBACK; the reading got its own

    h.send(("aquafog/m1/tele/health", health(["burst", "leak"], uptime_s=200), 0),  # two in one batch:
           ("aquafog/m1/tele/health", health(["burst"], uptime_s=300, dropped=7), 0),  # the last one counts
           ("aquafog/m2/tele/health", health(), 0),
           ("aquafog/m1/tele/reading", reading(seq=1)))
    h.settle()
    rows = {r.meter_pk: r for r in h.db(select(meter_health))}
    assert len(rows) == 2 and (rows[1].uptime_s, rows[1].dropped, rows[1].alarms) == (300, 7, "burst")
    assert rows[2].alarms == "" and rows[2].received_ms >= rows[1].received_ms
    assert alarm_rows(h) == [("burst", "m1")]
    assert alarm_warnings(caplog)[1:] == ["meter m1 alarms: burst (raised burst; cleared leak)"]  # m2: no change

    h.send(("aquafog/m1/tele/health", health(["burst"], uptime_s=400), 0), ("aquafog/m1/tele/reading", reading(seq=2)))
    h.settle()
    assert h.db(select(meter_health.c.uptime_s).where(meter_health.c.meter_pk == 1)) == [(400,)]
    assert len(alarm_warnings(caplog)) == 2  # same alarms: replaced, not logged again


def test_stored_alarms_are_known_after_a_restart(tmp_path, caplog):
    h = Harness(tmp_path)
    h.send(("aquafog/m1/tele/health", health(["valve_fault"]), 0), ("aquafog/m1/tele/reading", reading(seq=0)))
    h.settle()
    h.stop()
    caplog.clear()
    h = Harness(tmp_path)
    try:
        h.send(("aquafog/m1/tele/health", health(["valve_fault"]), 0), ("aquafog/m1/tele/reading", reading(seq=1)))
        h.send(("aquafog/m1/tele/health", health([]), 0), ("aquafog/m1/tele/reading", reading(seq=2)))
        h.settle()
        assert alarm_warnings(caplog) == ["meter m1 alarms: none (cleared valve_fault)"]
        assert alarm_rows(h) == []
    finally:
        h.stop()


def test_bad_health_and_health_of_unknown_meters_are_rejected_and_counted(h):
    h.send(("aquafog/m1/tele/health", health(rssi=12), 0), ("aquafog/zz9/tele/health", health(), 0),
           ("aquafog/m1/tele/health", health(["flood"]), 0), ("aquafog/m1/tele/reading", reading(seq=0)))
    h.settle()
    counts = {(r.reason, r.field): r.count for r in h.db(select(ingest_counters))}
    assert counts == {("accepted", ""): 1, ("out_of_range", "rssi"): 1, ("unknown_meter", ""): 1,
                      ("invalid_value", "alarms"): 1}
    assert h.db(select(meter_health)) == []


# ---------------------------------------------------------------- valve changes a meter makes on its own

LOCAL = "local-bbbbbbbb-1"


def local(cid=LOCAL, state="closed", ok=True, cause="burst", error=None):
    d = {"v": 1, "id": cid, "state": state, "ok": ok, "cause": cause}
    if error:
        d["error"] = error
    return json.dumps(d).encode()


def valve_commands_sent(h):
    return [json.loads(p) for t, p in h.pub.sent if t == "aquafog/m1/cmnd/valve"]


def desired(h, meter="m1"):
    return h.db(select(meters.c.valve_desired).where(meters.c.meter == meter))[0][0]


def opened_by_operator(h):
    """m1 online with its valve open because an operator said so (desired: open)."""
    h.send(("aquafog/m1/status", birth(valve="open")))
    h.settle()
    row, _ = h.writer.submit_valve("m1", "open", "unblock", None)
    h.pub.wait_for(lambda t, p: t == "aquafog/m1/cmnd/valve")
    h.send(("aquafog/m1/stat/valve", result(row["id"], state="open")))
    h.settle()
    assert status_of(h, row["id"]) == ("applied", None) and desired(h) == "open"
    return len(valve_commands_sent(h))


def test_a_meter_closing_its_valve_on_a_burst_is_recorded_and_the_next_birth_does_not_reopen_it(h):
    sent_before = opened_by_operator(h)
    # the meter closed on a burst, rebooted; it reports the change, then its birth, in one batch
    h.send(("aquafog/m1/stat/valve", local()), ("aquafog/m1/status", birth(valve="closed", boot="bbbbbbbb")))
    h.settle()
    c = h.db(select(commands).where(commands.c.id == LOCAL))[0]
    assert (c.origin, c.state, c.status, c.error) == ("meter", "closed", "applied", None)
    assert c.reason == "burst: the meter closed its valve on its own"
    assert c.created_ms == c.sent_ms == c.done_ms
    assert desired(h) == "closed"
    assert len(valve_commands_sent(h)) == sent_before  # nothing re-delivered: no re-opening
    assert h.db(select(ingest_counters.c.reason)) == []

    # the same report again (the meter did not get the PUBACK): nothing new, no error
    h.send(("aquafog/m1/stat/valve", local()))
    h.settle()
    assert len(h.db(select(commands))) == 2 and h.db(select(ingest_counters.c.reason)) == []

    # the operator re-opens it normally; a late repeat of the meter's report does not undo that
    row, _ = h.writer.submit_valve("m1", "open", "pipe repaired", None)
    [cmd] = valve_commands_sent(h)[sent_before:]
    assert cmd == {"v": 1, "id": row["id"], "state": "open"}
    h.send(("aquafog/m1/stat/valve", result(row["id"], state="open")), ("aquafog/m1/stat/valve", local()))
    h.settle()
    assert status_of(h, row["id"]) == ("applied", None) and desired(h) == "open"


def test_birth_before_the_meters_own_change_in_one_batch_still_does_not_reopen_the_valve(h):
    sent_before = opened_by_operator(h)
    # the reverse of what a meter sends: the birth re-delivers "open" (a reconcile command),
    # then the change in the same batch supersedes it before it is published
    h.send(("aquafog/m1/status", birth(valve="closed", boot="bbbbbbbb")), ("aquafog/m1/stat/valve", local()))
    h.settle()
    assert len(valve_commands_sent(h)) == sent_before
    cmds = h.db(select(commands.c.origin, commands.c.state, commands.c.status, commands.c.error)
                .order_by(commands.c.created_ms, commands.c.origin))
    assert [tuple(c)[:3] for c in cmds] == [("api", "open", "applied"), ("meter", "closed", "applied"),
                                            ("reconcile", "open", "failed")]
    assert cmds[2].error == f"superseded by the meter's own change {LOCAL} (burst)"
    assert desired(h) == "closed"


def test_a_pending_operator_command_for_the_other_state_is_superseded_by_the_meters_change(h):
    queued, _ = h.writer.submit_valve("m1", "open", None, None)  # meter offline: queued
    same, _ = h.writer.submit_valve("m2", "closed", None, None)
    h.send(("aquafog/m1/stat/valve", local()), ("aquafog/m1/status", birth(valve="closed", boot="bbbbbbbb")))
    h.settle()
    assert status_of(h, queued["id"]) == ("failed", f"superseded by the meter's own change {LOCAL} (burst)")
    assert valve_commands_sent(h) == [] and desired(h) == "closed"
    assert status_of(h, same["id"])[0] == "queued"  # another meter's command is not touched


def test_a_failed_change_of_its_own_is_recorded_and_leaves_the_desired_state(h):
    opened_by_operator(h)
    h.send(("aquafog/m1/stat/valve", local(state="open", ok=False, error="valve stuck")))
    h.settle()
    c = h.db(select(commands).where(commands.c.id == LOCAL))[0]
    assert (c.origin, c.status, c.error) == ("meter", "failed", "valve stuck")
    assert c.reason == "burst: the meter could not move its valve on its own"
    assert desired(h) == "open"


def test_a_cause_on_the_result_of_a_gateway_command_is_ignored(h):
    h.send(("aquafog/m1/status", birth()))
    h.settle()
    row, _ = h.writer.submit_valve("m1", "closed", None, None)
    h.pub.wait_for(lambda t, p: t == "aquafog/m1/cmnd/valve")
    h.send(("aquafog/m1/stat/valve", local(cid=row["id"])))
    h.settle()
    assert status_of(h, row["id"]) == ("applied", None)
    assert [(c.id, c.origin) for c in h.db(select(commands.c.id, commands.c.origin))] == [(row["id"], "api")]


def test_a_local_id_reused_for_another_state_or_meter_or_a_foreign_id_is_rejected(h):
    other, _ = h.writer.submit_valve("m2", "closed", None, "op-7")
    h.send(("aquafog/m1/stat/valve", local()))
    h.send(("aquafog/m1/stat/valve", local(state="open")),                 # same id, other state
           ("aquafog/m2/stat/valve", local()),                             # same id, other meter
           ("aquafog/m1/stat/valve", local(cid="op-7")),                   # another meter's command
           ("aquafog/m1/stat/valve", local(cid="c-made-up")),              # not a local id, not ours
           ("aquafog/m1/stat/valve", local(cid="local-bbbbbbbb-0")))       # n counts from 1
    h.settle()
    counts = {(r.reason, r.field): r.count for r in h.db(select(ingest_counters))}
    assert counts == {("conflicting_duplicate", "id"): 3, ("bad_format", "id"): 2}
    assert [c.id for c in h.db(select(commands.c.id).order_by(commands.c.id))] == [LOCAL, "op-7"]
    assert status_of(h, other["id"])[0] == "queued" and desired(h, "m2") == "closed"
