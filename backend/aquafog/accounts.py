"""People and scripts who may use an AquaFog API: users with a role, the meters a
consumer owns, API tokens. The same tables live in a fog's store and in the cloud's
(add_tables), so both authenticate the same way (api/auth.py).

- Roles: admin (everything, users and policies) > operator (read everything, command
  valves, acknowledge alerts) ; consumer (only their own meters).
- Passwords: werkzeug's salted scrypt hash; never stored or logged in clear, and there is
  no default password: the first admin is made by `aquafog user add --role admin`.
- API tokens: `aft_<id>_<secret>`, 160 random bits; only the SHA-256 of the secret is
  stored (a token is as strong as a key, so a fast hash is enough and keeps every API call
  cheap), shown once, revocable.
- Sessions are signed cookies that name the user and their `session_epoch`; changing the
  password or disabling the user bumps it, which ends every session at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import (BigInteger, Column, ForeignKey, Integer, MetaData, String, Table, Text, delete, insert,
                        select, update)
from sqlalchemy.engine import Connection
from werkzeug.security import check_password_hash, generate_password_hash

from .protocol import METER_ID_RE

ROLES = ("admin", "operator", "consumer")
USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9_.@-]{0,63}")
MIN_PASSWORD = 12
TOKEN_RE = re.compile(r"aft_([0-9a-f]{12})_([0-9a-f]{40})")
# a hash to check against when the user does not exist, so a login takes as long either way
_DUMMY_HASH = generate_password_hash("not a password of anyone")


class AccountError(ValueError):
    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


def add_tables(metadata: MetaData) -> dict[str, Table]:
    users = Table(
        "users", metadata,
        Column("id", Integer, primary_key=True),
        Column("username", String(64), nullable=False, unique=True),
        Column("role", String(10), nullable=False),
        Column("password_hash", Text, nullable=False),
        Column("session_epoch", Integer, nullable=False, default=0),
        Column("created_ms", BigInteger, nullable=False),
        Column("disabled_ms", BigInteger),
    )
    user_meters = Table(
        "user_meters", metadata,
        Column("user_id", Integer, ForeignKey("users.id"), primary_key=True),
        Column("meter", String(32), primary_key=True),
    )
    api_tokens = Table(
        "api_tokens", metadata,
        Column("id", String(12), primary_key=True),
        Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
        Column("name", String(64), nullable=False),
        Column("secret_sha256", String(64), nullable=False),
        Column("created_ms", BigInteger, nullable=False),
        Column("last_used_ms", BigInteger),
        Column("revoked_ms", BigInteger),
    )
    app_secrets = Table(
        "app_secrets", metadata,
        Column("name", String(32), primary_key=True),
        Column("value", Text, nullable=False),
    )
    return {"users": users, "user_meters": user_meters, "api_tokens": api_tokens, "app_secrets": app_secrets}


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    session_epoch: int
    meters: frozenset[str]  # a consumer's own meters (empty for the other roles)

    def at_least(self, role: str) -> bool:
        """admin > operator; a consumer is only a consumer."""
        if role == "consumer":
            return True
        return self.role == "admin" or (role == "operator" and self.role == "operator")

    def may_see(self, meter: str) -> bool:
        return self.role != "consumer" or meter in self.meters


def _now_ms() -> int:
    return int(time.time() * 1000)


class Accounts:
    """Account operations on one store's tables (a fog's or the cloud's)."""

    def __init__(self, tables: dict[str, Table]):
        self.t = tables

    # --- users -------------------------------------------------------------------------------
    def add_user(self, conn: Connection, username: str, role: str, password: str, meters=()) -> User:
        check_username(username)
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}, got {role!r}", "role")
        check_password(password)
        meters = _check_meters(meters, role)
        users = self.t["users"]
        if conn.execute(select(users.c.id).where(users.c.username == username)).first() is not None:
            raise AccountError(f"user {username!r} exists already; change it with `aquafog user passwd` or "
                               "`aquafog user meters`", "username")
        uid = conn.execute(insert(users).values(
            username=username, role=role, password_hash=generate_password_hash(password), session_epoch=0,
            created_ms=_now_ms())).inserted_primary_key[0]
        if meters:
            conn.execute(insert(self.t["user_meters"]), [{"user_id": uid, "meter": m} for m in meters])
        return self.user(conn, uid)

    def user(self, conn: Connection, uid: int) -> User | None:
        users = self.t["users"]
        r = conn.execute(select(users).where(users.c.id == uid, users.c.disabled_ms.is_(None))).mappings().first()
        if r is None:
            return None
        um = self.t["user_meters"]
        meters = frozenset(conn.execute(select(um.c.meter).where(um.c.user_id == uid)).scalars())
        return User(r["id"], r["username"], r["role"], r["session_epoch"], meters)

    def _row(self, conn: Connection, username: str):
        users = self.t["users"]
        r = conn.execute(select(users).where(users.c.username == username)).mappings().first()
        if r is None:
            raise AccountError(f"no user {username!r}; list them with `aquafog user list`", "username")
        return r

    def list_users(self, conn: Connection) -> list[dict]:
        users, um = self.t["users"], self.t["user_meters"]
        out = []
        for r in conn.execute(select(users).order_by(users.c.username)).mappings():
            meters = sorted(conn.execute(select(um.c.meter).where(um.c.user_id == r["id"])).scalars())
            out.append({"username": r["username"], "role": r["role"], "meters": meters,
                        "created_ms": r["created_ms"], "disabled": r["disabled_ms"] is not None})
        return out

    def set_password(self, conn: Connection, username: str, password: str) -> None:
        check_password(password)
        r = self._row(conn, username)
        users = self.t["users"]
        conn.execute(update(users).where(users.c.id == r["id"]).values(
            password_hash=generate_password_hash(password), session_epoch=r["session_epoch"] + 1))

    def set_meters(self, conn: Connection, username: str, meters) -> None:
        r = self._row(conn, username)
        meters = _check_meters(meters, r["role"])
        um = self.t["user_meters"]
        conn.execute(delete(um).where(um.c.user_id == r["id"]))
        if meters:
            conn.execute(insert(um), [{"user_id": r["id"], "meter": m} for m in meters])

    def disable(self, conn: Connection, username: str) -> None:
        r = self._row(conn, username)
        users, tokens = self.t["users"], self.t["api_tokens"]
        now = _now_ms()
        conn.execute(update(users).where(users.c.id == r["id"]).values(
            disabled_ms=now, session_epoch=r["session_epoch"] + 1))
        conn.execute(update(tokens).where(tokens.c.user_id == r["id"], tokens.c.revoked_ms.is_(None))
                     .values(revoked_ms=now))

    def check_login(self, conn: Connection, username: str, password: str) -> User | None:
        users = self.t["users"]
        r = conn.execute(select(users).where(users.c.username == username,
                                             users.c.disabled_ms.is_(None))).mappings().first()
        ok = check_password_hash(r["password_hash"] if r else _DUMMY_HASH, password)
        return self.user(conn, r["id"]) if r is not None and ok else None

    def has_admin(self, conn: Connection) -> bool:
        users = self.t["users"]
        return conn.execute(select(users.c.id).where(users.c.role == "admin",
                                                     users.c.disabled_ms.is_(None))).first() is not None

    # --- API tokens --------------------------------------------------------------------------
    def add_token(self, conn: Connection, username: str, name: str) -> tuple[str, str]:
        """(token id, the token): the token is shown this once."""
        if not name or len(name) > 64:
            raise AccountError("name must say what the token is for, 1-64 characters", "name")
        r = self._row(conn, username)
        if r["disabled_ms"] is not None:
            raise AccountError(f"user {username!r} is disabled", "username")
        tid, secret = secrets.token_hex(6), secrets.token_hex(20)
        conn.execute(insert(self.t["api_tokens"]).values(
            id=tid, user_id=r["id"], name=name, secret_sha256=_sha256(secret), created_ms=_now_ms()))
        return tid, f"aft_{tid}_{secret}"

    def tokens(self, conn: Connection, username: str | None = None) -> list[dict]:
        t, users = self.t["api_tokens"], self.t["users"]
        q = select(t.c.id, t.c.name, t.c.created_ms, t.c.last_used_ms, t.c.revoked_ms, users.c.username).join(
            users, users.c.id == t.c.user_id).order_by(t.c.created_ms)
        if username is not None:
            q = q.where(users.c.username == username)
        return [dict(r) for r in conn.execute(q).mappings()]

    def revoke_token(self, conn: Connection, tid: str, username: str | None = None) -> bool:
        """Revoke token `tid` (only one of `username`'s when given); False if there is none."""
        t, users = self.t["api_tokens"], self.t["users"]
        q = update(t).where(t.c.id == tid, t.c.revoked_ms.is_(None)).values(revoked_ms=_now_ms())
        if username is not None:
            q = q.where(t.c.user_id == select(users.c.id).where(users.c.username == username).scalar_subquery())
        return conn.execute(q).rowcount > 0

    def check_token(self, conn: Connection, token: str) -> tuple[User, str] | None:
        m = TOKEN_RE.fullmatch(token)
        if m is None:
            return None
        t = self.t["api_tokens"]
        r = conn.execute(select(t.c.user_id, t.c.secret_sha256).where(
            t.c.id == m.group(1), t.c.revoked_ms.is_(None))).first()
        if r is None or not hmac.compare_digest(r.secret_sha256, _sha256(m.group(2))):
            return None
        user = self.user(conn, r.user_id)
        return None if user is None else (user, m.group(1))

    def touch_token(self, conn: Connection, tid: str) -> None:
        t = self.t["api_tokens"]
        conn.execute(update(t).where(t.c.id == tid).values(last_used_ms=_now_ms()))

    # --- the key that signs session cookies ---------------------------------------------------
    def secret_key(self, conn: Connection) -> str:
        """Made at the first start and kept in the store, so sessions survive a restart."""
        s = self.t["app_secrets"]
        value = conn.execute(select(s.c.value).where(s.c.name == "session_key")).scalar()
        if value is None:
            value = secrets.token_hex(32)
            conn.execute(insert(s).values(name="session_key", value=value))
        return value


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_username(username: str) -> None:
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        raise AccountError("username must be 1-64 of a-z 0-9 _ . @ - starting with a letter or digit", "username")


def check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"password must be at least {MIN_PASSWORD} characters (a phrase of a few words is "
                           "easy to remember)", "password")
    if len(password) > 1024:
        raise AccountError("password must be at most 1024 characters", "password")


def _check_meters(meters, role: str) -> list[str]:
    meters = sorted(set(meters))
    if meters and role != "consumer":
        raise AccountError("only a consumer has meters of their own; operators and admins see every meter", "meters")
    for m in meters:
        if not METER_ID_RE.fullmatch(m):
            raise AccountError(f"{m[:40]!r} is not a meter id (1-32 of a-z 0-9 _ -)", "meters")
    return meters
