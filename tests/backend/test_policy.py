"""Consumption policies: the rules against brute force (pure), and the enforcer on a real
SQLite store and the real writer thread (unit level: consumption rows are written straight
into the store, the MQTT side is a fake publisher; tests/integration/test_city.py runs the
policies on three real fogs with the city mean from the cloud)."""

from __future__ import annotations

import json
import queue
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from aquafog.api import create_app
from aquafog.config import ConfigError, GatewayConfig
from aquafog.federation import CityMean
from aquafog.gateway.enforcer import Enforcer
from aquafog.gateway.writer import Writer
from aquafog.policy import Mean, PolicySettings, parse_settings, to_ml, violations
from aquafog.store.engine import open_engine
from aquafog.store.registry import add_meters
from aquafog.store.schema import commands, consumption_daily, consumption_monthly, meters, policy_blocks

from authz import authorize, fog_token
from test_writer import FakePublisher

NOW = 1_795_650_000.0          # 2026-11-26 (UTC)
NEXT_MONTH = 1_796_200_000.0   # 2026-12-02
MONTH, DAY = 202611, 20261126


# --- the rules -----------------------------------------------------------------------------------
usage_lists = st.dictionaries(st.sampled_from([f"m{i}" for i in range(40)]), st.integers(0, 5000), max_size=40)


@settings(max_examples=300, deadline=None)
@given(usage=usage_lists, factor=st.sampled_from([0.5, 1.0, 1.1, 1.25, 3.0]), n_extra=st.integers(0, 30),
       cap=st.one_of(st.none(), st.sampled_from([0.001, 0.002, 0.0025])),
       own=st.dictionaries(st.sampled_from([f"m{i}" for i in range(40)]), st.sampled_from([0.0005, 0.004]),
                           max_size=5),
       exempt=st.lists(st.sampled_from([f"m{i}" for i in range(40)]), max_size=5))
def test_violations_are_exactly_the_meters_over_a_rule(usage, factor, n_extra, cap, own, exempt):
    """Brute force in exact fractions: ml > factor x sum/meters, ml > the meter's cap in ml."""
    s = PolicySettings(mode="enforce", mean_factor=factor, cap_m3=cap, caps_m3=own, exempt=tuple(exempt))
    n = len(usage) + n_extra
    total = sum(usage.values())
    mean = Mean("2026-11", total, n, "city", 0) if n else None
    got = {v.meter: ({r for r, _ in v.rules}, v.exempt) for v in violations(s, usage.items(), mean)}
    want = {}
    for m, ml in usage.items():
        rules = set()
        c = own.get(m, cap)
        if c is not None and ml > Fraction(str(c)) * 1_000_000:
            rules.add("cap")
        if n and ml > Fraction(str(factor)) * Fraction(total, n):
            rules.add("mean")
        if rules:
            want[m] = (rules, m in exempt)
    assert got == want


def test_cubic_metres_are_converted_exactly():
    assert to_ml(1.1) == 1_100_000 and to_ml(0.001) == 1000 and to_ml(2.5) == 2_500_000


def test_a_mean_with_a_fraction_is_compared_without_rounding():
    # 3 meters, 10 ml: the mean is 3.33 ml; 4 ml exceeds it, and 3 does not
    s = PolicySettings(mode="enforce")
    mean = Mean("k", 10, 3, "fog", 0)
    assert [v.meter for v in violations(s, [("a", 4), ("b", 3), ("c", 3)], mean)] == ["a"]


def test_bad_settings_name_every_field_at_fault():
    errors = parse_settings({"mode": "on", "period": "year", "mean_factor": -1, "cap_m3": "lots",
                             "caps_m3": {"BAD": 1, "h1": 0}, "exempt": "h1", "colour": "red"})
    fields = {e.split(":")[0] for e in errors}
    assert fields == {"colour", "mode", "period", "mean_factor", "cap_m3", "caps_m3", "caps_m3.h1", "exempt"}
    assert parse_settings([]) == ["body: must be a table/object of policy settings"]
    assert parse_settings({"mean_rule": 1}) == ["mean_rule: must be true or false, got 1"]


def test_the_config_file_policy_table_is_checked_with_the_same_rules(tmp_path):
    f = tmp_path / "gw.toml"
    f.write_text('[policy]\nmode = "enforce"\ncap_m3 = 0\nexempt = ["hospital-1"]\n[policy.caps_m3]\nfarm = 40\n')
    with pytest.raises(ConfigError) as e:
        GatewayConfig.load(f, env={})
    assert e.value.errors == ["policy.cap_m3: must be cubic metres per period, above 0 and at most 1000000000, "
                              "or null for no global cap, got 0"]
    f.write_text('[policy]\nmode = "enforce"\ncap_m3 = 12.5\nexempt = ["hospital-1"]\n[policy.caps_m3]\nfarm = 40\n')
    s = GatewayConfig.load(f, env={}).policy_settings
    assert (s.mode, s.cap_ml("x"), s.cap_ml("farm"), s.exempt) == ("enforce", 12_500_000, 40_000_000,
                                                                    ("hospital-1",))


# --- the enforcer on a real store ----------------------------------------------------------------
class Fog:
    """A real store and writer thread; consumption written straight into the store."""

    def __init__(self, tmp_path, region="", **policy):
        self.cfg = GatewayConfig(db_path=str(tmp_path / "gw.db"), region=region, policy=policy)
        self.engine = open_engine(self.cfg.db_path)
        self.events: queue.Queue = queue.Queue()
        self.pub = FakePublisher(self.events)
        self.writer = Writer(self.cfg, self.engine, self.events, self.pub, None)
        self.writer.start()
        self.now = NOW
        self.city: dict[str, CityMean] = {}
        self.enforcer = self.new_enforcer()

    def new_enforcer(self, cfg=None) -> Enforcer:
        e = Enforcer(cfg or self.cfg, self.engine, self.writer, self.city.get, clock=lambda: self.now)
        e.load()
        return e

    def usage(self, month: dict[str, int], silent: int = 0, key=MONTH, day=DAY) -> None:
        add_meters(self.engine, [*month, *(f"z{i:03d}" for i in range(silent))])
        with self.engine.begin() as conn:
            for m, ml in month.items():
                conn.execute(insert(consumption_monthly).values(meter=m, month=key, ml=ml))
                conn.execute(insert(consumption_daily).values(meter=m, day=day, ml=ml))

    def policy(self, **settings) -> None:
        self.enforcer.replace(PolicySettings(**settings))

    def blocks(self, active=None):
        q = select(meters.c.meter, policy_blocks).join(meters, meters.c.pk == policy_blocks.c.meter_pk)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return {r["meter"]: dict(r) for r in rows if active is None or (r["released_ms"] is None) == active}

    def commands(self, origin=None):
        q = select(meters.c.meter, commands).join(meters, meters.c.pk == commands.c.meter_pk).order_by(
            commands.c.created_ms, commands.c.id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings() if origin is None or r["origin"] == origin]

    def desired(self, meter):
        with self.engine.connect() as conn:
            return conn.execute(select(meters.c.valve_desired).where(meters.c.meter == meter)).scalar_one()

    def stop(self):
        self.writer.stop()
        self.engine.dispose()


@pytest.fixture
def fog(tmp_path):
    f = Fog(tmp_path)
    yield f
    f.stop()


# 10 meters with use, 2 without: sum 5500 ml over 12 meters, mean 458.33 ml
USAGE = {f"m{i:02d}": i * 100 for i in range(1, 11)}
OVER_MEAN = {m for m, ml in USAGE.items() if ml * 12 > 5500}


def test_dry_run_lists_exactly_who_would_be_blocked_and_blocks_nobody(fog):
    fog.usage(USAGE, silent=2)
    fog.policy(mode="dry_run")
    ev = fog.enforcer.tick()
    assert {m["meter"] for m in ev["meters"]} == OVER_MEAN == {f"m{i:02d}" for i in range(5, 11)}
    assert {m["action"] for m in ev["meters"]} == {"would_block"}
    assert ev["mean"] == {"source": "fog", "sum_ml": 5500, "meters": 12, "mean_litres": 0.458,
                          "as_of_ms": int(NOW * 1000)}
    assert ev["thresholds"]["mean_ml"] == 458
    assert fog.blocks() == {} and fog.commands() == [] and fog.pub.sent == []


def test_enforce_blocks_exactly_the_meters_over_the_mean_once_with_the_rule_and_figures(fog):
    fog.usage(USAGE, silent=2)
    fog.policy(mode="enforce")
    ev = fog.enforcer.tick()
    assert ev["counts"] == {"over": 6, "blocked": 6}
    blocks = fog.blocks()
    assert set(blocks) == OVER_MEAN
    b = blocks["m07"]
    assert (b["rule"], b["ml"], b["threshold_ml"], b["mean_sum_ml"], b["mean_meters"], b["mean_source"],
            b["mean_factor"], b["period"], b["period_key"]) == ("mean", 700, 458, 5500, 12, "fog", "1.0",
                                                               "month", "2026-11")
    cmds = fog.commands("policy")
    assert {c["meter"] for c in cmds} == OVER_MEAN and {c["state"] for c in cmds} == {"closed"}
    assert {c["status"] for c in cmds} == {"queued"}  # the meters are offline: applied only on their answer
    c7 = next(c for c in cmds if c["meter"] == "m07")
    assert c7["id"] == b["command_id"]
    assert c7["reason"] == ("policy mean: used 0.700 L in month 2026-11, above 1 x the fog mean "
                            "(5.500 L over 12 meters) = 0.458 L")
    assert fog.desired("m07") == "closed" and fog.desired("m04") is None

    ev = fog.enforcer.tick()  # again: nothing new
    assert ev["counts"] == {"over": 6, "blocked": 6} and len(fog.commands("policy")) == 6


def test_caps_global_and_per_meter_and_exemptions(fog):
    fog.usage({"a": 3_000_000, "b": 2_000_000, "farm": 30_000_000, "hospital": 9_000_000, "c": 2_000_001})
    fog.policy(mode="enforce", mean_rule=False, cap_m3=2.0, caps_m3={"farm": 40.0, "b": 1.5}, exempt=["hospital"])
    ev = fog.enforcer.tick()
    actions = {m["meter"]: (m["action"], [r["rule"] for r in m["rules"]]) for m in ev["meters"]}
    assert actions == {"hospital": ("exempt", ["cap"]), "a": ("blocked", ["cap"]),
                       "c": ("blocked", ["cap"]), "b": ("blocked", ["cap"])}
    assert set(fog.blocks()) == {"a", "b", "c"}
    assert fog.blocks()["b"]["threshold_ml"] == 1_500_000 and fog.blocks()["a"]["threshold_ml"] == 2_000_000


def test_an_operator_unblock_ends_the_block_for_the_rest_of_the_period(fog):
    fog.usage(USAGE, silent=2)
    fog.policy(mode="enforce")
    fog.enforcer.tick()
    row, _ = fog.writer.submit_valve("m09", "open", "the family has a newborn", None)
    ev = fog.enforcer.tick()
    b = fog.blocks()["m09"]
    assert (b["released_by"], b["release_command_id"]) == ("operator", row["id"])
    assert next(m for m in ev["meters"] if m["meter"] == "m09")["action"] == "released"
    assert fog.desired("m09") == "open" and len(fog.commands("policy")) == 6  # not closed again


def test_blocks_are_lifted_when_the_period_rolls_over_unless_someone_took_over(fog):
    fog.usage(USAGE, silent=2)
    fog.policy(mode="enforce")
    fog.enforcer.tick()
    fog.writer.submit_valve("m10", "closed", "operator: tampering", None)  # the operator's own close
    fog.now = NEXT_MONTH
    ev = fog.enforcer.tick()
    assert ev["period"] == {"kind": "month", "key": "2026-12"} and ev["meters"] == []  # nothing used yet
    blocks = fog.blocks()
    assert {m for m, b in blocks.items() if b["released_by"] == "rollover"} == OVER_MEAN - {"m10"}
    assert blocks["m10"]["released_by"] == "operator"
    opens = fog.commands("policy")[6:]
    assert {c["meter"] for c in opens} == OVER_MEAN - {"m10"} and {c["state"] for c in opens} == {"open"}
    assert opens[0]["reason"] == "policy block lifted: month 2026-11 is over"
    assert fog.desired("m05") == "open" and fog.desired("m10") == "closed"


def test_a_meter_made_exempt_is_reopened(fog):
    fog.usage(USAGE, silent=2)
    fog.policy(mode="enforce")
    fog.enforcer.tick()
    fog.policy(mode="enforce", exempt=["m08"])
    ev = fog.enforcer.tick()
    assert fog.blocks()["m08"]["released_by"] == "exempted" and fog.desired("m08") == "open"
    assert next(m for m in ev["meters"] if m["meter"] == "m08")["action"] == "exempt"


def test_a_meter_closed_by_an_operator_is_left_to_the_operator(fog):
    fog.usage(USAGE, silent=2)
    fog.writer.submit_valve("m06", "closed", "unpaid", None)
    fog.policy(mode="enforce")
    ev = fog.enforcer.tick()
    assert next(m for m in ev["meters"] if m["meter"] == "m06")["action"] == "valve_closed"
    assert "m06" not in fog.blocks()


def test_a_city_fog_waits_for_the_city_mean_of_the_same_period_and_then_uses_it(tmp_path):
    fog = Fog(tmp_path, region="north")
    try:
        fog.usage(USAGE, silent=2)
        fog.policy(mode="enforce", cap_m3=0.0009)
        ev = fog.enforcer.tick()  # no mean yet: only the cap applies
        assert ev["mean"] is None and "no city mean for month 2026-11 yet" in ev["problems"][0]
        assert set(fog.blocks()) == {"m10"}
        fog.city["month"] = CityMean("month", "2026-10", 1, 10**9, ("north",), 0)  # last month's: not used
        assert fog.enforcer.tick()["mean"] is None
        # the city: 100 meters, 60 L: mean 600 ml (this fog's own mean would be 458 ml)
        fog.city["month"] = CityMean("month", "2026-11", 100, 60_000, ("north", "south"), 123)
        ev = fog.enforcer.tick()
        assert ev["mean"]["source"] == "city" and ev["thresholds"]["mean_ml"] == 600
        assert set(fog.blocks()) == {"m07", "m08", "m09", "m10"}
        assert fog.blocks()["m07"]["mean_meters"] == 100
    finally:
        fog.stop()


def test_settings_from_the_api_survive_a_restart_until_the_config_file_changes(tmp_path):
    fog = Fog(tmp_path, mode="dry_run")
    try:
        assert fog.enforcer.settings.mode == "dry_run" and fog.enforcer.source == "config"
        fog.policy(mode="enforce", cap_m3=5.0)
        again = fog.new_enforcer()
        assert (again.settings.mode, again.settings.cap_m3, again.source) == ("enforce", 5.0, "api")
        edited = GatewayConfig(db_path=fog.cfg.db_path, policy={"mode": "dry_run", "mean_factor": 2})
        again = fog.new_enforcer(edited)
        assert (again.settings.mode, again.settings.mean_factor, again.source) == ("dry_run", 2.0, "config")
    finally:
        fog.stop()


# --- the API -------------------------------------------------------------------------------------
class Services:
    def __init__(self, enforcer):
        self.enforcer = enforcer

    def policy(self):
        return self.enforcer


def test_the_policy_api_shows_settings_evaluation_and_blocks_and_refuses_bad_settings(fog):
    fog.usage(USAGE, silent=2)
    client = authorize(create_app(fog.cfg, fog.engine, Services(fog.enforcer)).test_client(), fog_token(fog.engine))
    r = client.put("/api/v1/policy", json={"mode": "enforce", "mean_factor": "high"})
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "mean_factor"
    r = client.put("/api/v1/policy", data="mode=enforce")
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "body"
    r = client.put("/api/v1/policy", json={"mode": "enforce", "mean_factor": 1.5})
    assert r.status_code == 200 and r.get_json()["settings"]["mean_factor"] == 1.5
    assert r.get_json()["source"] == "api"
    fog.enforcer.tick()
    body = client.get("/api/v1/policy?limit=2").get_json()
    assert body["evaluation"]["meters_total"] == 4 and len(body["evaluation"]["meters"]) == 2  # ml > 687
    assert body["evaluation"]["meters"][0] == {"meter": "m10", "ml": 1000, "litres": 1.0, "action": "blocked",
                                               "rules": [{"rule": "mean", "threshold_ml": 687}]}
    items = client.get("/api/v1/policy/blocks?active=true").get_json()["items"]
    assert {i["meter"] for i in items} == {"m07", "m08", "m09", "m10"}
    one = client.get("/api/v1/policy/blocks?meter=m08").get_json()["items"]
    assert one[0]["mean"] == {"source": "fog", "sum_ml": 5500, "meters": 12, "factor": 1.5}
    assert one[0]["rules"] == [{"rule": "mean", "threshold_ml": 687}] and one[0]["active"]
    page = client.get("/api/v1/policy/blocks?limit=3").get_json()
    rest = client.get(f"/api/v1/policy/blocks?limit=3&cursor={page['next']}").get_json()
    assert len(page["items"]) == 3 and len(rest["items"]) == 1 and rest["next"] is None
    assert client.get("/api/v1/policy/blocks?meter=BAD").get_json()["error"]["field"] == "meter"
    assert client.get("/api/v1/policy/blocks?active=maybe").get_json()["error"]["field"] == "active"
    assert json.loads(fog.blocks()["m10"]["rules"]) == [["mean", 687]]


def test_the_citys_settings_are_adopted_unless_the_fogs_own_changed_later(tmp_path):
    from aquafog.federation import CityPolicy
    fog = Fog(tmp_path, mode="dry_run")
    try:
        e = fog.enforcer
        start = e.updated_ms
        e.offer_city(CityPolicy(PolicySettings(mode="enforce", cap_m3=3.0), start + 10))
        e._adopt_city()
        assert (e.settings.mode, e.settings.cap_m3, e.source, e.updated_ms) == ("enforce", 3.0, "city", start + 10)
        assert e.summary() == {"mode": "enforce", "source": "city", "updated_ms": start + 10, "over": 0,
                               "blocked": 0}
        # the same retained message again (a reconnect), or an older one: nothing changes
        e.offer_city(CityPolicy(PolicySettings(mode="off"), start + 10))
        e._adopt_city()
        assert e.settings.mode == "enforce"
        fog.now = (start + 20) / 1000
        e.replace(PolicySettings(mode="dry_run"))  # the fog's operator, later
        e.offer_city(CityPolicy(PolicySettings(mode="off"), start + 15))
        e._adopt_city()
        assert (e.settings.mode, e.source) == ("dry_run", "api")
        assert (fog.new_enforcer().source, fog.new_enforcer().settings.mode) == ("api", "dry_run")  # stored
    finally:
        fog.stop()
