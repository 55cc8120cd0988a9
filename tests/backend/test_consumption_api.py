"""GET /meters/<id>/usage and /meters/<id>/bill (api/consumption.py) with Flask's test client
over a real SQLite store, filled through the real accounting (late readings, a counter reset),
in Europe/Lisbon, whose clocks go forward on 2026-03-29 (a 23-hour day)."""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from test_openapi import authorize, check_answer, fog_token, strict

from aquafog.api import create_app
from aquafog.api.openapi import build
from aquafog.config import GatewayConfig
from aquafog.gateway.accounting import Accounting
from aquafog.periods import Calendar
from aquafog.protocol import Reading
from aquafog.store.engine import open_engine
from aquafog.store.registry import add_meters

EXAMPLE = Path(__file__).parents[2] / "backend" / "tariff.example.toml"
TZ = "Europe/Lisbon"
M3 = 1_000_000
R = 30_000_001  # m001's register from mid February


def at(text: str) -> int:
    """Unix seconds of a Lisbon wall-clock time."""
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(TZ)).timestamp())


def reading(boot: str, seq: int, ts: int, ml: int) -> Reading:
    return Reading("m001", boot, seq, ts, ml // 10, ml, 0, "open")


class FakeServices:
    def health(self):
        return {"status": "ok", "problems": []}


@pytest.fixture
def env(tmp_path):
    tariffs = tmp_path / "tariff.toml"
    shutil.copy(EXAMPLE, tariffs)  # 2026-01-01 and 2026-07-01 versions (test_tariff.py has their figures)
    cfg = GatewayConfig(db_path=str(tmp_path / "gw.db"), timezone=TZ, tariff_file=str(tariffs))
    engine = open_engine(cfg.db_path)
    add_meters(engine, ["m001", "m002"])
    cal = Calendar(TZ)
    today_start = cal.day_start(cal.today(time.time()))
    acc = Accounting(cal, engine.dialect)
    a, b = "aaaaaaaa", "bbbbbbbb"
    with engine.begin() as conn:
        acc.load(conn, ["m001"])
        batch = acc.begin_batch()
        for r in (
            reading(a, 0, at("2026-01-01T00:10"), 0),                # the baseline
            reading(a, 1, at("2026-01-31T12:00"), 10 * M3),          # January: 10 m3 exactly
            reading(a, 2, at("2026-02-15T12:00"), R),                # February: 20 m3 + 1 ml
            reading(a, 3, at("2026-03-28T23:30"), R),                # nothing
            reading(a, 4, at("2026-03-29T00:30"), R + 500),          # 29 March, 00:00 (UTC+0): 500 ml
            reading(a, 6, at("2026-03-29T02:30"), R + 1500),         # 02:00 (UTC+1): 1000 ml, split below
            reading(a, 7, at("2026-03-29T23:59"), R + 3500),         # 23:00: 2000 ml
            reading(b, 0, at("2026-03-30T10:00"), 200),              # a counter reset: the new baseline
            reading(b, 1, at("2026-03-30T10:20"), 700),              # 30 March, 10:00: 500 ml
            reading(b, 2, at("2026-06-20T12:00"), 700 + 15 * M3),    # June: 15 m3
            reading(b, 3, at("2026-07-10T12:00"), 700 + 30 * M3),    # July: 15 m3 (the July tariff)
            reading(b, 4, today_start + 1, 700 + 32_500_000),        # today: 2.5 m3
        ):
            assert batch.reading(conn, acc.states["m001"], r, 0) is None
        batch.write(conn)
        # late: seq 5 arrives after seq 6, stamped 05:10; 700 of seq 6's 1000 ml move to it
        batch = acc.begin_batch()
        assert batch.reading(conn, acc.states["m001"], reading(a, 5, at("2026-03-29T05:10"), R + 1200), 0) is None
        batch.write(conn)
    app = create_app(cfg, engine, FakeServices())
    client = authorize(app.test_client(), fog_token(engine))
    yield client, tariffs, strict(build(app))
    engine.dispose()


def err(resp):
    body = resp.get_json()["error"]
    return resp.status_code, body["code"], body["field"]


def series(client, query: str) -> list[tuple[str, float]]:
    r = client.get(f"/api/v1/meters/m001/usage?{query}")
    assert r.status_code == 200, r.get_json()
    return [(i["period"], i["litres"]) for i in r.get_json()["items"]]


def test_usage_by_month_lists_every_month(env):
    client, _, doc = env
    r = client.get("/api/v1/meters/m001/usage?by=month&from=2026-01&to=2026-07")
    check_answer(doc, "/api/v1/meters/{meter_id}/usage", "get", r)
    body = r.get_json()
    assert (body["by"], body["from"], body["to"], body["timezone"]) == ("month", "2026-01", "2026-07", TZ)
    assert [(i["period"], i["litres"]) for i in body["items"]] == [
        ("2026-01", 10000.0), ("2026-02", 20000.001), ("2026-03", 4.0), ("2026-04", 0.0), ("2026-05", 0.0),
        ("2026-06", 15000.0), ("2026-07", 15000.0)]
    assert body["total_litres"] == 60004.001
    # default: the 12 months up to this one, which has today's 2.5 m3
    items = series(client, "by=month")
    this_month = datetime.now(ZoneInfo(TZ)).strftime("%Y-%m")
    assert len(items) == 12 and items[-1] == (this_month, 2500.0)


def test_usage_by_day_reads_the_daily_totals(env):
    client, _, _ = env
    # 28 March: the reading at 23:30 used nothing; 29 March: 500 + 1000 + 2000; 30 March: the
    # reset is a new baseline, then 500
    assert series(client, "by=day&from=2026-03-28&to=2026-03-31") == [
        ("2026-03-28", 0.0), ("2026-03-29", 3.5), ("2026-03-30", 0.5), ("2026-03-31", 0.0)]
    # default: this month up to today, today last
    items = series(client, "")
    today = datetime.now(ZoneInfo(TZ)).date()
    assert items[0][0] == today.replace(day=1).isoformat() and items[-1] == (today.isoformat(), 2500.0)


def test_usage_by_hour_on_the_day_the_clocks_go_forward(env):
    client, _, doc = env
    r = client.get("/api/v1/meters/m001/usage?by=hour&from=2026-03-29")
    check_answer(doc, "/api/v1/meters/{meter_id}/usage", "get", r)
    items = [(i["period"], i["litres"]) for i in r.get_json()["items"]]
    assert len(items) == 23  # 01:00 local does not exist that day
    assert items[:6] == [("2026-03-29T00:00+00:00", 0.5), ("2026-03-29T02:00+01:00", 0.3),
                         ("2026-03-29T03:00+01:00", 0.0), ("2026-03-29T04:00+01:00", 0.0),
                         ("2026-03-29T05:00+01:00", 0.7), ("2026-03-29T06:00+01:00", 0.0)]
    assert items[-1] == ("2026-03-29T23:00+01:00", 2.0)
    assert r.get_json()["total_litres"] == 3.5  # the day's total, exactly
    # two days: the hours of each add up to its daily total
    hours = series(client, "by=hour&from=2026-03-28&to=2026-03-30")
    assert len(hours) == 24 + 23 + 24
    days = dict(series(client, "by=day&from=2026-03-28&to=2026-03-30"))
    for day, litres in days.items():
        assert round(sum(v for p, v in hours if p.startswith(day)), 3) == litres, day
    assert ("2026-03-30T10:00+01:00", 0.5) in hours
    # default: today's hours; today's reading is a second after midnight
    today = series(client, "by=hour")
    assert today[0][1] == 2500.0 and 23 <= len(today) <= 25


@pytest.mark.parametrize("query,field", [
    ("by=week", "by"),
    ("by=day&from=2026-3-01", "from"), ("by=day&from=20260301", "from"), ("by=day&from=2026-02-30", "from"),
    ("by=day&to=yesterday", "to"), ("by=day&from=2026-03-02&to=2026-03-01", "to"),
    ("by=day&from=2025-01-01&to=2026-01-02", "to"),             # 367 days
    ("by=hour&from=2026-03-01&to=2026-03-08", "to"),            # 8 days of hours
    ("by=month&from=2026-1", "from"), ("by=month&from=2026-13", "from"), ("by=month&to=2026-03-01", "to"),
    ("by=month&from=2026-05&to=2026-04", "to"), ("by=month&from=2016-01&to=2026-01", "to"),  # 121 months
    ("by=hour&from=9999-12-31", "from"), ("by=day&to=1969-12-31", "to"), ("by=month&from=0000-01", "from"),
])
def test_bad_usage_queries_name_the_field(env, query, field):
    client, _, doc = env
    r = client.get(f"/api/v1/meters/m001/usage?{query}")
    assert err(r) == (400, "bad_request", field)
    check_answer(doc, "/api/v1/meters/{meter_id}/usage", "get", r)


def test_limits_are_inclusive(env):
    client, _, _ = env
    assert len(series(client, "by=day&from=2025-01-02&to=2026-01-02")) == 366
    assert len(series(client, "by=hour&from=2026-03-01&to=2026-03-07")) == 7 * 24
    assert len(series(client, "by=month&from=2016-02&to=2026-01")) == 120


def test_usage_of_unknown_meters_is_404(env):
    client, _, _ = env
    assert err(client.get("/api/v1/meters/m999/usage")) == (404, "not_found", None)
    assert err(client.get("/api/v1/meters/NOT%20AN%20ID/bill")) == (404, "not_found", None)
    assert [v for _, v in series(client, "by=month&from=2026-01&to=2026-03")] == [10000.0, 20000.001, 4.0]
    r = client.get("/api/v1/meters/m002/usage?by=month&from=2026-01&to=2026-03").get_json()
    assert [i["litres"] for i in r["items"]] == [0.0, 0.0, 0.0] and r["total_litres"] == 0.0


def bill(client, meter: str, month: str | None = None) -> dict:
    r = client.get(f"/api/v1/meters/{meter}/bill" + (f"?month={month}" if month else ""))
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_bills_by_month_from_the_version_in_force(env):
    client, _, doc = env
    r = client.get("/api/v1/meters/m001/bill?month=2026-02")
    check_answer(doc, "/api/v1/meters/{meter_id}/bill", "get", r)
    # February: 20 m3 + 1 ml under the 2026-01-01 version: 9.50 + 10 x 1.2750 (12.75) + 0.000001 x 2.1000
    # (0.00) = 22.25; sewage 43 %: 9.5675 -> 9.57; total 31.82
    assert r.get_json() == {
        "meter": "m001", "month": "2026-02", "from": "2026-02-01", "to": "2026-02-28", "timezone": TZ,
        "complete": True, "consumption": {"litres": 20000.001, "m3": "20.000001"},
        "tariff": {"utility": "aguas-do-norte", "effective": "2026-01-01", "name": "2026 domestic"},
        "currency": "EUR",
        "lines": [
            {"block": "0-10", "from_m3": 0, "to_m3": 10, "minimum": True, "m3": "10.000000", "unit_price": None,
             "amount": "9.50"},
            {"block": "10-20", "from_m3": 10, "to_m3": 20, "minimum": False, "m3": "10.000000",
             "unit_price": "1.2750", "amount": "12.75"},
            {"block": "20-50", "from_m3": 20, "to_m3": 50, "minimum": False, "m3": "0.000001",
             "unit_price": "2.1000", "amount": "0.00"},
        ],
        "water": "22.25", "sewage_percent": "43", "sewage": "9.57", "total": "31.82",
    }
    # January: 10 m3 exactly, the minimum: 9.50 + sewage 4.085 -> 4.09 = 13.59
    jan = bill(client, "m001", "2026-01")
    assert [ln["block"] for ln in jan["lines"]] == ["0-10"] and (jan["water"], jan["sewage"], jan["total"]) == (
        "9.50", "4.09", "13.59")
    # March: 4 litres, the minimum all the same
    assert bill(client, "m001", "2026-03")["total"] == "13.59"
    # June, 15 m3, 2026-01-01 version: 9.50 + 5 x 1.2750 (6.375 -> 6.38) = 15.88; sewage 6.8284 -> 6.83: 22.71
    june = bill(client, "m001", "2026-06")
    assert (june["tariff"]["effective"], june["water"], june["sewage"], june["total"]) == (
        "2026-01-01", "15.88", "6.83", "22.71")
    # July, 15 m3, 2026-07-01 version: 11.00 + 5 x 1.50 = 18.50; sewage 50 %: 9.25; total 27.75
    july = bill(client, "m001", "2026-07")
    assert (july["tariff"]["effective"], july["currency"], july["water"], july["sewage"], july["total"]) == (
        "2026-07-01", "EUR", "18.50", "9.25", "27.75")
    # a meter that used nothing pays the minimum
    assert bill(client, "m002", "2026-02")["total"] == "13.59"


def test_this_months_bill_is_the_bill_so_far(env):
    client, _, _ = env
    b = bill(client, "m001")
    # 2.5 m3 under the newest version: minimum 11.00, sewage 5.50, total 16.50
    assert b["complete"] is False and b["month"] == datetime.now(ZoneInfo(TZ)).strftime("%Y-%m")
    assert (b["consumption"]["m3"], b["water"], b["sewage"], b["total"]) == ("2.500000", "11.00", "5.50", "16.50")


@pytest.mark.parametrize("month,status,field", [
    ("2026-13", 400, "month"), ("2026-1", 400, "month"), ("last", 400, "month"), ("2099-01", 400, "month"),
    ("1969-12", 400, "month"),
    ("2025-12", 404, None),  # before the first version
])
def test_bad_bill_months(env, month, status, field):
    client, _, doc = env
    r = client.get(f"/api/v1/meters/m001/bill?month={month}")
    assert err(r)[0::2] == (status, field)
    check_answer(doc, "/api/v1/meters/{meter_id}/bill", "get", r)
    if status == 404:
        assert "first version is effective 2026-01-01" in r.get_json()["error"]["message"]


def test_without_a_tariff_file_the_bill_says_what_to_configure(tmp_path):
    cfg = GatewayConfig(db_path=str(tmp_path / "gw.db"))
    engine = open_engine(cfg.db_path)
    add_meters(engine, ["m001"])
    client = authorize(create_app(cfg, engine, FakeServices()).test_client(), fog_token(engine))
    r = client.get("/api/v1/meters/m001/bill")
    assert err(r) == (404, "not_found", None)
    assert "set tariff_file in the gateway config" in r.get_json()["error"]["message"]
    assert client.get("/api/v1/meters/m001/usage").status_code == 200  # usage needs no tariff
    engine.dispose()


def test_an_edited_tariff_file_is_read_again(env):
    client, tariffs, doc = env
    assert bill(client, "m001", "2026-07")["total"] == "27.75"
    good = tariffs.read_text()
    tariffs.write_text(good.replace('price = "2.50"', 'price = "-2.50"'))
    r = client.get("/api/v1/meters/m001/bill?month=2026-07")
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "tariff_file_invalid"
    assert "tariff[2].blocks[2].price: must be a price per m3" in r.get_json()["error"]["message"]
    check_answer(doc, "/api/v1/meters/{meter_id}/bill", "get", r)
    # a new version effective 2026-07-01 replaces the minimum charge; no restart
    tariffs.write_text(good.replace('minimum_charge = "11.00"', 'minimum_charge = "12.00"'))
    # 12.00 + 7.50 = 19.50; sewage 9.75; total 29.25
    assert bill(client, "m001", "2026-07")["total"] == "29.25"
