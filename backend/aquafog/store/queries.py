"""Read-side queries for the API. None of them scans the readings table except
`readings_page` and `consumption_segments`, which read one meter's readings through its
time index."""

from __future__ import annotations

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from .schema import (commands, consumption_daily, consumption_monthly, ingest_counters, ingest_rejects, meter_alarms,
                     meter_boots, meter_health, meters, readings)

METER_STATUSES = ("online", "offline", "never_seen")


def get_meter(conn: Connection, meter: str):
    return conn.execute(select(meters).where(meters.c.meter == meter)).mappings().first()


def list_meters(conn: Connection, status: str | None, valve: str | None, after: str | None, limit: int,
                alarm: str | None = None):
    if alarm:  # through the (alarm, meter) index: reads only the meters that have it
        a = meter_alarms.c
        q = (select(meters).select_from(meter_alarms.join(meters, meters.c.meter == a.meter))
             .where(a.alarm == alarm).order_by(a.meter).limit(limit))
        if after:
            q = q.where(a.meter > after)
            after = None
    else:
        q = select(meters).order_by(meters.c.meter).limit(limit)
    if status == "online":
        q = q.where(meters.c.online.is_(True))
    elif status == "offline":
        q = q.where(meters.c.online.is_(False))
    elif status == "never_seen":
        q = q.where(meters.c.online.is_(None), meters.c.last_seen_ms.is_(None))
    if valve:
        q = q.where(meters.c.valve_reported == valve)
    if after:
        q = q.where(meters.c.meter > after)
    return conn.execute(q).mappings().all()


def meter_health_of(conn: Connection, meter_pk: int):
    return conn.execute(select(meter_health).where(meter_health.c.meter_pk == meter_pk)).mappings().first()


def consumption(conn: Connection, meter: str, day: int, month: int) -> tuple[int, int]:
    d = conn.execute(select(consumption_daily.c.ml).where(consumption_daily.c.meter == meter,
                                                          consumption_daily.c.day == day)).scalar()
    m = conn.execute(select(consumption_monthly.c.ml).where(consumption_monthly.c.meter == meter,
                                                            consumption_monthly.c.month == month)).scalar()
    return d or 0, m or 0


def pending_command(conn: Connection, meter_pk: int):
    return conn.execute(
        select(commands.c.id).where(commands.c.meter_pk == meter_pk, commands.c.status.in_(("queued", "sent")))
        .order_by(commands.c.created_ms.desc()).limit(1)
    ).scalar()


def readings_page(conn: Connection, meter_pk: int, t_from: int, t_to: int, after: tuple | None, limit: int):
    c = readings.c
    q = (select(c.boot_idx, c.seq, c.ts, c.pulses, c.ml, c.flow_mlpm, c.valve, c.rx_ms)
         .where(c.meter_pk == meter_pk, c.ts >= t_from, c.ts < t_to)
         .order_by(c.ts, c.boot_idx, c.seq).limit(limit))
    if after is not None:
        ts, idx, seq = after
        q = q.where(or_(c.ts > ts, and_(c.ts == ts, or_(c.boot_idx > idx, and_(c.boot_idx == idx, c.seq > seq)))))
    return conn.execute(q).all()


def boot_ids(conn: Connection, meter_pk: int) -> dict[int, str]:
    return dict(conn.execute(select(meter_boots.c.boot_idx, meter_boots.c.boot)
                             .where(meter_boots.c.meter_pk == meter_pk)).all())


def ranking_day(conn: Connection, day: int, n: int):
    t = consumption_daily
    return conn.execute(select(t.c.meter, t.c.ml).where(t.c.day == day)
                        .order_by(t.c.ml.desc(), t.c.meter).limit(n)).all()


def ranking_month(conn: Connection, month: int, n: int):
    t = consumption_monthly
    return conn.execute(select(t.c.meter, t.c.ml).where(t.c.month == month)
                        .order_by(t.c.ml.desc(), t.c.meter).limit(n)).all()


def ranking_range(conn: Connection, months: list[int], day_ranges: list[tuple[int, int]], n: int):
    """Top n over whole months plus loose days (day_ranges are inclusive YYYYMMDD pairs)."""
    parts = []
    if months:
        m = consumption_monthly
        parts.append(select(m.c.meter, m.c.ml).where(m.c.month.in_(months)))
    for lo, hi in day_ranges:
        d = consumption_daily
        parts.append(select(d.c.meter, d.c.ml).where(d.c.day.between(lo, hi)))
    if not parts:
        return []
    u = parts[0].union_all(*parts[1:]).subquery() if len(parts) > 1 else parts[0].subquery()
    total = func.sum(u.c.ml).label("ml")
    return conn.execute(select(u.c.meter, total).group_by(u.c.meter)
                        .order_by(total.desc(), u.c.meter).limit(n)).all()


def get_command(conn: Connection, command_id: str):
    return conn.execute(
        select(commands, meters.c.meter).join(meters, meters.c.pk == commands.c.meter_pk)
        .where(commands.c.id == command_id)
    ).mappings().first()


def meter_commands(conn: Connection, meter_pk: int, limit: int):
    return conn.execute(
        select(commands, meters.c.meter).join(meters, meters.c.pk == commands.c.meter_pk)
        .where(commands.c.meter_pk == meter_pk).order_by(commands.c.created_ms.desc()).limit(limit)
    ).mappings().all()


def ingest_counts(conn: Connection):
    return conn.execute(select(ingest_counters).order_by(ingest_counters.c.reason, ingest_counters.c.field)).all()


def recent_rejects(conn: Connection, limit: int):
    return conn.execute(select(ingest_rejects).order_by(ingest_rejects.c.id.desc()).limit(limit)).mappings().all()


def meter_count(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(meters)).scalar()


def daily_series(conn: Connection, meter: str, lo: int, hi: int) -> dict[int, int]:
    """A meter's consumption per day, days lo..hi (YYYYMMDD, inclusive), through the primary key."""
    t = consumption_daily
    return dict(conn.execute(select(t.c.day, t.c.ml).where(t.c.meter == meter, t.c.day.between(lo, hi))).all())


def monthly_series(conn: Connection, meter: str, lo: int, hi: int) -> dict[int, int]:
    """A meter's consumption per month, months lo..hi (YYYYMM, inclusive), through the primary key."""
    t = consumption_monthly
    return dict(conn.execute(select(t.c.month, t.c.ml).where(t.c.meter == meter, t.c.month.between(lo, hi))).all())


def consumption_segments(conn: Connection, meter_pk: int, t_from: int, t_to: int):
    """(ts, ml, predecessor's ml) of a meter's readings with t_from <= ts < t_to: the readings
    through readings_by_time, each predecessor (the reading just before it by boot, then seq,
    wherever its time) by two seeks of the primary key: the same boot's previous seq, else the
    previous boot's last reading. A row-value comparison here makes SQLite walk the meter's later
    readings for each one (minutes for a day of 10 s readings; this takes ~30 ms)."""
    r, p, q = readings.alias("r"), readings.alias("p"), readings.alias("q")
    same_boot = (select(p.c.ml).where(p.c.meter_pk == r.c.meter_pk, p.c.boot_idx == r.c.boot_idx, p.c.seq < r.c.seq)
                 .order_by(p.c.seq.desc()).limit(1).scalar_subquery())
    boot_before = (select(q.c.ml).where(q.c.meter_pk == r.c.meter_pk, q.c.boot_idx < r.c.boot_idx)
                   .order_by(q.c.boot_idx.desc(), q.c.seq.desc()).limit(1).scalar_subquery())
    return conn.execute(select(r.c.ts, r.c.ml, func.coalesce(same_boot, boot_before))
                        .where(r.c.meter_pk == meter_pk, r.c.ts >= t_from, r.c.ts < t_to)).all()
