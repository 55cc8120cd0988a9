"""Mosquitto restarts under the fog: gracefully (SIGTERM: it saves its persistence file)
and killed (SIGKILL: what it held since its last save is gone).

Graceful: once mid-stream while the gateway holds an open batch, and once while the gateway
is stopped and readings queue for its persistent session. For the second, the meters are
frozen before the restart, so they cannot send anything again: every queued reading that
reaches the store came out of the broker's persistence file.

Killed: the broker is killed while the gateway is stopped and readings queue for it, with
no save since they were queued. The restarted broker has no session for the gateway (its
log says so), and the readings arrive anyway: the meters still hold them (broker PUBACK is
not persistence) and send them again. Then it is killed again mid-stream, the gateway
running: the gateway must notice the lost session and subscribe again.
"""

from __future__ import annotations

import time

import pytest

from emulator import meter_ids

from .ledger import integrity, read_store, released_unstored, tally

pytestmark = pytest.mark.integration


def saved_at(broker) -> float | None:
    p = broker.data_dir / "mosquitto.db"
    return p.stat().st_mtime_ns if p.exists() else None


def kill9(broker) -> None:
    broker.proc.kill()
    broker.proc.wait(10)
    broker.proc.stderr.close()
    broker.proc = None


def sent_since(fleet, mark: dict) -> set[tuple[str, str, int]]:
    return {(m.id, r["boot"], r["seq"]) for m in fleet.meters for r in m.sent[mark[m.id]:]}


def unstored(db, ids, keys) -> set:
    stored = read_store(db, ids)
    return {k for k in keys if (k[1], k[2]) not in stored[k[0]].keys}


def test_broker_graceful_restart_mid_stream_and_with_a_queue(broker, gateway_factory, make_fleet, fault_table):
    ids = meter_ids(12, "bg")
    gw = gateway_factory(meters=ids, batch_max_delay_ms=500).start()
    db = gw.db_path
    fleet = make_fleet(ids, speed=300.0, seed=31).start()
    fleet.wait_until(fleet.clock.start_epoch + 5 * 60, timeout=20)

    # 1. mid-stream, the gateway behind: it holds an open batch it has not acknowledged
    h = gw.wait_for(lambda: (lambda c, x: x if c == 200 and x["ingest"]["accepted"] > 0
                             and x["ingest"]["uncommitted"] >= 10 else None)(*gw.health()),
                    "an open batch at the gateway", timeout=20)
    before = saved_at(broker)
    broker.restart()  # SIGTERM, then the same port and data dir
    back = {m.id: len(m.sent) for m in fleet.meters}
    assert saved_at(broker) is not None and saved_at(broker) != before, "mosquitto did not save on SIGTERM"
    gw.wait_for(lambda: gw.log().count("session resumed") >= 1 and gw.health()[0] == 200,
                "the gateway back on the restarted broker, its session resumed", timeout=20)
    # a meter sends again only once the gateway has answered its new connection's birth
    fleet.wait_for(lambda: all(len(m.sent) > back[m.id] for m in fleet.meters), 20, "every meter sending again")
    notes = [f"restart 1: mid-stream, {h['ingest']['uncommitted']} messages uncommitted at the gateway"]

    # 2. the gateway away, readings queue for it; frozen meters, a restart, then the gateway
    gw.stop()
    mark = {m.id: len(m.sent) for m in fleet.meters}
    fleet.wait_until(fleet.clock.now() + 3 * 60, timeout=10)
    fleet.scheduler.pause()  # from now on no meter sends anything
    queued = sent_since(fleet, mark)
    assert len(queued) >= 12 * 2, "no readings queued for the stopped gateway"
    assert unstored(db, ids, queued) == queued
    before = saved_at(broker)
    broker.restart()
    assert saved_at(broker) != before, "mosquitto did not save on SIGTERM"
    gw.start()
    deadline = time.monotonic() + 20
    while missing := unstored(db, ids, queued):  # only the broker's saved queue can deliver them
        assert time.monotonic() < deadline, f"{len(missing)} of {len(queued)} queued readings never came out of " \
                                            "the restarted broker"
        time.sleep(0.05)
    notes.append(f"restart 2: {len(queued)} readings queued for the stopped gateway, delivered from the "
                 "broker's persistence (meters frozen)")
    fleet.resume()
    fleet.wait_until(fleet.clock.now() + 3 * 60, timeout=10)
    fleet.quiesce(timeout=30, freeze=True)
    t = fault_table(tally("Mosquitto graceful restart (x2)", fleet, db))
    t.notes.extend(notes)
    assert fleet.errors == []
    assert t.ok, t
    assert released_unstored(fleet, db) == {}
    assert integrity(db) == "ok"
    log = gw.log()
    assert log.count("session resumed") >= 2 and "kept no session" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_broker_sigkill_meters_send_again_what_it_lost(broker, gateway_factory, make_fleet, fault_table):
    # no autosave in this test: what the broker holds after its restart below is lost at the kill
    broker.config.extra.append("autosave_interval 3600")
    broker.restart()
    saved = saved_at(broker)
    ids = meter_ids(12, "bk")
    gw = gateway_factory(meters=ids).start()
    db = gw.db_path
    fleet = make_fleet(ids, speed=300.0, seed=41).start()
    fleet.wait_until(fleet.clock.start_epoch + 5 * 60, timeout=20)
    gw.stop()  # its session and what queues for it are in the broker's memory only
    mark = {m.id: len(m.sent) for m in fleet.meters}
    fleet.wait_until(fleet.clock.now() + 3 * 60, timeout=10)
    queued = sent_since(fleet, mark)
    assert len(queued) >= 12 * 2, "no readings queued for the stopped gateway"
    assert saved_at(broker) == saved, "the broker saved its state: the kill would lose nothing"
    kill9(broker)
    lost = unstored(db, ids, queued)
    assert lost == queued
    broker.start()
    seen = len(gw.log())
    gw.start()
    gw.wait_for(lambda: "new session" in gw.log()[seen:], "the gateway's connect to the restarted broker", timeout=20)
    # again, mid-stream this time: the gateway running, an open batch in its writer
    h = gw.wait_for(lambda: (lambda c, x: x if c == 200 and x["ingest"]["accepted"] > 0
                             and x["ingest"]["uncommitted"] >= 5 else None)(*gw.health()),
                    "an open batch at the gateway", timeout=20)
    kill9(broker)
    broker.start()
    # it must subscribe again on the session-less broker, or nothing more would arrive
    gw.wait_for(lambda: "kept no session" in gw.log()[seen:] and gw.health()[0] == 200,
                "the gateway back on the broker that lost its session", timeout=20)
    fleet.wait_until(fleet.clock.now() + 3 * 60, timeout=10)
    fleet.quiesce(timeout=30, freeze=True)
    t = fault_table(tally("Mosquitto SIGKILL (x2: queue lost, mid-stream), meters resend", fleet, db))
    t.notes.append(f"kill 1: {len(lost)} readings the broker had queued for the stopped gateway were lost with it; "
                   "the meters sent them again")
    t.notes.append(f"kill 2: mid-stream, {h['ingest']['uncommitted']} messages uncommitted at the gateway")
    assert fleet.errors == []
    assert t.ok, t
    assert unstored(db, ids, queued) == set()
    assert t.duplicated > 0  # the meters' second sending
    assert released_unstored(fleet, db) == {}
    assert integrity(db) == "ok"
    assert "Traceback" not in gw.log()
