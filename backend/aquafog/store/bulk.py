"""Hot-path executemany: a Core statement compiled once, fed positional tuples.

SQLAlchemy Core turns every row dict into parameters on each execute (about 5 µs a row
here); the ingest batch writes tens of thousands of rows a second, so its four
statements are compiled once from the table definitions and run through
`exec_driver_sql` with tuples (about 2 µs a row). The statements still come from the
schema: if a table changes so that the tuple order no longer matches, the gateway
refuses to start instead of writing columns into the wrong places.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection, Dialect


class Bulk:
    def __init__(self, stmt, dialect: Dialect, names: list[str], column_keys: list[str] | None = None):
        compiled = stmt.compile(dialect=dialect, column_keys=column_keys)
        order = list(compiled.positiontup or [])
        if order != list(names):
            raise RuntimeError(f"bulk statement parameters are {order}, the caller builds {list(names)}")
        self.sql = str(compiled)
        self.names = list(names)

    def run(self, conn: Connection, rows: list[tuple]) -> None:
        if rows:
            conn.exec_driver_sql(self.sql, rows)
