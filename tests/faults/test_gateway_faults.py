"""kill -9 the gateway in the middle of a batch, then restart it: three times in one run.

"Mid-batch" is made real and checked, not assumed: a long batch window (3 s) keeps
readings received but not yet committed in the writer, the kill comes when the gateway's
/health says a batch of at least 60 such messages is open and young, and after the kill
the store proves that nothing was committed since (its ingest counters are exactly what
the dead process had counted when it was asked), while readings the broker took from the
meters are missing from it. Each kill must also leave every reading a meter has let go of
on disk (the gateway acked nothing it had not persisted).

Kill 1 and 3 SIGKILL the main process only: its receiver subprocess loses the pipe and
must go away by itself, without holding the MQTT session or the port. Kill 2 SIGKILLs the
whole process group (main and receiver at once, as the OOM killer or a power cut would).
The restart uses the same store (its -wal and -shm left behind), the same MQTT client id
and the persistent session: the broker delivers again what was never acknowledged.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from emulator import meter_ids

from .ledger import integrity, read_store, released_unstored, tally

pytestmark = pytest.mark.integration

BATCH_MS = 3000
MIN_OPEN = 60          # messages in the open batch at the kill
MAX_AGE_MS = 1500      # ... whose oldest arrived at most this long ago (1.5 s before it commits)
OUTCOMES = ("accepted", "duplicates", "late", "register_resets", "rejected")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill9(gw, group: bool) -> list[int]:
    """SIGKILL the gateway (its main process, or its whole process group); returns the
    pids of the children it had (the receiver)."""
    pid = gw.proc.pid
    kids = children(pid)
    if group:
        os.killpg(pid, signal.SIGKILL)  # started with new_session: its own group
    else:
        os.kill(pid, signal.SIGKILL)
    gw.proc.wait(10)
    gw.proc = None
    gw._log.close()
    gw._log = None
    return kids


def counted(db_path: Path) -> int:
    """Every message outcome the store has counted (its ingest counters), read-only."""
    con = sqlite3.connect(f"file:{db_path.resolve()}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("SELECT COALESCE(SUM(count), 0) FROM ingest_counters").fetchone()[0]
    finally:
        con.close()


def open_batch(gw):
    """/health while the writer holds a young batch of at least MIN_OPEN messages, else None.
    Not the first batch of a process: that one is mostly the meters' births (a meter sends
    readings once its birth is answered)."""
    code, h = gw.health()
    gw.last_health = (code, h)
    if code != 200 or not h:
        return None
    ing = h["ingest"]
    if ing["accepted"] > 0 and ing["uncommitted"] >= MIN_OPEN and ing["uncommitted_age_ms"] is not None \
            and ing["uncommitted_age_ms"] <= MAX_AGE_MS:
        return h
    return None


def test_kill_9_gateway_mid_batch_and_restart(gateway_factory, make_fleet, fault_table):
    ids = meter_ids(24, "k9")
    gw = gateway_factory(meters=ids, batch_max_delay_ms=BATCH_MS, batch_max_rows=100_000,
                         new_session=True).start()
    db = gw.db_path
    # a meter sends again what is not acked after ack_timeout_s: 120 s by default, 0.4 real s
    # at speed 300, less than the batch window; 1500 s (5 real s) keeps the two in proportion
    fleet = make_fleet(ids, speed=300.0, seed=21, config_overrides={"ack_timeout_s": 1500}).start()
    base = 0
    proofs = []
    for n, group in enumerate((False, True, False), 1):
        what = "process group" if group else "main process"
        h = gw.wait_for(lambda: open_batch(gw), f"kill {n}: an open batch of >= {MIN_OPEN} messages"
                        f" (last /health: {getattr(gw, 'last_health', None)})", timeout=30)
        kids = kill9(gw, group)
        # the gateway is dead: its store holds still
        assert kids, f"kill {n}: the gateway had no receiver subprocess"
        now_counted = counted(db)
        held = h["ingest"]["uncommitted"]
        assert now_counted == base + sum(h["ingest"][k] for k in OUTCOMES), (
            f"kill {n}: a batch was committed between the health snapshot and the kill: not mid-batch")
        stored = read_store(db, ids)
        in_flight = sum(len({(r["boot"], r["seq"]) for r in list(m.sent)} - stored[m.id].keys)
                        for m in fleet.meters)
        assert in_flight > 0, f"kill {n}: every reading the meters sent was already stored"
        assert released_unstored(fleet, db) == {}, f"kill {n}: meters let go of readings that are not on disk"
        assert integrity(db) == "ok"
        assert Path(f"{db}-wal").exists(), "no stale -wal file: was the store closed cleanly?"
        # the receiver must not linger: it would fight the new one for the MQTT session
        deadline = time.monotonic() + 10
        while any(alive(k) for k in kids):
            assert time.monotonic() < deadline, f"kill {n}: receiver {kids} still running 10 s after the gateway died"
            time.sleep(0.02)
        proofs.append(f"kill {n} ({what}): {held} messages uncommitted, {in_flight} readings sent but not on disk")
        # the meters go on for two simulated minutes without a gateway, then it comes back
        fleet.wait_until(fleet.clock.now() + 120, timeout=10)
        base = counted(db)
        gw.start()
    fleet.wait_until(fleet.clock.now() + 5 * 60, timeout=30)
    fleet.quiesce(timeout=30, freeze=True)
    t = fault_table(tally("kill -9 gateway mid-batch (x3), restart", fleet, db))
    t.notes.extend(proofs)
    assert fleet.errors == []
    assert t.ok, t
    assert integrity(db) == "ok"
    log = gw.log()
    assert log.count("session resumed") >= 3, "a restarted gateway did not resume its MQTT session"
    # kills 1 and 3 left the receiver alone: it saw its core go and stopped cleanly
    assert log.count("core process is gone") >= 2, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
