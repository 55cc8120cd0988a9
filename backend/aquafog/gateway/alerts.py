"""Alerts raised by the gateway, for operators to see and acknowledge (docs/operate.md "Alerts").

Kinds, and what raises and clears each:
- `leak`, `burst`, `valve_fault`: a meter's health report starts listing the alarm (raised in
  the ingest transaction that stores the report, health.py), and stops listing it (cleared);
- `offline`: a meter offline (last will) for longer than `offline_alert_s`; cleared when it
  is back online. Found by the monitor's sweep, so a meter that was already offline when the
  gateway started is found too;
- `policy_block`: each automatic block by the policy enforcer (enforcer.py), with its rule and
  figures; cleared when the block ends (period over, exempted, or an operator's command).

At most one active (not cleared) alert per (meter, kind): raising one that is active changes
nothing, clearing one that is not does nothing. An operator acknowledges an alert (acked_ms,
acked_by), active or cleared; acknowledging again changes nothing. Cleared and acknowledged
alerts are kept KEEP_DAYS; at most KEEP_CLEARED cleared ones are kept in all.

Every store change runs on the writer thread (a writer.call, or inside the writer's own
ingest transaction); the store functions below take its connection and collect the live
events (`alert`, docs/http-api.md "Live events"), which go out once the transaction has committed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from ..api.serialize import iso_ms
from ..protocol import ALARMS
from ..store.schema import alerts, meter_alarms, meters

log = logging.getLogger("aquafog.alerts")

KINDS = (*ALARMS, "offline", "policy_block")
KEEP_DAYS = 90           # cleared and acknowledged alerts are deleted this long after they cleared
KEEP_CLEARED = 10_000    # and at most this many cleared alerts are kept (the oldest go first)
TICK_S = 1.0             # the monitor's loop: back-online meters are cleared within about this
PRUNE_EVERY_S = 3600.0
CHUNK = 500              # meters per writer transaction


@dataclass
class Changes:
    """The alert changes of one transaction: live events to send once it commits."""

    events: list = field(default_factory=list)  # (meter, data)

    def add(self, row, change: str) -> None:
        self.events.append((row["meter"], {**serialize(row), "change": change}))


def serialize(row) -> dict:
    return {"id": row["id"], "kind": row["kind"], "meter": row["meter"], "message": row["message"],
            "raised_ms": row["raised_ms"], "cleared_ms": row["cleared_ms"], "acked_ms": row["acked_ms"],
            "acked_by": row["acked_by"], "details": json.loads(row["details"])}


def _active(conn: Connection, meter: str, kind: str):
    return conn.execute(select(alerts).where(alerts.c.kind == kind, alerts.c.meter == meter,
                                             alerts.c.cleared_ms.is_(None))).mappings().first()


def raise_alert(conn: Connection, meter: str, kind: str, message: str, details: dict, now_ms: int,
                changes: Changes) -> dict | None:
    """A new active alert; None if one of this meter and kind is active already."""
    if _active(conn, meter, kind) is not None:
        return None
    values = {"meter": meter, "kind": kind, "message": message, "raised_ms": now_ms, "cleared_ms": None,
              "acked_ms": None, "acked_by": None, "details": json.dumps(details, separators=(",", ":"))}
    row = {"id": conn.execute(alerts.insert().values(**values)).inserted_primary_key[0], **values}
    changes.add(row, "raised")
    log.warning("alert %s raised for meter %s: %s", kind, meter, message)
    return row


def clear_alert(conn: Connection, meter: str, kind: str, now_ms: int, changes: Changes,
                **cleared) -> dict | None:
    """Clear the meter's active alert of this kind (None if there is none); `cleared` (the
    figures at the clear) goes into its details under "cleared"."""
    row = _active(conn, meter, kind)
    if row is None:
        return None
    details = {**json.loads(row["details"]), "cleared": cleared}
    text = json.dumps(details, separators=(",", ":"))
    conn.execute(update(alerts).where(alerts.c.id == row["id"]).values(cleared_ms=now_ms, details=text))
    row = {**row, "cleared_ms": now_ms, "details": text}
    changes.add(row, "cleared")
    log.info("alert %s of meter %s cleared (%s)", kind, meter, ", ".join(f"{k}={v}" for k, v in cleared.items()))
    return row


def ack_alert(conn: Connection, alert_id: int, username: str, now_ms: int, changes: Changes) -> dict | None:
    """Acknowledge an alert: the first acknowledgement is kept. None if there is no such alert."""
    row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().first()
    if row is None or row["acked_ms"] is not None:
        return None if row is None else dict(row)
    conn.execute(update(alerts).where(alerts.c.id == alert_id).values(acked_ms=now_ms, acked_by=username))
    row = {**row, "acked_ms": now_ms, "acked_by": username}
    changes.add(row, "acked")
    log.info("alert %d (%s of meter %s) acknowledged by %s", alert_id, row["kind"], row["meter"], username)
    return row


def prune(conn: Connection, now_ms: int) -> int:
    """Delete cleared and acknowledged alerts older than KEEP_DAYS, and the oldest cleared ones
    beyond KEEP_CLEARED; returns how many went."""
    a = alerts.c
    n = conn.execute(delete(alerts).where(a.cleared_ms.is_not(None), a.acked_ms.is_not(None),
                                          a.cleared_ms < now_ms - KEEP_DAYS * 86_400_000)).rowcount
    edge = conn.execute(select(a.id).where(a.cleared_ms.is_not(None)).order_by(a.id.desc())
                        .offset(KEEP_CLEARED).limit(1)).scalar()
    if edge is not None:
        n += conn.execute(delete(alerts).where(a.cleared_ms.is_not(None), a.id <= edge)).rowcount
    return n


def publish(live, changes: Changes) -> None:
    """After the commit: each change as an `alert` event on its meter's live stream (`live`:
    the writer's hub, gateway/live.py; None without one)."""
    if live is None:
        return
    for meter, data in changes.events:
        live.publish(meter, "alert", data)
    changes.events.clear()


# --- messages: what happened and what to do ----------------------------------------------------
ALARM_MESSAGES = {
    "leak": ("meter {m} reports a leak: water has not stopped flowing for its leak window (leak_hours). "
             "Check the premises for a running tap, cistern or hidden pipe; close the valve "
             "(POST /api/v1/meters/{m}/valve) if the water must stop. Cleared when the meter stops reporting it."),
    "burst": ("meter {m} reports a burst: flow above its burst_lpm for burst_minutes, and the meter closes its "
              "own valve (its commands show it). Find and repair the burst before re-opening the valve "
              "(POST /api/v1/meters/{m}/valve). Cleared when the meter stops reporting it."),
    "valve_fault": ("meter {m} reports a valve fault: the valve's position feedback disagrees with the state it "
                    "was commanded to, so valve commands may not take effect. Send a technician to check the "
                    "valve and its wiring. Cleared when the meter stops reporting it."),
}


def alarm_raised(conn: Connection, meter: str, alarm: str, details: dict, now_ms: int,
                 changes: Changes) -> dict | None:
    return raise_alert(conn, meter, alarm, ALARM_MESSAGES[alarm].format(m=meter), details, now_ms, changes)


def offline_message(meter: str, since_ms: int, offline_alert_s: int) -> str:
    return (f"meter {meter} has been offline since {iso_ms(since_ms)} (its last will; more than {offline_alert_s} s): "
            "check its power supply and Wi-Fi (the last rssi is in GET /api/v1/meters/" + meter + "). It keeps "
            "its readings and sends them when it reconnects. Cleared when it is back online.")


def block_message(meter: str, reason: str, period: str, command_id: str) -> str:
    return (f"meter {meter} was blocked by the consumption policy ({reason}); its valve is being closed "
            f"(command {command_id}) and re-opens when the {period} is over. To re-open it now, send a valve "
            f"command (POST /api/v1/meters/{meter}/valve); to stop blocking it, exempt it in the policy settings. "
            "Cleared when the block ends.")


# --- the monitor ---------------------------------------------------------------------------------
class AlertMonitor:
    """Raises and clears `offline` alerts, brings the alarm alerts in line with the meters' stored
    alarms at start (a store from before alerts, or alarms changed while the gateway was down),
    prunes old alerts, and acknowledges alerts for the API. Reads the store on its own thread;
    writes only through the writer, and only when something changes."""

    def __init__(self, cfg, engine, writer, clock=time.time):
        self.cfg = cfg
        self.engine = engine
        self.writer = writer
        self.clock = clock
        self.offline_ms = cfg.offline_alert_s * 1000
        self.scan_every_s = min(30.0, max(TICK_S, cfg.offline_alert_s / 10))
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _write(self, fn):
        """fn(conn, changes) on the writer thread; its live events go out after the commit."""
        changes = Changes()
        result = self.writer.call(lambda conn: (fn(conn, changes), []))
        publish(self.writer.live, changes)
        return result

    # --- API ---------------------------------------------------------------------------------
    def ack(self, alert_id: int, username: str) -> dict | None:
        row = self._write(lambda conn, ch: ack_alert(conn, alert_id, username, self._now_ms(), ch))
        return None if row is None else serialize(row)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "AlertMonitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        next_scan = next_prune = 0.0
        reconciled = False
        while not self._stop.is_set():
            try:
                if not reconciled:
                    self.reconcile_alarms()
                    reconciled = True
                now = time.monotonic()
                if now >= next_scan:
                    self.raise_offline()
                    next_scan = now + self.scan_every_s
                self.clear_online()
                if now >= next_prune:
                    self.prune()
                    next_prune = now + PRUNE_EVERY_S
                self.last_error = None
            except Exception as exc:  # the store busy, the writer stopping: the next round
                if self.last_error is None:
                    log.exception("alert round failed; retrying every %.0f s", TICK_S)
                self.last_error = f"alert round failed: {exc}"
            self._stop.wait(TICK_S)

    # --- one round (each also callable on its own, as the tests do) -----------------------------
    def raise_offline(self) -> int:
        """Meters offline for longer than offline_alert_s without an active offline alert."""
        cutoff = self._now_ms() - self.offline_ms
        m, a = meters.c, alerts.c
        has_alert = select(a.meter).where(a.kind == "offline", a.cleared_ms.is_(None))
        with self.engine.connect() as conn:  # read-only first: most rounds find nobody
            due = list(conn.execute(select(m.meter).where(m.online.is_(False), m.status_ms <= cutoff,
                                                          m.meter.not_in(has_alert))).scalars())
        raised = 0
        for i in range(0, len(due), CHUNK):
            raised += self._write(lambda conn, ch, part=due[i:i + CHUNK]: self._raise_offline(conn, ch, part))
        return raised

    def _raise_offline(self, conn, changes: Changes, part: list[str]) -> int:
        now = self._now_ms()
        m = meters.c
        n = 0
        for r in conn.execute(select(m.meter, m.status_ms, m.status_boot, m.last_seen_ms).where(
                m.meter.in_(part), m.online.is_(False), m.status_ms <= now - self.offline_ms)).mappings():
            details = {"offline_since_ms": r["status_ms"], "boot": r["status_boot"],
                       "last_seen_ms": r["last_seen_ms"], "offline_alert_s": self.cfg.offline_alert_s}
            n += raise_alert(conn, r["meter"], "offline", offline_message(r["meter"], r["status_ms"],
                             self.cfg.offline_alert_s), details, now, changes) is not None
        return n

    def clear_online(self) -> int:
        """Active offline alerts of meters that are back online."""
        a, m = alerts.c, meters.c
        q = (select(a.meter).join(meters, m.meter == a.meter)
             .where(a.kind == "offline", a.cleared_ms.is_(None), m.online.is_(True)))
        with self.engine.connect() as conn:
            back = list(conn.execute(q).scalars())
        if not back:
            return 0

        def fn(conn, changes):
            now = self._now_ms()
            n = 0
            for r in conn.execute(select(a.meter, m.status_ms).join(meters, m.meter == a.meter).where(
                    a.kind == "offline", a.cleared_ms.is_(None), a.meter.in_(back), m.online.is_(True))).mappings():
                # (a meter offline again meanwhile is not here: the same alert goes on)
                n += clear_alert(conn, r["meter"], "offline", now, changes, why="back online",
                                 online_since_ms=r["status_ms"]) is not None
            return n
        return self._write(fn)

    def reconcile_alarms(self) -> int:
        """Alarm alerts to match the alarms the meters' latest reports list (meter_alarms)."""
        def fn(conn, changes):
            now = self._now_ms()
            listed = {(r.alarm, r.meter): r.since_ms for r in conn.execute(select(meter_alarms))}
            active = {(k, m) for k, m in conn.execute(select(alerts.c.kind, alerts.c.meter).where(
                alerts.c.kind.in_(ALARMS), alerts.c.cleared_ms.is_(None)))}
            n = 0
            for (alarm, meter), since in listed.items():
                if (alarm, meter) not in active:
                    n += alarm_raised(conn, meter, alarm, {"alarm": alarm, "reported_since_ms": since,
                                                           "found": "at gateway start"}, now, changes) is not None
            for alarm, meter in active - set(listed):
                n += clear_alert(conn, meter, alarm, now, changes,
                                 why="the meter's latest health report does not list it (found at gateway start)"
                                 ) is not None
            return n
        return self._write(fn)

    def prune(self) -> int:
        return self._write(lambda conn, ch: prune(conn, self._now_ms()))
