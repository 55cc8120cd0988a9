"""Turns decoded readings into stored rows and consumption, exactly once.

Rules (docs/design.md "How litres are counted"):
- Readings of a meter are ordered by (boot, seq); boots are numbered in the order the
  gateway first sees them (the meter sends strictly in order, so this is boot order).
- The consumption of a reading is its register minus the register of the reading just
  before it (its predecessor), and counts in the day and month of its own timestamp.
  The first reading ever stored for a meter is its baseline (consumption 0).
- Within one boot the register never goes down: a reading that would make it go down
  is rejected (`register_backwards`). Across boots a lower register is a counter reset
  (the meter lost its register): the reading becomes the new baseline and the event is
  counted (`register_reset`); nothing already counted is taken back.
- A reading already stored (same meter, boot, seq) with the same content is a
  duplicate: counted, acknowledged again, not stored twice. Same key with different
  content is rejected (`conflicting_duplicate`).
- A reading older than the newest one (a late arrival) is stored and the consumption
  between its neighbours is split at it, so totals never change by being late.

The per-meter state is owned by the writer thread; nothing here is thread-safe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from ..periods import Calendar
from ..protocol import Reading, Reject
from ..store.bulk import Bulk
from ..store.schema import consumption_daily, consumption_monthly, meter_boots, meters, readings

log = logging.getLogger(__name__)

# head tuple fields
H_IDX, H_SEQ, H_TS, H_PULSES, H_ML, H_FLOW, H_VALVE, H_BOOT = range(8)


@dataclass(eq=False)
class MeterState:
    pk: int
    meter: str
    boots: dict = field(default_factory=dict)     # boot id -> boot index
    boot_ids: dict = field(default_factory=dict)  # boot index -> boot id
    head: tuple | None = None                     # newest stored reading, see H_*
    total_ml: int = 0
    readings: int = 0
    last_seen_ms: int | None = None
    online: bool | None = None
    status_boot: str | None = None
    status_ms: int | None = None
    fw: str | None = None
    valve_desired: str | None = None
    valve_reported: str | None = None
    # when the meter last told its valve in a valve result or a birth (gateway ms): a reading
    # sampled before that (its ts) does not undo it; it may arrive after the result
    valve_told_ms: int = 0
    alarms: tuple[str, ...] | None = None  # of the latest health report; None until gateway/health.py loads it

    @property
    def next_boot_idx(self) -> int:
        return max(self.boot_ids, default=0) + 1


def _segment(prev: tuple | None, nxt: tuple) -> int:
    """Consumption from reading `prev` to reading `nxt` (tuples: boot_idx, seq, ts, pulses, ml)."""
    if prev is None:
        return 0
    if nxt[4] >= prev[4]:
        return nxt[4] - prev[4]
    return 0  # across boots only: a counter reset starts a new baseline


READING_COLUMNS = ["meter_pk", "boot_idx", "seq", "ts", "pulses", "ml", "flow_mlpm", "valve", "rx_ms"]
# the meter row, in the table's column order (how the compiled UPDATE wants them)
METER_COLUMNS = ["boot", "boot_idx", "seq", "ts", "pulses", "ml", "flow_mlpm", "valve_reported", "last_seen_ms",
                 "total_ml", "readings", "online", "status_boot", "status_ms", "fw"]


def _upsert_add(table, key: str):
    stmt = sqlite_insert(table)
    return stmt.on_conflict_do_update(index_elements=[table.c.meter, table.c[key]],
                                      set_={"ml": table.c.ml + stmt.excluded.ml})


class Statements:
    """The batch's hot statements, compiled once (see store/bulk.py)."""

    def __init__(self, dialect):
        self.readings = Bulk(readings.insert(), dialect, READING_COLUMNS)
        self.daily = Bulk(_upsert_add(consumption_daily, "day"), dialect, ["meter", "day", "ml"])
        self.monthly = Bulk(_upsert_add(consumption_monthly, "month"), dialect, ["meter", "month", "ml"])
        self.meters = Bulk(meters.update().where(meters.c.pk == bindparam("b_pk")), dialect,
                           METER_COLUMNS + ["b_pk"], column_keys=METER_COLUMNS)


class Accounting:
    def __init__(self, calendar: Calendar, dialect):
        self.calendar = calendar
        self.sql = Statements(dialect)
        self.states: dict[str, MeterState] = {}

    # ------------------------------------------------------------ loading

    def load(self, conn: Connection, meter_ids) -> None:
        """Bring the state of these meters into memory (those not already there)."""
        missing = [m for m in meter_ids if m not in self.states]
        for i in range(0, len(missing), 500):
            chunk = missing[i:i + 500]
            rows = conn.execute(select(meters).where(meters.c.meter.in_(chunk))).mappings().all()
            by_pk = {}
            for r in rows:
                st = MeterState(
                    pk=r["pk"], meter=r["meter"], total_ml=r["total_ml"] or 0, readings=r["readings"] or 0,
                    last_seen_ms=r["last_seen_ms"], online=r["online"], status_boot=r["status_boot"],
                    status_ms=r["status_ms"], fw=r["fw"], valve_desired=r["valve_desired"],
                    valve_reported=r["valve_reported"],
                )
                if r["boot_idx"] is not None:
                    st.head = (r["boot_idx"], r["seq"], r["ts"], r["pulses"], r["ml"], r["flow_mlpm"],
                               r["valve_reported"], r["boot"])
                by_pk[st.pk] = st
                self.states[st.meter] = st
            if by_pk:
                for b in conn.execute(select(meter_boots).where(meter_boots.c.meter_pk.in_(list(by_pk)))):
                    st = by_pk[b.meter_pk]
                    st.boots[b.boot] = b.boot_idx
                    st.boot_ids[b.boot_idx] = b.boot

    def forget(self, meter: str) -> None:
        self.states.pop(meter, None)

    # ------------------------------------------------------------ batch

    def begin_batch(self) -> "Batch":
        return Batch(self)


class Batch:
    """One ingest transaction's worth of readings."""

    def __init__(self, acc: Accounting):
        self.acc = acc
        self.cal = acc.calendar
        self.rows: list[dict] = []          # readings to insert
        self.rows_meters: set[int] = set()  # meters with rows not yet inserted
        self.new_boots: list[dict] = []
        self.daily: dict[tuple[str, int], int] = {}
        self.monthly: dict[tuple[str, int], int] = {}
        self.touched: dict[int, MeterState] = {}   # meters whose row must be rewritten
        self.acked: dict[int, MeterState] = {}     # meters to send a persistence ack
        self.answered: dict[int, tuple] = {}  # meters whose birth is answered at once: (state, the birth's conn)
        self.accepted = 0
        self.duplicates = 0
        self.late = 0
        self.resets = 0

    def _count(self, st: MeterState, ts: int, ml: int) -> None:
        day, month = self.cal.keys(ts)
        k = (st.meter, day)
        self.daily[k] = self.daily.get(k, 0) + ml
        k = (st.meter, month)
        self.monthly[k] = self.monthly.get(k, 0) + ml
        st.total_ml += ml

    def reading(self, conn: Connection, st: MeterState, r: Reading, rx_ms: int) -> Reject | None:
        idx = st.boots.get(r.boot)
        h = st.head
        if idx is None:
            idx = st.next_boot_idx
        if h is None or idx > h[H_IDX] or (idx == h[H_IDX] and r.seq > h[H_SEQ]):
            if h is not None and idx == h[H_IDX] and (r.ml < h[H_ML] or r.pulses < h[H_PULSES]):
                return _backwards(r, h[H_ML], h[H_PULSES], "the previous reading")
            if idx not in st.boot_ids:
                self._new_boot(st, idx, r.boot, rx_ms)
            seg = _segment(h and h[:5], (idx, r.seq, r.ts, r.pulses, r.ml))
            if h is not None and r.ml < h[H_ML]:
                self.resets += 1
                log.warning("meter %s: register reset at new boot %s (%d ml after %d ml); new baseline",
                            st.meter, r.boot, r.ml, h[H_ML])
            self._count(st, r.ts, seg)
            st.head = (idx, r.seq, r.ts, r.pulses, r.ml, r.flow_mlpm, r.valve, r.boot)
            if r.ts * 1000 > st.valve_told_ms:
                st.valve_reported = r.valve
            self._store(st, idx, r, rx_ms)
            self.accepted += 1
            return None
        return self._older(conn, st, idx, r, rx_ms)

    def _new_boot(self, st: MeterState, idx: int, boot: str, rx_ms: int) -> None:
        st.boots[boot] = idx
        st.boot_ids[idx] = boot
        self.new_boots.append({"meter_pk": st.pk, "boot_idx": idx, "boot": boot, "first_seen_ms": rx_ms})

    def _store(self, st: MeterState, idx: int, r: Reading, rx_ms: int) -> None:
        self.rows.append((st.pk, idx, r.seq, r.ts, r.pulses, r.ml, r.flow_mlpm, r.valve, rx_ms))
        self.rows_meters.add(st.pk)
        st.readings += 1
        st.last_seen_ms = rx_ms
        self.touched[st.pk] = st
        self.acked[st.pk] = st

    def flush_rows(self, conn: Connection) -> None:
        if self.rows:
            self.acc.sql.readings.run(conn, self.rows)
            self.rows = []
            self.rows_meters.clear()

    def _older(self, conn: Connection, st: MeterState, idx: int, r: Reading, rx_ms: int) -> Reject | None:
        """A reading at or before the head: a duplicate, or a late arrival."""
        if st.pk in self.rows_meters:
            self.flush_rows(conn)  # so the lookups below see this batch's rows too
        c = readings.c
        same = conn.execute(
            select(c.ts, c.pulses, c.ml, c.flow_mlpm, c.valve)
            .where(c.meter_pk == st.pk, c.boot_idx == idx, c.seq == r.seq)
        ).first()
        st.last_seen_ms = rx_ms
        self.touched[st.pk] = st
        if same is not None:
            if tuple(same) == (r.ts, r.pulses, r.ml, r.flow_mlpm, r.valve):
                self.duplicates += 1
                self.acked[st.pk] = st
                return None
            return Reject("conflicting_duplicate", None,
                          f"boot {r.boot} seq {r.seq} is already stored with different values")
        cols = (c.boot_idx, c.seq, c.ts, c.pulses, c.ml)
        pred = conn.execute(
            select(*cols).where(c.meter_pk == st.pk,
                                or_(c.boot_idx < idx, and_(c.boot_idx == idx, c.seq < r.seq)))
            .order_by(c.boot_idx.desc(), c.seq.desc()).limit(1)
        ).first()
        succ = conn.execute(
            select(*cols).where(c.meter_pk == st.pk,
                                or_(c.boot_idx > idx, and_(c.boot_idx == idx, c.seq > r.seq)))
            .order_by(c.boot_idx, c.seq).limit(1)
        ).first()
        if pred is not None and pred[0] == idx and (r.ml < pred[4] or r.pulses < pred[3]):
            return _backwards(r, pred[4], pred[3], "the reading before it")
        if succ is not None and succ[0] == idx and (r.ml > succ[4] or r.pulses > succ[3]):
            return Reject("register_backwards", "litres" if r.ml > succ[4] else "pulses",
                          f"late reading boot {r.boot} seq {r.seq} has a register above the reading after it")
        me = (idx, r.seq, r.ts, r.pulses, r.ml)
        if succ is not None:
            old = _segment(pred, succ)
            self._count(st, succ[2], _segment(me, succ) - old)
        self._count(st, r.ts, _segment(pred, me))
        self._store(st, idx, r, rx_ms)
        self.late += 1
        return None

    # ------------------------------------------------------------ commit

    def write(self, conn: Connection) -> None:
        """Everything this batch changed, inside the caller's transaction."""
        if self.new_boots:
            conn.execute(meter_boots.insert(), self.new_boots)
        self.flush_rows(conn)
        sql = self.acc.sql
        sql.daily.run(conn, [(m, k, v) for (m, k), v in self.daily.items()])
        sql.monthly.run(conn, [(m, k, v) for (m, k), v in self.monthly.items()])
        sql.meters.run(conn, [_meter_row(st) for st in self.touched.values()])


def _meter_row(st: MeterState) -> tuple:
    h = st.head or (None,) * 8
    return (h[H_BOOT], h[H_IDX], h[H_SEQ], h[H_TS], h[H_PULSES], h[H_ML], h[H_FLOW], st.valve_reported,
            st.last_seen_ms, st.total_ml, st.readings, st.online, st.status_boot, st.status_ms, st.fw, st.pk)


def _backwards(r: Reading, ml: int, pulses: int, what: str) -> Reject:
    fld = "litres" if r.ml < ml else "pulses"
    return Reject(
        "register_backwards", fld,
        f"boot {r.boot} seq {r.seq}: {fld} went down from {ml if fld == 'litres' else pulses} to "
        f"{r.ml if fld == 'litres' else r.pulses} within one boot",
    )
