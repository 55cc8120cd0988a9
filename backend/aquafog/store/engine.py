"""Opens the gateway's SQLite database: WAL, full fsync at commit (an acknowledged
reading must survive a power cut), foreign keys on. The only place an engine is made.

It also brings a file written by an older gateway up to the current schema: the file
says its version in PRAGMA user_version (0 in files from the first release, which did
not set it), missing tables are created, and the UPGRADES steps of each newer version
run in order. A file from a newer gateway is refused rather than misread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

from .schema import SCHEMA_VERSION, metadata

log = logging.getLogger("aquafog.store")

# What version n needs beyond creating its new tables (create_all does that), for a file
# at version n-1: ALTER TABLE ... ADD COLUMN and the like, run in order before the file's
# version is set. The driver runs DDL outside a transaction, so a step must be safe to
# run again after a power cut in the middle of an upgrade.
UPGRADES: dict[int, list[str]] = {
    2: [],  # meter_health and meter_alarms are new tables
    3: [],  # policy_settings and policy_blocks are new tables
    4: [],  # users, user_meters, api_tokens, app_secrets are new tables
    5: [],  # alerts is a new table
}


def _on_connect(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA cache_size=-65536")   # 64 MiB
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def open_engine(db_path: str | Path, create: bool = True) -> Engine:
    path = Path(db_path).expanduser().resolve()
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.exists():
        raise FileNotFoundError(f"database {path} does not exist: start the gateway once or run `aquafog init-db`")
    engine = create_engine(f"sqlite:///{path}", pool_size=16, max_overflow=16)
    event.listen(engine, "connect", _on_connect)
    if create:
        with engine.begin() as conn:
            _prepare(conn, path)
    return engine


def _prepare(conn: Connection, path: Path) -> None:
    found = conn.exec_driver_sql("PRAGMA user_version").scalar()
    if found > SCHEMA_VERSION:
        raise RuntimeError(f"database {path} has store schema {found}, newer than the {SCHEMA_VERSION} this "
                           "aquafog knows: upgrade aquafog, or use a backup made before the upgrade")
    existing = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meters'").first() is not None
    metadata.create_all(conn)
    if found == SCHEMA_VERSION:
        return
    if existing:
        start = max(found, 1)
        for version in range(start + 1, SCHEMA_VERSION + 1):
            for stmt in UPGRADES.get(version, ()):
                conn.exec_driver_sql(stmt)
        log.info("store %s upgraded from schema %d to %d", path, start, SCHEMA_VERSION)
    conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
