"""Logging in and out, who am I, and one's own API tokens (api/access.py checks them).

Login is rate limited per username and per client address: after LOGIN_FAILURES failed
attempts within LOGIN_WINDOW_S, further attempts get 429 with Retry-After until the
window has passed, whether the password is right or not (so guessing stays slow)."""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque

from flask import Blueprint, current_app, jsonify, request, session

from ..accounts import AccountError
from .access import current_user
from .errors import ApiError, bad_request, not_found
from .params import json_object

bp = Blueprint("auth", __name__)

LOGIN_FAILURES = 5
LOGIN_WINDOW_S = 300.0


class LoginLimiter:
    def __init__(self, failures: int = LOGIN_FAILURES, window_s: float = LOGIN_WINDOW_S, clock=time.monotonic):
        self.failures, self.window_s, self.clock = failures, window_s, clock
        self._seen: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()
        self.refused = 0

    def _recent(self, key: str, now: float) -> deque:
        q = self._seen[key]
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def wait_s(self, keys: list[str]) -> float:
        """0 if these keys may try now, else how long until they may."""
        now = self.clock()
        with self._lock:
            worst = 0.0
            for k in keys:
                q = self._recent(k, now)
                if len(q) >= self.failures:
                    worst = max(worst, q[0] + self.window_s - now)
            if worst:
                self.refused += 1
            return worst

    def failed(self, keys: list[str]) -> None:
        now = self.clock()
        with self._lock:
            for k in keys:
                self._recent(k, now).append(now)
            if len(self._seen) > 100_000:  # a flood of names: forget the idle ones
                for k in [k for k, q in self._seen.items() if not self._recent(k, now)]:
                    del self._seen[k]


def _accounts():
    return current_app.extensions["aquafog_accounts"]


def _limiter() -> LoginLimiter:
    return current_app.extensions.setdefault("aquafog_login_limiter", LoginLimiter())


def _me(user) -> dict:
    return {"username": user.username, "role": user.role, "meters": sorted(user.meters),
            "csrf_token": session.get("csrf")}


@bp.post("/auth/login")
def login():
    """Log in: sets the session cookie; the answer holds the CSRF token for later changes.
    ---
    post:
      requestBody: {required: true, content: {application/json: {schema: LoginRequest}}}
      responses:
        200: Me
        400: BadRequest
        401: Unauthorized
        429: TooManyRequests
    """
    body = json_object({"username": str, "password": str})
    username, password = body.get("username"), body.get("password")
    if not username:
        raise bad_request("username is required", "username")
    if not password:
        raise bad_request("password is required", "password")
    keys = [f"user:{username.lower()[:64]}", f"addr:{request.remote_addr}"]
    wait = _limiter().wait_s(keys)
    if wait:
        e = ApiError(429, "too_many_attempts", f"too many failed logins; try again in {int(wait) + 1} s")
        e.retry_after = int(wait) + 1
        raise e
    accounts, engine = _accounts()
    with engine.connect() as conn:
        user = accounts.check_login(conn, username, password)
    if user is None:
        _limiter().failed(keys)
        raise ApiError(401, "unauthorized", "wrong username or password")
    session.clear()
    session.permanent = True
    session.update(uid=user.id, epoch=user.session_epoch, csrf=secrets.token_urlsafe(24))
    return jsonify({"user": _me(user)})


@bp.post("/auth/logout")
def logout():
    """Log out: ends this session.
    ---
    post:
      responses:
        200: Ok
    """
    session.clear()
    return jsonify({"ok": True})


@bp.get("/auth/me")
def me():
    """Who is logged in: name, role, a consumer's meters, the session's CSRF token.
    ---
    get:
      responses:
        200: Me
    """
    return jsonify({"user": _me(current_user())})


@bp.get("/auth/tokens")
def list_tokens():
    """One's own API tokens (an admin: everyone's), never their secrets.
    ---
    get:
      responses:
        200: TokenPage
    """
    user = current_user()
    accounts, engine = _accounts()
    with engine.connect() as conn:
        rows = accounts.tokens(conn, None if user.role == "admin" else user.username)
    return jsonify({"items": rows})


@bp.post("/auth/tokens")
def create_token():
    """Make an API token for oneself; the token is in this answer only.
    ---
    post:
      requestBody: {required: true, content: {application/json: {schema: TokenRequest}}}
      responses:
        201: NewToken
        400: BadRequest
    """
    body = json_object({"name": str})
    user = current_user()
    accounts, engine = _accounts()
    try:
        with engine.begin() as conn:
            tid, token = accounts.add_token(conn, user.username, body.get("name") or "")
    except AccountError as e:
        raise bad_request(e.message, e.field) from None
    return jsonify({"id": tid, "token": token, "note": "shown once: keep it like a password"}), 201


@bp.delete("/auth/tokens/<token_id>")
def revoke_token(token_id: str):
    """Revoke one of one's tokens (an admin: anyone's).
    ---
    delete:
      parameters:
      - {name: token_id, in: path, required: true, schema: {type: string, pattern: "^[0-9a-f]{12}$"}}
      responses:
        200: Revoked
        404: NotFound
    """
    user = current_user()
    accounts, engine = _accounts()
    with engine.begin() as conn:
        done = accounts.revoke_token(conn, token_id[:12], None if user.role == "admin" else user.username)
    if not done:
        raise not_found(f"no active token {token_id[:12]!r} of yours")
    return jsonify({"revoked": token_id[:12]})
