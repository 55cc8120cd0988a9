"""Meter health telemetry (tele/health): the latest report of each meter, and its alarms.

A batch keeps the last report of each meter it holds and writes them with one upsert
(INSERT ... ON CONFLICT DO UPDATE), in the same transaction as the readings. The alarms
of a meter's latest report are also kept one row per (alarm, meter) in meter_alarms,
the index behind GET /meters?alarm=; those rows change only when the meter's alarms
change, and each change is logged at WARNING once the batch is committed. A change also
raises or clears the meter's alarm alert (alerts.py) in the same transaction; its live
event goes out with the log line, after the commit.

Two reports of one meter in one batch: the last one counts (alarms are compared between
what was stored before the batch and what is stored after it).
"""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from ..protocol import Health
from ..store.schema import meter_alarms, meter_health
from .accounting import MeterState
from .alerts import Changes, alarm_raised, clear_alert, publish

log = logging.getLogger("aquafog.health")


def _upsert():
    stmt = sqlite_insert(meter_health)
    return stmt.on_conflict_do_update(
        index_elements=[meter_health.c.meter_pk],
        set_={c.name: stmt.excluded[c.name] for c in meter_health.c if c.name != "meter_pk"},
    )


UPSERT = _upsert()
DELETE_ALARM = meter_alarms.delete().where(meter_alarms.c.alarm == bindparam("b_alarm"),
                                           meter_alarms.c.meter == bindparam("b_meter"))


def alarms_text(alarms: tuple[str, ...]) -> str:
    return ",".join(alarms)


def parse_alarms(text: str | None) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


class HealthBatch:
    """One ingest transaction's worth of health reports."""

    def __init__(self):
        self.latest: dict[int, tuple[MeterState, Health, int]] = {}  # meter pk -> (state, report, rx_ms)
        self.changes: list[tuple[str, tuple, tuple]] = []           # (meter, alarms before, after)
        self.alerts = Changes()                                      # alert events, sent after the commit

    def add(self, st: MeterState, h: Health, rx_ms: int) -> None:
        self.latest[st.pk] = (st, h, rx_ms)

    def write(self, conn: Connection) -> None:
        if not self.latest:
            return
        self._load_alarms(conn)
        rows, raised, cleared = [], [], []
        for st, h, rx_ms in self.latest.values():
            before, after = st.alarms, h.alarms
            if after != before:
                up = [a for a in after if a not in before]
                down = [a for a in before if a not in after]
                raised += [{"alarm": a, "meter": st.meter, "since_ms": rx_ms} for a in up]
                cleared += [{"b_alarm": a, "b_meter": st.meter} for a in down]
                for a in up:
                    alarm_raised(conn, st.meter, a, {"alarm": a, "alarms": list(after), "boot": h.boot, "fw": h.fw,
                                                     "uptime_s": h.uptime_s, "received_ms": rx_ms}, rx_ms, self.alerts)
                for a in down:
                    clear_alert(conn, st.meter, a, rx_ms, self.alerts, why="the meter's health report no longer "
                                "lists it", alarms=list(after), received_ms=rx_ms)
                self.changes.append((st.meter, before, after))
                st.alarms = after
            rows.append({
                "meter_pk": st.pk, "received_ms": rx_ms, "boot": h.boot, "fw": h.fw, "uptime_s": h.uptime_s,
                "reset": h.reset, "rssi": h.rssi, "heap_free": h.heap_free, "dropped": h.dropped,
                "buffer": h.buffer, "clock": h.clock, "alarms": alarms_text(h.alarms),
            })
        conn.execute(UPSERT, rows)
        if cleared:
            conn.execute(DELETE_ALARM, cleared)
        if raised:
            conn.execute(meter_alarms.insert(), raised)

    def _load_alarms(self, conn: Connection) -> None:
        """The stored alarms of meters whose state does not know them yet (once per
        meter and process: MeterState.alarms is None until then)."""
        unknown = [pk for pk, (st, _, _) in self.latest.items() if st.alarms is None]
        for i in range(0, len(unknown), 500):
            chunk = unknown[i:i + 500]
            stored = dict(conn.execute(select(meter_health.c.meter_pk, meter_health.c.alarms)
                                       .where(meter_health.c.meter_pk.in_(chunk))).all())
            for pk in chunk:
                self.latest[pk][0].alarms = parse_alarms(stored.get(pk))

    def log_changes(self, live=None) -> None:
        """After the commit: log the alarm changes, and send their alert events to `live`."""
        publish(live, self.alerts)
        for meter, before, after in self.changes:
            raised = [a for a in after if a not in before]
            cleared = [a for a in before if a not in after]
            log.warning("meter %s alarms: %s (%s)", meter, ", ".join(after) or "none",
                        "; ".join(part for part in (raised and "raised " + ", ".join(raised),
                                                    cleared and "cleared " + ", ".join(cleared)) if part))
