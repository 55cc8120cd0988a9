"""Opening the store (store/engine.py): a new file gets the current schema and says its
version; a file written by the previous release is upgraded in place, keeping its data;
a file from a newer release is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from aquafog.api import create_app
from aquafog.config import GatewayConfig
from aquafog.gateway.accounting import Accounting
from aquafog.gateway.health import HealthBatch
from aquafog.periods import Calendar
from aquafog.protocol import Health
from aquafog.store.engine import open_engine
from aquafog.store.schema import SCHEMA_VERSION, meters, metadata

from authz import authorize, fog_token

V1_SCHEMA = Path(__file__).parent / "data" / "store_schema_v1.sql"


def user_version(path) -> int:
    with sqlite3.connect(path) as con:
        return con.execute("PRAGMA user_version").fetchone()[0]


def v1_database(path: Path) -> None:
    """A database as the first release left it: its schema, a meter with a reading and
    an applied command, user_version never set."""
    with sqlite3.connect(path) as con:
        con.executescript(V1_SCHEMA.read_text())
        con.execute("INSERT INTO meters (pk, meter, created_ms, boot, boot_idx, seq, ts, pulses, ml, flow_mlpm, "
                    "valve_reported, last_seen_ms, total_ml, readings, online, valve_desired) "
                    "VALUES (1, 'm1', 1, 'aaaaaaaa', 1, 0, 1763999940, 450, 1000, 0, 'open', 2, 0, 1, 1, 'open')")
        con.execute("INSERT INTO meter_boots VALUES (1, 1, 'aaaaaaaa', 2)")
        con.execute("INSERT INTO readings VALUES (1, 1, 0, 1763999940, 450, 1000, 0, 'open', 2)")
        con.execute("INSERT INTO commands VALUES "
                    "('c-1', 1, 'valve', 'open', NULL, 'api', 'applied', NULL, 1, 1, 1, 1, 9)")


def test_a_new_store_has_every_table_and_says_its_schema_version(tmp_path):
    path = tmp_path / "new.db"
    engine = open_engine(path)
    assert set(inspect(engine).get_table_names()) == set(metadata.tables)
    engine.dispose()
    assert user_version(path) == SCHEMA_VERSION == 5


def test_a_store_of_the_previous_release_is_upgraded_in_place_and_keeps_its_data(tmp_path):
    path = tmp_path / "v1.db"
    v1_database(path)
    old = open_engine(path, create=False)
    assert user_version(path) == 0 and "meter_health" not in inspect(old).get_table_names()
    old.dispose()

    engine = open_engine(path)
    assert set(inspect(engine).get_table_names()) == set(metadata.tables)
    assert user_version(path) == SCHEMA_VERSION
    with engine.connect() as conn:
        m = conn.execute(select(meters)).mappings().one()
    assert (m["meter"], m["ml"], m["valve_desired"]) == ("m1", 1000, "open")

    # the new tables work on the upgraded file: store a health report, read it back through the API
    acc = Accounting(Calendar("UTC"), engine.dialect)
    with engine.begin() as conn:
        acc.load(conn, ["m1"])
        hb = HealthBatch()
        hb.add(acc.states["m1"], Health("m1", "aaaaaaaa", "0.2.0", 60, "power_on", None, 1000, 0, 0, "ntp",
                                        ("leak",)), 1764000000000)
        hb.write(conn)
    client = authorize(create_app(GatewayConfig(db_path=str(path)), engine, services=None).test_client(),
                       fog_token(engine))
    body = client.get("/api/v1/meters/m1").get_json()
    assert body["health"]["alarms"] == ["leak"] and body["register"]["litres"] == 1.0
    assert [i["meter"] for i in client.get("/api/v1/meters?alarm=leak").get_json()["items"]] == ["m1"]
    assert [(a["kind"], a["meter"]) for a in client.get("/api/v1/alerts").get_json()["items"]] == [("leak", "m1")]
    assert client.get("/api/v1/meters/m1/commands").get_json()["items"][0]["id"] == "c-1"
    engine.dispose()

    engine = open_engine(path)  # opening again changes nothing
    assert user_version(path) == SCHEMA_VERSION
    engine.dispose()


def test_a_store_from_a_newer_release_is_refused_not_misread(tmp_path):
    path = tmp_path / "future.db"
    open_engine(path).dispose()
    with sqlite3.connect(path) as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match=f"schema {SCHEMA_VERSION + 1}, newer than the {SCHEMA_VERSION}"):
        open_engine(path)
