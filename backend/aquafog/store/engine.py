"""Opens the gateway's SQLite database: WAL, full fsync at commit (an acknowledged
reading must survive a power cut), foreign keys on. The only place an engine is made."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from .schema import metadata


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
        metadata.create_all(engine)
    return engine
