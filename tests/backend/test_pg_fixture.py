"""The throw-away PostgreSQL of tests/pg.py is a real server, isolated per test, and
leaves nothing behind."""

from __future__ import annotations

import os
import select
import socket

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from pg import ThrowawayPostgres, pg_url, postgres_server, process_exited  # noqa: F401

# The version ARCHITECTURE.md names (Debian 12's package); newer majors are accepted.
MIN_MAJOR = 15


def engine_for(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=NullPool)


def test_url_is_tcp_on_loopback(postgres_server):
    url = sa.make_url(postgres_server.url)
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port) == ("127.0.0.1", postgres_server.port)
    assert postgres_server.running()


def test_real_postgresql_server(postgres_server):
    engine = engine_for(postgres_server.url)
    try:
        with engine.connect() as conn:
            version = conn.scalar(sa.text("select version()"))
            listen = conn.scalar(sa.text("show listen_addresses"))
            fsync = conn.scalar(sa.text("show fsync"))
            user = conn.scalar(sa.text("select current_user"))
    finally:
        engine.dispose()
    assert version.startswith(f"PostgreSQL {postgres_server.major_version}."), version
    assert postgres_server.major_version >= MIN_MAJOR
    assert (listen, fsync, user) == ("127.0.0.1", "off", "aquafog")


def test_create_insert_read_back(pg_url):
    meta = sa.MetaData()
    readings = sa.Table(
        "readings", meta,
        sa.Column("meter", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("litres", sa.Numeric(12, 3), nullable=False),
    )
    engine = engine_for(pg_url)
    try:
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(readings.insert(), [
                {"meter": "m1", "seq": 1, "litres": "10.500"},
                {"meter": "m1", "seq": 2, "litres": "12.250"},
            ])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(readings.c.seq, readings.c.litres).order_by(readings.c.seq)).all()
            with pytest.raises(sa.exc.IntegrityError):  # a real primary key, enforced
                conn.execute(readings.insert(), {"meter": "m1", "seq": 1, "litres": 0})
    finally:
        engine.dispose()
    assert [(seq, str(litres)) for seq, litres in rows] == [(1, "10.500"), (2, "12.250")]


def test_each_test_database_is_isolated(postgres_server, pg_url):
    other = postgres_server.create_database()
    try:
        a, b = engine_for(pg_url), engine_for(postgres_server.url_for(other))
        try:
            with a.begin() as conn:
                conn.execute(sa.text("create table t (x int)"))
                conn.execute(sa.text("insert into t values (1)"))
            with b.connect() as conn:
                assert conn.scalar(sa.text("select to_regclass('t')")) is None
            with a.connect() as conn:
                assert sa.make_url(pg_url).database == conn.scalar(sa.text("select current_database()"))
        finally:
            a.dispose()
            b.dispose()
    finally:
        postgres_server.drop_database(other)
    engine = engine_for(postgres_server.url_for("postgres"))
    try:
        with engine.connect() as conn:
            names = conn.scalars(sa.text("select datname from pg_database")).all()
    finally:
        engine.dispose()
    assert other not in names


def test_drop_cuts_connections_left_open(postgres_server):
    name = postgres_server.create_database()
    engine = sa.create_engine(postgres_server.url_for(name))  # pooled: keeps a connection
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        postgres_server.drop_database(name)  # would fail without WITH (FORCE)
    finally:
        engine.dispose()


def test_stop_leaves_nothing_behind_even_when_the_body_fails():
    with pytest.raises(RuntimeError, match="a failing test"):
        with ThrowawayPostgres() as pg:
            pid, port, base = pg.pid, pg.port, pg.base
            pidfd = os.pidfd_open(pid)
            assert not process_exited(pid)
            raise RuntimeError("a failing test")
    try:
        # A pidfd is readable once its process has exited: the postmaster is gone.
        assert select.select([pidfd], [], [], 0)[0] == [pidfd]
    finally:
        os.close(pidfd)
    assert process_exited(pid)
    assert not base.exists()
    assert not pg.running()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    pg.stop()  # idempotent
