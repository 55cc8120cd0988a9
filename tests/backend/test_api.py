"""The HTTP API with Flask's test client over a real SQLite store (unit: the gateway
services behind POST /valve are a fake here; the integration tests use the real one)."""

from __future__ import annotations

import time
from datetime import date

import pytest

from aquafog.api import create_app
from aquafog.api.ranking import split_range
from aquafog.api.serialize import iso_ms as serialize_iso_ms
from aquafog.config import GatewayConfig
from aquafog.gateway.accounting import Accounting
from aquafog.gateway.commands import UnknownMeter
from aquafog.gateway.health import HealthBatch
from aquafog.periods import Calendar
from aquafog.protocol import Health, Reading
from aquafog.store.engine import open_engine
from aquafog.store.registry import add_meters

from authz import authorize, fog_token

NOW = int(time.time())
HEALTH_AT_MS = NOW * 1000 - 1500


class FakeServices:
    def __init__(self):
        self.calls = []
        self.healthy = True

    def submit_valve(self, meter, state, reason, command_id):
        self.calls.append((meter, state, reason, command_id))
        raise UnknownMeter(f"meter {meter!r} is not registered at this gateway", None)

    def health(self):
        return {"status": "ok" if self.healthy else "degraded", "problems": [] if self.healthy else ["x"]}

    def city_mean(self, period):
        return None  # a fog without a region: nothing from the cloud


@pytest.fixture
def env(tmp_path):
    cfg = GatewayConfig(db_path=str(tmp_path / "gw.db"))
    engine = open_engine(cfg.db_path)
    ids = [f"m{i:03d}" for i in range(1, 31)]
    add_meters(engine, ids)
    acc = Accounting(Calendar("UTC"), engine.dialect)
    # meter i uses i*100 ml today (two readings), meters 1-3 tie at the top with 5000
    with engine.begin() as conn:
        acc.load(conn, ids)
        b = acc.begin_batch()
        for i, m in enumerate(ids, 1):
            used = 5000 if i <= 3 else i * 100
            b.reading(conn, acc.states[m], Reading(m, "aaaaaaaa", 0, NOW - 60, 0, 1000, 0, "open"), 0)
            b.reading(conn, acc.states[m], Reading(m, "aaaaaaaa", 1, NOW - 30, used, 1000 + used, 1500, "open"), 0)
        b.write(conn)
        # health: m002 and m004-m006 report a leak, m005 also a burst; m010 reports no alarm
        hb = HealthBatch()
        for m, alarms in (("m002", ("leak",)), ("m004", ("leak",)), ("m005", ("leak", "burst")),
                          ("m006", ("leak",)), ("m010", ())):
            hb.add(acc.states[m], Health(m, "aaaaaaaa", "0.2.0", 86400, "watchdog", -67 if alarms else None,
                                         81234, 12, 3, "ntp", alarms), HEALTH_AT_MS)
        hb.write(conn)
    services = FakeServices()
    app = create_app(cfg, engine, services)
    yield authorize(app.test_client(), fog_token(engine)), services, ids
    engine.dispose()


def err(resp):
    return resp.status_code, resp.get_json()["error"]["code"], resp.get_json()["error"]["field"]


def test_ranking_is_top_n_with_ties_broken_by_meter_id(env):
    client, _, ids = env
    body = client.get("/api/v1/ranking?n=5").get_json()
    assert [(i["rank"], i["meter"], i["litres"]) for i in body["items"]] == [
        (1, "m001", 5.0), (2, "m002", 5.0), (3, "m003", 5.0), (4, "m030", 3.0), (5, "m029", 2.9)]
    assert body["period"]["kind"] == "today" and body["n"] == 5
    month = client.get("/api/v1/ranking?n=1000&period=month").get_json()
    assert len(month["items"]) == 30


def test_ranking_over_a_custom_range_reads_months_and_loose_days(env):
    client, _, _ = env
    today = date.today().isoformat()
    body = client.get(f"/api/v1/ranking?n=2&period=custom&from={today}&to={today}").get_json()
    assert [i["meter"] for i in body["items"]] == ["m001", "m002"]
    assert split_range(date(2026, 1, 15), date(2026, 4, 2)) == (
        [202602, 202603], [(20260115, 20260131), (20260401, 20260402)])
    assert split_range(date(2026, 2, 1), date(2026, 2, 28)) == ([202602], [])


@pytest.mark.parametrize("query,field", [
    ("n=0", "n"), ("n=1001", "n"), ("n=ten", "n"), ("period=week", "period"),
    ("period=custom&to=2026-01-01", "from"), ("period=custom&from=2026-13-01&to=2026-01-01", "from"),
    ("period=custom&from=2026-02-01&to=2026-01-01", "to"), ("period=custom&from=2024-01-01&to=2026-01-01", "to"),
])
def test_bad_ranking_queries_name_the_field(env, query, field):
    client, _, _ = env
    assert err(client.get(f"/api/v1/ranking?{query}")) == (400, "bad_request", field)


def test_meter_detail_has_register_flow_valve_and_consumption(env):
    client, _, _ = env
    m = client.get("/api/v1/meters/m030").get_json()
    assert m["register"]["litres"] == 4.0 and m["register"]["pulses"] == 3000 and m["register"]["seq"] == 1
    assert m["flow_lpm"] == 1.5
    assert m["consumption"]["today_litres"] == 3.0
    assert m["valve"] == {"desired": None, "reported": "open", "pending_command": None}
    assert m["readings"] == 2


def test_unknown_meter_is_404_with_a_message_saying_what_to_do(env):
    client, _, _ = env
    r = client.get("/api/v1/meters/m999")
    assert r.status_code == 404
    assert "GET /api/v1/meters" in r.get_json()["error"]["message"]


def test_meters_are_paged_with_a_cursor(env):
    client, _, ids = env
    seen, cursor = [], None
    while True:
        r = client.get("/api/v1/meters?limit=7" + (f"&cursor={cursor}" if cursor else "")).get_json()
        seen += [i["meter"] for i in r["items"]]
        cursor = r["next"]
        if not cursor:
            break
    assert seen == ids
    assert client.get("/api/v1/meters?status=online").get_json()["items"] == []  # no birth seen
    assert err(client.get("/api/v1/meters?status=sleepy")) == (400, "bad_request", "status")
    assert err(client.get("/api/v1/meters?limit=-1")) == (400, "bad_request", "limit")


def test_readings_in_a_time_range(env):
    client, _, _ = env
    r = client.get(f"/api/v1/meters/m010/readings?from={NOW - 45}&to={NOW}").get_json()
    assert [(i["seq"], i["litres"]) for i in r["items"]] == [(1, 2.0)]
    r = client.get("/api/v1/meters/m010/readings?limit=1").get_json()
    assert len(r["items"]) == 1 and r["next"]
    r2 = client.get(f"/api/v1/meters/m010/readings?limit=1&cursor={r['next']}").get_json()
    assert r2["items"][0]["seq"] == 1 and r2["next"] is None
    assert err(client.get("/api/v1/meters/m010/readings?from=yesterday")) == (400, "bad_request", "from")


@pytest.mark.parametrize("body,field", [
    (None, "body"), ([1], "body"), ({}, "state"), ({"state": "ajar"}, "state"), ({"state": 1}, "state"),
    ({"state": "closed", "reason": 5}, "reason"), ({"state": "closed", "command_id": "a b"}, "command_id"),
    ({"state": "closed", "stat": "x"}, "stat"),
])
def test_a_bad_valve_body_is_400_naming_the_field(env, body, field):
    client, services, _ = env
    r = client.post("/api/v1/meters/m001/valve", json=body) if body is not None else \
        client.post("/api/v1/meters/m001/valve", data="closed")
    assert err(r) == (400, "bad_request", field)
    assert services.calls == []


def test_valve_for_an_unknown_meter_is_404(env):
    client, _, _ = env
    assert err(client.post("/api/v1/meters/nobody/valve", json={"state": "closed"})) == (404, "not_found", None)
    assert err(client.post("/api/v1/meters/NOT%20AN%20ID/valve", json={"state": "closed"}))[0] == 404


def test_errors_are_json_everywhere(env):
    client, _, _ = env
    assert err(client.get("/api/v1/nothing-here")) == (404, "not_found", None)
    assert err(client.delete("/api/v1/ranking"))[0] == 405
    assert err(client.get("/api/v1/commands/c-none")) == (404, "not_found", None)


def test_health_is_503_when_degraded(env):
    client, services, _ = env
    assert client.get("/api/v1/health").status_code == 200
    services.healthy = False
    assert client.get("/api/v1/health").status_code == 503


def test_meter_detail_has_the_latest_health_or_null(env):
    client, _, _ = env
    h = client.get("/api/v1/meters/m005").get_json()["health"]
    assert h == {"boot": "aaaaaaaa", "fw": "0.2.0", "uptime_s": 86400, "reset": "watchdog", "rssi": -67,
                 "heap_free": 81234, "dropped": 12, "buffer": 3, "clock": "ntp", "alarms": ["leak", "burst"],
                 "received": serialize_iso_ms(HEALTH_AT_MS)}
    h = client.get("/api/v1/meters/m010").get_json()["health"]
    assert h["alarms"] == [] and h["rssi"] is None
    assert client.get("/api/v1/meters/m001").get_json()["health"] is None  # never reported


def test_meters_are_filtered_by_alarm_and_paged(env):
    client, _, _ = env
    def ids(q):
        return [i["meter"] for i in client.get(f"/api/v1/meters?{q}").get_json()["items"]]
    assert ids("alarm=leak") == ["m002", "m004", "m005", "m006"]
    assert ids("alarm=burst") == ["m005"] and ids("alarm=valve_fault") == []
    first = client.get("/api/v1/meters?alarm=leak&limit=3").get_json()
    assert [i["meter"] for i in first["items"]] == ["m002", "m004", "m005"] and first["next"] == "m005"
    assert ids(f"alarm=leak&limit=3&cursor={first['next']}") == ["m006"]
    assert ids("alarm=leak&valve=open") == ["m002", "m004", "m005", "m006"] and ids("alarm=leak&valve=closed") == []
    assert ids("alarm=leak&status=online") == []
    assert err(client.get("/api/v1/meters?alarm=fire")) == (400, "bad_request", "alarm")


def test_operator_command_ids_cannot_take_the_meters_local_prefix(env):
    client, services, _ = env
    r = client.post("/api/v1/meters/m001/valve", json={"state": "open", "command_id": "local-aaaaaaaa-1"})
    assert err(r) == (400, "bad_request", "command_id") and services.calls == []


def test_a_fog_without_a_region_says_it_has_no_city_mean_and_why(env):
    client, _, _ = env
    resp = client.get("/api/v1/city/mean")
    assert resp.status_code == 404 and "region" in resp.get_json()["error"]["message"]
    assert err(client.get("/api/v1/city/mean?period=week")) == (400, "bad_request", "period")
