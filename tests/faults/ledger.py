"""Counting litres and readings for the fault suite: what the meters sent (the emulator's
record and ground truth) against what the gateway persisted (read straight from its
SQLite file, read-only).

A fault passes when every meter's persisted consumption equals its ground truth, every
reading it sent is stored, and nothing is counted twice.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stored:
    """What one gateway's store holds for one meter."""
    keys: set[tuple[str, int]]   # (boot, seq) of every stored reading
    total_ml: int                 # meters.total_ml: consumption counted so far
    daily_ml: int                 # sum of consumption_daily: the same litres, by day
    monthly_ml: int


def read_store(db_path: Path, meter_ids) -> dict[str, Stored]:
    con = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True, timeout=30)
    try:
        out = {}
        for mid in meter_ids:
            row = con.execute("SELECT pk, total_ml FROM meters WHERE meter = ?", (mid,)).fetchone()
            if row is None:
                out[mid] = Stored(set(), 0, 0, 0)
                continue
            pk, total = row
            keys = {(boot, seq) for boot, seq in con.execute(
                "SELECT b.boot, r.seq FROM readings r JOIN meter_boots b"
                " ON b.meter_pk = r.meter_pk AND b.boot_idx = r.boot_idx WHERE r.meter_pk = ?", (pk,))}
            daily = con.execute("SELECT COALESCE(SUM(ml), 0) FROM consumption_daily WHERE meter = ?", (mid,)).fetchone()[0]
            monthly = con.execute("SELECT COALESCE(SUM(ml), 0) FROM consumption_monthly WHERE meter = ?",
                                  (mid,)).fetchone()[0]
            out[mid] = Stored(keys, total or 0, daily, monthly)
        return out
    finally:
        con.close()


@dataclass
class Tally:
    """One fault's outcome over all its meters (a row of the printed table)."""
    fault: str
    meters: int = 0
    sent: int = 0            # distinct readings the meters published ((boot, seq))
    deliveries: int = 0      # publishes, resends and injected copies included
    persisted: int = 0       # of those, stored by the gateway
    lost: int = 0            # sent, never stored
    truth_ml: int = 0        # consumption by ground truth (the sensor's pulses while powered)
    persisted_ml: int = 0
    lost_ml: int = 0         # truth - persisted where positive
    double_ml: int = 0       # persisted - truth where positive: counted twice
    notes: list[str] = field(default_factory=list)

    @property
    def duplicated(self) -> int:
        """Deliveries beyond the first of each reading (the duplicates the gateway absorbed)."""
        return self.deliveries - self.sent

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.lost_ml == 0 and self.double_ml == 0 and self.sent > 0


def tally(fault: str, fleet, db_path: Path, meter_ids=None, *, extra_deliveries: int = 0,
          truth: dict | None = None) -> Tally:
    """Compare a quiesced fleet with the gateway's store. A meter's expected consumption is
    its ground-truth register now minus the first reading it ever sent (the gateway's
    baseline: the first reading of a meter counts 0)."""
    ids = list(meter_ids or [m.id for m in fleet.meters])
    truth = truth or fleet.ground_truth()
    stored = read_store(db_path, ids)
    t = Tally(fault, meters=len(ids), deliveries=extra_deliveries)
    for mid in ids:
        m = fleet.meter(mid)
        keys = {(r["boot"], r["seq"]) for r in m.sent}
        t.sent += len(keys)
        t.deliveries += len(m.sent) + len(getattr(m, "copies", ()))  # injected copies (duplicate_prob) too
        s = stored[mid]
        t.persisted += len(keys & s.keys)
        t.lost += len(keys - s.keys)
        expected = truth[mid]["ml"] - (m.sent[0]["ml"] if m.sent else 0)
        t.truth_ml += expected
        t.persisted_ml += s.total_ml
        t.lost_ml += max(0, expected - s.total_ml)
        t.double_ml += max(0, s.total_ml - expected)
        if not (s.total_ml == s.daily_ml == s.monthly_ml):
            t.notes.append(f"{mid}: total {s.total_ml} ml, by day {s.daily_ml}, by month {s.monthly_ml}")
    return t


def released_unstored(fleet, db_path: Path) -> dict[str, list[tuple[str, int]]]:
    """Readings a meter has let go of (acknowledged) that the store does not hold: the
    gateway acked what it had not persisted. Can run while everything moves: each meter's
    sent and held readings are taken first (between two of its steps), the store is read
    after, and a store only grows, so a reading stored after the meters were looked at
    is never flagged. Meters that are off are skipped.
    {meter: [(boot, seq), ...]} of the offenders; {} when all is well."""
    seen = {}
    for m in fleet.meters:
        with m.step_lock:
            if not (m.powered and m.app and m.app.outbox is not None):
                continue  # what a meter that is off holds is on its flash only: not looked at
            sent = {(r["boot"], r["seq"]) for r in list(m.sent)}
            held = {(b, s) for b, first, n in m.app.outbox.runs for s in range(first, first + n)}
        seen[m.id] = (sent, held)
    stored = read_store(db_path, list(seen))
    out = {}
    for mid, (sent, held) in seen.items():
        bad = sorted(sent - stored[mid].keys - held)
        if bad:
            out[mid] = bad
    return out


def integrity(db_path: Path) -> str:
    """PRAGMA integrity_check of a store ("ok" when sound), read-only."""
    con = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True, timeout=30)
    try:
        return "; ".join(r[0] for r in con.execute("PRAGMA integrity_check"))
    finally:
        con.close()


def render(rows: list[Tally]) -> str:
    head = ("fault", "meters", "readings sent", "deliveries", "persisted", "lost", "duplicated",
            "litres (truth)", "litres persisted", "lost L", "double-counted L", "result")
    body = [(r.fault, r.meters, r.sent, r.deliveries, r.persisted, r.lost, r.duplicated,
             f"{r.truth_ml / 1000:.3f}", f"{r.persisted_ml / 1000:.3f}", f"{r.lost_ml / 1000:.3f}",
             f"{r.double_ml / 1000:.3f}", "ok" if r.ok else "FAIL") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if i else (":" + "-" * (w + 1)) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep, *map(line, body)])
