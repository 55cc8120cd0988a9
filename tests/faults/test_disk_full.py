"""The gateway's disk fills up mid-stream, then space returns.

The store lives on its own small tmpfs (mounted here: the test needs root); a filler file
takes every free byte while the meters report. The gateway must say so clearly (log and
/health: what, where, what to do), keep running, acknowledge nothing it could not store
(the meters keep those readings), and leave the store sound; once the filler is removed it
stores everything by itself, every reading once. Then the disk fills again and the gateway
is restarted on it: it stops in time, and either refuses to start with a line naming the
store and the disk, or starts and says so in /health; with space back, it catches up.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from emulator import meter_ids

from .ledger import integrity, released_unstored, tally

pytestmark = pytest.mark.integration

DISK_MB = 16


@pytest.fixture
def small_disk(tmp_path):
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "aquafog-faults", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"the disk-full fault needs a small tmpfs of its own: `mount -t tmpfs` failed "
                    f"({r.stderr.strip() or r.returncode}); run this test as root (CI runs it in a root container)")
    try:
        yield d
    finally:
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)  # something still had it open


def fill(path) -> int:
    """Write a file until the disk has no byte left; returns its size."""
    chunk = b"\0" * (1 << 16)
    n = 0
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 16]  # the last few blocks too
    return n


def test_disk_full_then_space_returns(small_disk, gateway_factory, make_fleet, fault_table):
    ids = meter_ids(8, "df")
    gw = gateway_factory(meters=ids, db_path=str(small_disk / "gateway.db")).start()
    db = gw.db_path
    fleet = make_fleet(ids, speed=300.0, seed=51).start()
    fleet.wait_until(fleet.clock.start_epoch + 5 * 60, timeout=20)

    filler = small_disk / "filler"
    size = fill(filler)
    st = os.statvfs(small_disk)
    assert st.f_bavail == 0, "the disk is not full"

    def full_health():
        code, h = gw.health()
        if code == 503 and any("disk" in p and "full" in p for p in h["problems"]):
            return h
        return None
    h = gw.wait_for(full_health, "/health to report the full disk", timeout=20)
    problem = next(p for p in h["problems"] if "full" in p)
    # what went wrong, where, what to do, and that nothing is lost
    assert str(db) in problem and "free space" in problem and "no reading is lost" in problem, problem
    assert h["ingest"]["uncommitted"] > 0
    # the meters go on for 10 simulated minutes: the gateway keeps running, acks nothing it could not store
    fleet.wait_until(fleet.clock.now() + 10 * 60, timeout=10)
    code, h = gw.health()
    assert code == 503 and gw.proc.poll() is None
    assert released_unstored(fleet, db) == {}, "readings acknowledged that are not on disk"
    held = sum(m.outbox_depth for m in fleet.meters)
    assert held >= len(ids) * 10, f"the meters hold only {held} readings: was anything refused?"
    assert integrity(db) == "ok"
    log = gw.log()
    assert "store write failed (database or disk is full)" in log and "free space" in log, log[-3000:]

    filler.unlink()  # space returns
    gw.wait_for(lambda: gw.health()[0] == 200, "the gateway to recover by itself", timeout=30)

    # full again, and the gateway restarted meanwhile (systemd after a crash or a reboot)
    fleet.wait_until(fleet.clock.now() + 3 * 60, timeout=10)
    fill(filler)
    gw.wait_for(full_health, "/health to report the full disk again", timeout=20)
    assert gw.stop(timeout=20) == 0  # SIGTERM on a full disk: it cannot commit what it holds, and exits anyway
    try:
        gw.start(timeout=20)
    except RuntimeError as exc:  # SQLite could not even set up its write-ahead log: a clear line, no traceback
        assert "cannot open the store" in str(exc) and str(db) in str(exc) and "Traceback" not in str(exc), exc
        restart = "refused to start, naming the store and the disk"
    else:
        gw.wait_for(full_health, "/health of the gateway started on a full disk", timeout=20)
        restart = "started, /health naming the full disk"
        gw.stop(timeout=20)
    assert integrity(db) == "ok"
    filler.unlink()
    gw.start()

    fleet.quiesce(timeout=30, freeze=True)
    t = fault_table(tally("gateway disk full (x2), then space returns", fleet, db))
    t.notes.append(f"disk {DISK_MB} MiB filled with {size} bytes; the meters held {held} readings while it was full")
    t.notes.append(f"restarted on the full disk: {restart}")
    assert fleet.errors == []
    assert t.ok, t
    assert integrity(db) == "ok"
    assert "Traceback" not in gw.log(), gw.log()[-3000:]
