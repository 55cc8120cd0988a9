"""Credentials for tests: a user with a role and an API token, made straight in a store
(as `aquafog user add` and `aquafog token add` do), and the URL prefixes httpjson sends
them to."""

from __future__ import annotations

import secrets

from aquafog.accounts import Accounts


def make_token(engine, tables, role: str = "admin", username: str | None = None, meters=()) -> str:
    accounts = Accounts(tables)
    username = username or f"test-{role}-{secrets.token_hex(3)}"
    with engine.begin() as conn:
        accounts.add_user(conn, username, role, secrets.token_urlsafe(18), meters)
        return accounts.add_token(conn, username, "test")[1]


def fog_token(engine, role: str = "admin", meters=(), username: str | None = None) -> str:
    from aquafog.store.schema import ACCOUNTS
    return make_token(engine, ACCOUNTS, role, username, meters)


def cloud_token(engine, role: str = "admin", meters=(), username: str | None = None) -> str:
    from aquafog.cloud.store import ACCOUNTS
    return make_token(engine, ACCOUNTS, role, username, meters)


def authorize(client, token: str):
    """A Flask test client that sends `token` with every request."""
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client
