"""The gateway's HTTP API (Flask app factory). Blueprints under /api/v1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from flask import Flask, g
from sqlalchemy.engine import Engine

from ..config import GatewayConfig
from ..periods import Calendar
from . import errors


class GatewayServices(Protocol):
    """What the API needs from the running gateway (a fake in unit tests)."""

    def submit_valve(self, meter: str, state: str, reason: str | None, command_id: str | None
                     ) -> tuple[dict, bool]: ...

    def health(self) -> dict[str, Any]: ...

    def alerts(self) -> Any: ...  # the alert monitor (gateway/alerts.py): ack

    def city_mean(self, period: str) -> Any: ...

    def policy(self) -> Any: ...

    def live(self) -> Any: ...  # the live event hub (gateway/live.py), or None


@dataclass
class Context:
    cfg: GatewayConfig
    engine: Engine
    services: GatewayServices
    calendar: Calendar


def ctx() -> Context:
    from flask import current_app
    return current_app.extensions["aquafog"]


def db():
    """The request's database connection, opened on first use."""
    if "db" not in g:
        g.db = ctx().engine.connect()
    return g.db


def create_app(cfg: GatewayConfig, engine: Engine, services: GatewayServices, test_config: dict | None = None
               ) -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False
    if test_config:
        app.config.update(test_config)
    app.extensions["aquafog"] = Context(cfg, engine, services, Calendar(cfg.timezone))

    @app.teardown_appcontext
    def _close_db(_exc):
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    from . import alerts, auth, city, commands, health, meters, policy, ranking
    for bp in (meters.bp, ranking.bp, commands.bp, health.bp, city.bp, policy.bp, alerts.bp, auth.bp):
        app.register_blueprint(bp, url_prefix="/api/v1")
    from . import live
    app.register_blueprint(live.bp, url_prefix="/api/v1")  # server-sent events
    from . import consumption
    app.register_blueprint(consumption.bp, url_prefix="/api/v1")  # consumer portal: usage, bill
    from . import openapi, schemas
    openapi.register(app, "AquaFog fog gateway", "One fog's meters, readings, rankings, valve commands and "
                     "policies (docs/http-api.md).", schemas.FOG)
    errors.register(app)
    from .. import web
    web.register(app, "fog", cfg.region)  # the dashboard and the portal at /
    if engine is not None:
        from ..accounts import Accounts
        from ..store.schema import ACCOUNTS
        from .access import install
        install(app, Accounts(ACCOUNTS), engine, cfg.session_hours, cfg.cookie_secure)
    return app
