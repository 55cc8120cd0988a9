"""Alerts (gateway/alerts.py, api/alerts.py) on a real SQLite store and the real writer thread:
each kind raised once and cleared once (health alarms through ingest, offline through the
monitor's sweep, policy blocks through the enforcer), the live events after the commit, the
acknowledgement, a consumer's view, paging, bad parameters, pruning. The MQTT side is the
writer tests' fake publisher; tests/integration/test_alerts.py runs a real broker and gateway."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from aquafog.api import create_app
from aquafog.gateway import alerts as alerts_mod
from aquafog.gateway.alerts import AlertMonitor
from aquafog.store.registry import add_meters
from aquafog.store.schema import alerts, meter_alarms

from authz import authorize, fog_token
from test_policy import NEXT_MONTH, Fog
from test_writer import Harness, health


class FakeLive:
    """Records what the writer and the alerts publish (the live hub's writer-side surface)."""

    watching = False

    def __init__(self):
        self.events: list[tuple[str, str, dict]] = []

    def watches(self, meter):
        return False

    def publish(self, meter, kind, data):
        self.events.append((meter, kind, data))

    def consumption_changed(self):
        pass

    def alerts(self):
        return [(m, d["kind"], d["change"]) for m, k, d in self.events if k == "alert"]


class Services:
    def __init__(self, monitor):
        self.monitor = monitor

    def alerts(self):
        return self.monitor


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path, offline_alert_s=600)
    harness.live = harness.writer.live = FakeLive()
    harness.now = time.time()
    harness.monitor = AlertMonitor(harness.cfg, harness.engine, harness.writer, clock=lambda: harness.now)
    yield harness
    harness.stop()


def rows(h, **where):
    q = select(alerts).order_by(alerts.c.id)
    for k, v in where.items():
        q = q.where(alerts.c[k] == v)
    with h.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def client_for(h, role="admin", meters=(), username=None):
    app = create_app(h.cfg, h.engine, Services(h.monitor))
    return authorize(app.test_client(), fog_token(h.engine, role, meters, username))


def birth(boot="aaaaaaaa"):
    return json.dumps({"v": 1, "online": True, "boot": boot, "fw": "0.2.0", "valve": "open"}).encode()


def will(boot="aaaaaaaa"):
    return json.dumps({"v": 1, "online": False, "boot": boot}).encode()


# --- raised and cleared, once each --------------------------------------------------------------
@pytest.mark.parametrize("alarm", ["leak", "burst", "valve_fault"])
def test_a_health_alarm_raises_one_alert_when_it_starts_and_clears_it_when_it_stops(h, alarm):
    h.send(("aquafog/m1/tele/health", health([alarm], uptime_s=100)))
    h.settle()
    h.send(("aquafog/m1/tele/health", health([alarm], uptime_s=200)))   # still listed: nothing new
    h.send(("aquafog/m2/tele/health", health([], uptime_s=200)))
    h.settle()
    [a] = rows(h)
    assert (a["meter"], a["kind"], a["cleared_ms"], a["acked_ms"]) == ("m1", alarm, None, None)
    assert a["message"].startswith(f"meter m1 reports a {alarm.replace('_', ' ')}")
    assert "/api/v1/meters/m1/valve" in a["message"] or "technician" in a["message"]
    details = json.loads(a["details"])
    assert details == {"alarm": alarm, "alarms": [alarm], "boot": "aaaaaaaa", "fw": "0.2.0", "uptime_s": 100,
                       "received_ms": a["raised_ms"]}
    assert abs(a["raised_ms"] / 1000 - time.time()) < 10

    h.send(("aquafog/m1/tele/health", health([], uptime_s=300)))
    h.settle()
    h.send(("aquafog/m1/tele/health", health([], uptime_s=400)))       # still clear: nothing new
    h.settle()
    [a] = rows(h)
    assert a["cleared_ms"] is not None and a["cleared_ms"] >= a["raised_ms"]
    assert json.loads(a["details"])["cleared"]["why"] == "the meter's health report no longer lists it"
    assert h.live.alerts() == [("m1", alarm, "raised"), ("m1", alarm, "cleared")]

    h.send(("aquafog/m1/tele/health", health([alarm], uptime_s=500)))  # again: a new alert
    h.settle()
    assert [(r["kind"], r["cleared_ms"] is None) for r in rows(h)] == [(alarm, False), (alarm, True)]


def test_a_watched_meters_alert_changes_reach_its_live_stream_after_the_commit(h):
    from aquafog.gateway.live import LiveHub
    h.writer.live = hub = LiveHub()
    sub = hub.subscribe("m1")
    try:
        h.send(("aquafog/m1/tele/health", health(["leak"])), ("aquafog/m2/tele/health", health(["leak"])))
        h.settle()
        [a] = rows(h, meter="m1")
        h.monitor.ack(a["id"], "otto")
        frames = b"".join(sub.get(1.0) or [])
        events = [json.loads(block.split(b"data: ", 1)[1]) for block in frames.split(b"\n\n")
                  if b"event: alert" in block]
        assert [(e["meter"], e["kind"], e["change"], e["acked_by"]) for e in events] == [
            ("m1", "leak", "raised", None), ("m1", "leak", "acked", "otto")]   # m2 is not watched
        assert {k: v for k, v in events[0].items() if k != "change"} == json.loads(
            client_for(h).get("/api/v1/alerts?meter=m1").get_data())["items"][0] | {"acked_ms": None,
                                                                                 "acked_by": None}
    finally:
        sub.close()


def test_two_alarms_at_once_and_one_leaving_change_only_their_own_alerts(h):
    h.send(("aquafog/m1/tele/health", health(["leak", "burst"])))
    h.settle()
    h.send(("aquafog/m1/tele/health", health(["leak"])))
    h.settle()
    assert {(r["kind"], r["cleared_ms"] is None) for r in rows(h)} == {("leak", True), ("burst", False)}


def test_an_alert_rolled_back_with_its_batch_is_not_announced(h, monkeypatch):
    from aquafog.gateway import accounting
    real = accounting.Batch.write

    def explode(self, conn):
        real(self, conn)
        raise ZeroDivisionError("boom")
    monkeypatch.setattr(accounting.Batch, "write", explode)
    h.send(("aquafog/m1/tele/health", health(["leak"])))
    h.settle()
    assert rows(h) == [] and h.live.alerts() == []


def test_one_active_alert_per_meter_and_kind_is_enforced_by_the_store(h):
    values = {"meter": "m1", "kind": "leak", "message": "x", "raised_ms": 1, "details": "{}"}
    with h.engine.begin() as conn:
        conn.execute(insert(alerts).values(**values, cleared_ms=2))
        conn.execute(insert(alerts).values(**values))
    with pytest.raises(IntegrityError):
        with h.engine.begin() as conn:
            conn.execute(insert(alerts).values(**values))


def test_a_meter_offline_longer_than_offline_alert_s_raises_offline_once_and_coming_back_clears_it(h):
    h.send(("aquafog/m1/status", birth()), ("aquafog/m2/status", birth("bbbbbbbb")))
    h.settle()
    h.send(("aquafog/m1/status", will()))
    h.settle()
    went = time.time()
    h.now = went + 599
    assert h.monitor.raise_offline() == 0                 # not long enough yet
    h.now = went + 601
    assert h.monitor.raise_offline() == 1
    assert h.monitor.raise_offline() == 0                 # the same meter: one alert
    assert h.monitor.clear_online() == 0                  # still offline
    [a] = rows(h)
    assert (a["meter"], a["kind"], a["cleared_ms"]) == ("m1", "offline", None)
    assert "offline since" in a["message"] and "power supply" in a["message"]
    d = json.loads(a["details"])
    assert d["offline_alert_s"] == 600 and d["boot"] == "aaaaaaaa" and abs(d["offline_since_ms"] / 1000 - went) < 5

    h.send(("aquafog/m1/status", birth()))
    h.settle()
    assert h.monitor.clear_online() == 1
    assert h.monitor.clear_online() == 0
    [a] = rows(h)
    assert a["cleared_ms"] == int(h.now * 1000) and json.loads(a["details"])["cleared"]["why"] == "back online"
    assert h.live.alerts() == [("m1", "offline", "raised"), ("m1", "offline", "cleared")]
    assert h.monitor.raise_offline() == 0                 # m2 online, never-seen meters are not offline


def test_a_meter_already_offline_when_the_gateway_starts_is_found_by_the_monitor_thread(h):
    h.send(("aquafog/m2/status", birth("bbbbbbbb")))
    h.send(("aquafog/m2/status", will("bbbbbbbb")))
    h.settle()
    h.now = time.time() + 3600
    monitor = AlertMonitor(h.cfg, h.engine, h.writer, clock=lambda: h.now).start()  # a new gateway's
    try:
        deadline = time.time() + 10
        while not rows(h, kind="offline") and time.time() < deadline:
            time.sleep(0.05)
    finally:
        monitor.stop()
    assert [(r["meter"], r["kind"]) for r in rows(h)] == [("m2", "offline")]


def test_alarm_alerts_are_brought_in_line_with_the_stored_alarms_at_start(h):
    """A store from before alerts (an alarm listed, no alert), and an alert whose alarm is gone."""
    with h.engine.begin() as conn:
        conn.execute(insert(meter_alarms).values(alarm="burst", meter="m2", since_ms=1234))
        conn.execute(insert(alerts).values(meter="m1", kind="valve_fault", message="x", raised_ms=1, details="{}"))
    assert h.monitor.reconcile_alarms() == 2
    assert h.monitor.reconcile_alarms() == 0
    got = {r["kind"]: r for r in rows(h)}
    assert got["burst"]["meter"] == "m2" and got["burst"]["cleared_ms"] is None
    assert json.loads(got["burst"]["details"])["reported_since_ms"] == 1234
    assert got["valve_fault"]["cleared_ms"] is not None


@pytest.fixture
def fog(tmp_path):
    f = Fog(tmp_path)
    f.writer.live = FakeLive()
    yield f
    f.stop()


def policy_alerts(fog):
    with fog.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(alerts).where(alerts.c.kind == "policy_block")
                                              .order_by(alerts.c.id)).mappings()]


def test_each_automatic_block_raises_policy_block_with_its_rule_and_figures_and_its_end_clears_it(fog):
    fog.usage({"big": 5_000_000, "huge": 9_000_000, "small": 1000})
    fog.policy(mode="enforce", mean_rule=False, cap_m3=2)
    fog.enforcer.tick()
    fog.enforcer.tick()                                    # blocked already: nothing new
    got = {a["meter"]: a for a in policy_alerts(fog)}
    assert set(got) == {"big", "huge"}
    a = got["big"]
    block = fog.blocks()["big"]
    d = json.loads(a["details"])
    assert d == {"rule": "cap", "rules": [{"rule": "cap", "threshold_ml": 2_000_000}], "ml": 5_000_000,
                 "litres": 5000.0, "threshold_ml": 2_000_000, "period": {"kind": "month", "key": "2026-11"},
                 "mean": None, "command_id": block["command_id"]}
    assert a["message"].startswith("meter big was blocked by the consumption policy (policy cap: used 5000.000 L")
    assert "POST /api/v1/meters/big/valve" in a["message"] and a["raised_ms"] == block["created_ms"]

    fog.writer.submit_valve("huge", "open", "operator override", None)   # an operator ends one block
    fog.enforcer.tick()
    fog.now = NEXT_MONTH                                   # the month ends the other
    fog.enforcer.tick()
    got = {a["meter"]: a for a in policy_alerts(fog)}
    assert json.loads(got["huge"]["details"])["cleared"]["released_by"] == "operator"
    assert json.loads(got["big"]["details"])["cleared"]["released_by"] == "rollover"
    assert all(a["cleared_ms"] is not None for a in got.values()) and len(policy_alerts(fog)) == 2
    assert sorted(fog.writer.live.alerts()) == sorted([("big", "policy_block", "raised"), ("huge", "policy_block",
                                                      "raised"), ("huge", "policy_block", "cleared"),
                                                       ("big", "policy_block", "cleared")])


def test_a_dry_run_raises_no_alert(fog):
    fog.usage({"big": 5_000_000})
    fog.policy(mode="dry_run", mean_rule=False, cap_m3=2)
    fog.enforcer.tick()
    assert policy_alerts(fog) == []


# --- the API -------------------------------------------------------------------------------------
def leak(h, meter, uptime_s=100, alarms=("leak",)):
    h.send((f"aquafog/{meter}/tele/health", health(list(alarms), uptime_s=uptime_s)))
    h.settle()


def test_an_operator_acknowledges_an_alert_and_who_it_was_is_recorded(h):
    leak(h, "m1")
    [a] = rows(h)
    op = client_for(h, "operator", username="otto")
    r = op.post(f"/api/v1/alerts/{a['id']}/ack")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["id"], body["acked_by"], body["cleared_ms"]) == (a["id"], "otto", None)
    assert abs(body["acked_ms"] / 1000 - time.time()) < 10
    assert rows(h)[0]["acked_by"] == "otto"

    again = client_for(h, "admin", username="ada").post(f"/api/v1/alerts/{a['id']}/ack")
    assert again.status_code == 200 and again.get_json() == body     # the first acknowledgement stays
    assert h.live.alerts() == [("m1", "leak", "raised"), ("m1", "leak", "acked")]

    for bad in ("999", "0", "abc", "1" * 30):
        r = op.post(f"/api/v1/alerts/{bad}/ack")
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found", bad
    r = client_for(h, "consumer", ["m1"]).post(f"/api/v1/alerts/{a['id']}/ack")
    assert r.status_code == 403


def test_states_open_active_acked_and_all(h):
    leak(h, "m1")                                   # 1: active, open
    leak(h, "m2")                                   # 2: then cleared, open
    leak(h, "m2", 200, ())
    ids = [r["id"] for r in rows(h)]
    client_for(h).post(f"/api/v1/alerts/{ids[0]}/ack")
    c = client_for(h)

    def listed(q):
        r = c.get(f"/api/v1/alerts{q}")
        assert r.status_code == 200, r.get_json()
        return [i["id"] for i in r.get_json()["items"]]
    assert listed("") == listed("?state=all") == [ids[1], ids[0]]   # newest first
    assert listed("?state=open") == [ids[1]]
    assert listed("?state=acked") == [ids[0]]
    assert listed("?state=active") == [ids[0]]
    assert listed("?meter=m2") == [ids[1]] and listed("?kind=leak&meter=m1") == [ids[0]]
    assert listed("?kind=offline") == []


def test_a_consumer_sees_only_the_alerts_of_their_own_meters(h):
    add_meters(h.engine, ["m3"])
    for m in ("m1", "m2", "m3"):
        leak(h, m)
    carla = client_for(h, "consumer", ["m1", "m3"])
    assert [i["meter"] for i in carla.get("/api/v1/alerts").get_json()["items"]] == ["m3", "m1"]
    assert [i["meter"] for i in carla.get("/api/v1/alerts?meter=m1").get_json()["items"]] == ["m1"]
    r = carla.get("/api/v1/alerts?meter=m2")
    assert r.status_code == 403 and r.get_json()["error"]["field"] == "meter"
    assert client_for(h, "consumer", []).get("/api/v1/alerts").get_json()["items"] == []
    assert len(client_for(h, "operator").get("/api/v1/alerts").get_json()["items"]) == 3


def test_the_list_is_paged_newest_first(h):
    add_meters(h.engine, [f"p{i}" for i in range(5)])
    for i in range(5):
        leak(h, f"p{i}")
    c = client_for(h)
    seen, cursor = [], ""
    for _ in range(4):
        body = c.get(f"/api/v1/alerts?limit=2{cursor}").get_json()
        seen.append([i["meter"] for i in body["items"]])
        if body["next"] is None:
            break
        cursor = f"&cursor={body['next']}"
    assert seen == [["p4", "p3"], ["p2", "p1"], ["p0"]]
    assert c.get("/api/v1/alerts?limit=5").get_json()["next"] is None


@pytest.mark.parametrize("query,field", [
    ("state=unread", "state"), ("kind=fire", "kind"), ("limit=0", "limit"), ("limit=1001", "limit"),
    ("limit=x", "limit"), ("cursor=abc", "cursor"), ("cursor=0", "cursor"), ("meter=Bad%20Id!", "meter"),
])
def test_bad_parameters_are_400_naming_the_field(h, query, field):
    r = client_for(h).get(f"/api/v1/alerts?{query}")
    assert r.status_code == 400 and r.get_json()["error"]["field"] == field, r.get_json()


def test_the_alerts_need_a_login(h):
    app = create_app(h.cfg, h.engine, Services(h.monitor))
    assert app.test_client().get("/api/v1/alerts").status_code == 401
    assert app.test_client().post("/api/v1/alerts/1/ack").status_code == 401


# --- bounded history ------------------------------------------------------------------------------
def test_old_cleared_and_acknowledged_alerts_are_pruned_and_the_cleared_ones_are_bounded(h, monkeypatch):
    day = 86_400_000
    now = int(h.now * 1000)
    kept_days = alerts_mod.KEEP_DAYS

    def add(meter, kind, cleared=None, acked=None):
        with h.engine.begin() as conn:
            conn.execute(insert(alerts).values(meter=meter, kind=kind, message="x", raised_ms=1, details="{}",
                                               cleared_ms=cleared, acked_ms=acked, acked_by="otto" if acked else None))
    add("m1", "leak", now - (kept_days + 1) * day, now)    # cleared and acked long ago: goes
    add("m1", "burst", now - (kept_days + 1) * day)        # cleared long ago, never acked: stays (for now)
    add("m1", "offline", now - day, now)                    # recent: stays
    add("m2", "leak")                                       # active, however old: stays
    assert h.monitor.prune() == 1
    assert [r["kind"] for r in rows(h)] == ["burst", "offline", "leak"]

    monkeypatch.setattr(alerts_mod, "KEEP_CLEARED", 1)    # at most one cleared alert: the newest
    assert h.monitor.prune() == 1
    assert [(r["meter"], r["kind"]) for r in rows(h)] == [("m1", "offline"), ("m2", "leak")]
