"""The cloud's store: the newest partial of every (region, period, key), SQLite or PostgreSQL.

The cloud keeps no readings: a partial replaces the previous one of its fog and period
when its seq is higher (a late or repeated delivery never goes back in time).
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, create_engine, event, select
from sqlalchemy.engine import Connection, Engine

from ..accounts import add_tables
from ..federation import CityPolicy, Partial
from ..policy import PolicySettings, parse_settings

metadata = MetaData()

fog_partials = Table(
    "fog_partials", metadata,
    Column("region", String(32), primary_key=True),
    Column("period", String(8), primary_key=True),
    Column("key", String(10), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("meters", Integer, nullable=False),
    Column("sum_ml", BigInteger, nullable=False),
    Column("k", Integer, nullable=False),
    Column("top", Text, nullable=False),  # JSON [[meter, ml], ...]
    Column("received_ms", BigInteger, nullable=False),
)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def open_cloud_engine(url: str) -> Engine:
    """An engine on `url` (sqlite:///file or postgresql+psycopg://...), tables created."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


def _upsert(conn: Connection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(fog_partials)


def save_partial(conn: Connection, p: Partial, received_ms: int) -> bool:
    """Store p unless a partial with a higher or equal seq is there; True when stored."""
    row = {"region": p.region, "period": p.period, "key": p.key, "seq": p.seq, "ts_ms": p.ts_ms,
           "meters": p.meters, "sum_ml": p.sum_ml, "k": p.k, "top": json.dumps(p.top, separators=(",", ":")),
           "received_ms": received_ms}
    ins = _upsert(conn).values(**row)
    stmt = ins.on_conflict_do_update(
        index_elements=[fog_partials.c.region, fog_partials.c.period, fog_partials.c.key],
        set_={k: ins.excluded[k] for k in row if k not in ("region", "period", "key")},
        where=fog_partials.c.seq < ins.excluded.seq)
    return conn.execute(stmt).rowcount > 0


def load_partials(conn: Connection, period: str | None = None, key: str | None = None) -> list[Partial]:
    q = select(fog_partials)
    if period is not None:
        q = q.where(fog_partials.c.period == period, fog_partials.c.key == key)
    out = []
    for r in conn.execute(q).mappings():
        out.append(Partial(r["region"], r["period"], r["key"], r["seq"], r["ts_ms"], r["meters"], r["sum_ml"],
                           r["k"], tuple((m, ml) for m, ml in json.loads(r["top"]))))
    return out


# which fog owns which meter, from the fogs' directories
meter_directory = Table(
    "meter_directory", metadata,
    Column("meter", String(32), primary_key=True),
    Column("region", String(32), nullable=False, index=True),
)

# valve commands routed to a fog; status is the fog ledger's, as the fog reports it
cloud_commands = Table(
    "cloud_commands", metadata,
    Column("id", String(64), primary_key=True),
    Column("meter", String(32), nullable=False),
    Column("region", String(32), nullable=False),
    Column("state", String(8), nullable=False),
    Column("reason", Text),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
)


def replace_region_directory(conn: Connection, region: str, meters: list[str]) -> None:
    """The region's meters are exactly `meters` (a meter that moved fogs moves with it)."""
    conn.execute(meter_directory.delete().where(meter_directory.c.region == region))
    for i in range(0, len(meters), 5000):  # SQLite takes at most 32766 parameters a statement
        part = meters[i:i + 5000]
        conn.execute(meter_directory.delete().where(meter_directory.c.meter.in_(part)))
        conn.execute(meter_directory.insert(), [{"meter": m, "region": region} for m in part])


def load_directory(conn: Connection) -> dict[str, str]:
    return dict(conn.execute(select(meter_directory.c.meter, meter_directory.c.region)).all())


# the city's policy settings (policy.py), which the cloud sends to every fog
city_policy = Table(
    "city_policy", metadata,
    Column("id", Integer, primary_key=True),  # always 1
    Column("settings", Text, nullable=False),  # JSON
    Column("ts_ms", BigInteger, nullable=False),
)


def save_city_policy(conn: Connection, p: CityPolicy) -> None:
    row = {"settings": json.dumps(p.settings.to_json()), "ts_ms": p.ts_ms}
    if conn.execute(city_policy.update().where(city_policy.c.id == 1).values(**row)).rowcount == 0:
        conn.execute(city_policy.insert().values(id=1, **row))


def load_city_policy(conn: Connection) -> CityPolicy | None:
    r = conn.execute(select(city_policy).where(city_policy.c.id == 1)).mappings().first()
    if r is None:
        return None
    parsed = parse_settings(json.loads(r["settings"]))
    return CityPolicy(parsed, r["ts_ms"]) if isinstance(parsed, PolicySettings) else None


# users, API tokens, the session key (accounts.py): the same tables as a fog's
ACCOUNTS = add_tables(metadata)
