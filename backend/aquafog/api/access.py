"""Who may call what: one table for every endpoint of the fog's and the cloud's API, checked
before each request (install). An endpoint missing from the table is refused, and a test
fails the build until it has a rule, so nothing becomes public by accident.

Levels:
- public: anyone (health for probes, login, the API document, static files);
- user: anyone logged in (their own session and tokens);
- own_meter: operators and admins, or a consumer for a meter of their own (the route's
  <meter_id>); a consumer asking for another meter gets 403;
- operator: operators and admins;
- admin: admins only.

Credentials: `Authorization: Bearer aft_...` (scripts; accounts.py), or the session cookie
set by POST /api/v1/auth/login (browsers). A request changing something with the cookie
must also carry the session's CSRF token in `X-CSRF-Token` (a token in a header cannot be
sent by another site's page).
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, g, request, session

from ..accounts import Accounts, User
from .errors import ApiError

log = logging.getLogger("aquafog.api")

PUBLIC, USER, OWN_METER, OPERATOR, ADMIN = "public", "user", "own_meter", "operator", "admin"
CHANGES = ("POST", "PUT", "PATCH", "DELETE")

ACCESS: dict[str, str] = {
    "static": PUBLIC,
    # both apps
    "openapi.openapi_json": PUBLIC,
    "auth.login": PUBLIC, "auth.logout": USER, "auth.me": USER,
    "auth.list_tokens": USER, "auth.create_token": USER, "auth.revoke_token": USER,
    # the fog's API
    "health.health": PUBLIC, "health.ingest_stats": OPERATOR,
    "meters.list_meters": OPERATOR, "meters.get_meter": OWN_METER, "meters.get_readings": OWN_METER,
    "meters.get_meter_commands": OWN_METER, "meters.post_valve": OPERATOR,
    "consumption.usage": OWN_METER, "consumption.bill": OWN_METER, "live.meter_live": OWN_METER,
    "live.ranking_live": OPERATOR,
    "ranking.ranking": OPERATOR, "commands.get_command": OPERATOR,
    "city.city_mean": USER,
    "policy.get_policy": OPERATOR, "policy.put_policy": ADMIN, "policy.list_blocks": OPERATOR,
    "alerts.list_alerts": USER, "alerts.ack_alert": OPERATOR,  # a consumer lists their own meters' alerts
    # the cloud's API
    "health": PUBLIC, "city_ranking": OPERATOR, "city_mean": USER, "fogs": OPERATOR,
    "get_policy": OPERATOR, "put_policy": ADMIN,
    "meter": OWN_METER, "meter_readings": OWN_METER, "meter_commands": OWN_METER, "valve": OPERATOR,
    "meter_usage": OWN_METER, "meter_bill": OWN_METER, "meter_live": OWN_METER,
    "command": OPERATOR,
    # the web UI (web/), both apps: the pages are public shells (no session: to /login); the data
    # behind them is the API's, with the rules above
    "web.dashboard": PUBLIC, "web.login": PUBLIC, "web.meter": PUBLIC, "web.alerts": PUBLIC,
    "web.policy": PUBLIC, "web.portal": PUBLIC, "web.favicon": PUBLIC, "web.static": PUBLIC,
}

TOKEN_TOUCH_S = 60  # last_used of a token is written at most this often


def current_user() -> User | None:
    return g.get("user")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


def install(app: Flask, accounts: Accounts, engine, session_hours: int = 12, cookie_secure: bool = False) -> None:
    """Authenticate and authorize every request of `app` against its store's accounts."""
    with engine.begin() as conn:
        app.secret_key = accounts.secret_key(conn)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=cookie_secure, SESSION_COOKIE_NAME="aquafog_session",
                      PERMANENT_SESSION_LIFETIME=session_hours * 3600)
    app.extensions["aquafog_accounts"] = (accounts, engine)
    touched: dict[str, float] = {}
    lock = threading.Lock()

    def authenticate() -> User | None:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise _unauthorized("Authorization must be 'Bearer <token>' (make one with `aquafog token add`)")
            with engine.connect() as conn:
                found = accounts.check_token(conn, token.strip())
            if found is None:
                raise _unauthorized("the API token is not valid (revoked, or mistyped): make a new one with "
                                    "`aquafog token add <user> <name>`")
            user, tid = found
            now = time.monotonic()
            with lock:
                due = now - touched.get(tid, -TOKEN_TOUCH_S) >= TOKEN_TOUCH_S
                if due:
                    touched[tid] = now
            if due:
                try:
                    with engine.begin() as conn:
                        accounts.touch_token(conn, tid)
                except Exception:  # a busy store must not refuse the request
                    log.debug("could not record the use of token %s", tid)
            g.auth = "token"
            return user
        uid = session.get("uid")
        if uid is None:
            return None
        with engine.connect() as conn:
            user = accounts.user(conn, uid)
        if user is None or user.session_epoch != session.get("epoch"):
            session.clear()
            raise _unauthorized("your session has ended (password changed, or user disabled): log in again")
        g.auth = "session"
        return user

    @app.before_request
    def _check():
        endpoint = request.endpoint
        if endpoint is None:
            return None  # no such route: the 404 handler answers
        level = ACCESS.get(endpoint)
        if level is None:
            log.error("endpoint %s has no access rule in api/access.py: refused", endpoint)
            raise ApiError(403, "forbidden", "this endpoint has no access rule yet, so it is closed")
        if level == PUBLIC:
            return None
        user = authenticate()
        if user is None:
            raise _unauthorized("log in (POST /api/v1/auth/login, or the dashboard) or send "
                                "'Authorization: Bearer <token>'")
        g.user = user
        if g.auth == "session" and request.method in CHANGES and \
                request.headers.get("X-CSRF-Token") != session.get("csrf"):
            raise ApiError(403, "csrf", "a change made with the session cookie needs the X-CSRF-Token header "
                                        "(its value is in GET /api/v1/auth/me)")
        if level == OWN_METER:
            meter = (request.view_args or {}).get("meter_id", "")
            if not user.may_see(meter):
                raise ApiError(403, "forbidden", f"meter {meter[:40]!r} is not one of yours")
        elif level in (OPERATOR, ADMIN) and not user.at_least(level):
            raise ApiError(403, "forbidden", f"this needs the {level} role; you are {user.role}")
        return None

    @app.after_request
    def _no_store(resp):
        if request.endpoint != "static":
            resp.headers.setdefault("Cache-Control", "no-store")  # answers are per user and change
        return resp
