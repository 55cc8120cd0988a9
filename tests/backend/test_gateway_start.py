"""`aquafog gateway` when its store cannot be opened (a full disk after a restart, a path
that is not a database): a clear line naming the file and what to do, exit code 1, no
traceback."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from sqlalchemy.exc import OperationalError

from aquafog.gateway.writer import store_problem


def test_a_store_that_cannot_be_opened_is_named_with_what_to_do(tmp_path):
    db = tmp_path / "not-a-file"
    db.mkdir()  # SQLite cannot open a directory: the same path out as a full disk at start
    r = subprocess.run([sys.executable, "-m", "aquafog", "gateway", "--db", str(db), "--http-port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr, r.stderr
    assert f"cannot open the store (unable to open database file): check {db}" in r.stderr, r.stderr
    assert "then start the gateway again" in r.stderr


def test_a_full_disk_at_start_says_so():
    # what SQLite says when a restart on a full disk cannot set up its write-ahead log
    exc = OperationalError("PRAGMA journal_mode=WAL", None, sqlite3.OperationalError("disk I/O error"))
    msg = store_problem(exc, "/var/lib/aquafog/gateway.db", running=False)
    assert msg.startswith("cannot open the store (disk I/O error): the disk holding /var/lib/aquafog/gateway.db")
    assert "free space" in msg and msg.endswith("then start the gateway again")
    full = OperationalError("INSERT", None, sqlite3.OperationalError("database or disk is full"))
    msg = store_problem(full, "/var/lib/aquafog/gateway.db")
    assert "df -h /var/lib/aquafog" in msg and msg.endswith("no reading is lost")
