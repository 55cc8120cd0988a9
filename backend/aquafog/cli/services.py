"""`aquafog gateway` and `aquafog cloud`: the long-running services."""

from __future__ import annotations

import logging
import sys

from ..config import ConfigError
from ..process import quiet_gc, stop_on_signals
from .common import CLOUD_CONFIG_HELP, add_store_args, cloud_config, gateway_config

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# journald stamps every line itself and keeps the level as the priority
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"


def _logging(level: str) -> None:
    import faulthandler

    from ..sdnotify import under_systemd
    faulthandler.enable()  # a hung service killed by systemd's watchdog (SIGABRT) leaves every thread's stack
    logging.basicConfig(level=level.upper(), format=JOURNAL_FORMAT if under_systemd() else LOG_FORMAT)


def cmd_gateway(args) -> int:
    cfg = gateway_config(args)
    _logging(cfg.log_level)
    from sqlalchemy.exc import OperationalError

    from ..gateway.service import Gateway
    from ..gateway.writer import store_problem
    try:
        gw = Gateway(cfg)
    except OperationalError as exc:  # e.g. restarted on a full disk: SQLite cannot set up its WAL
        print(f"aquafog gateway: {store_problem(exc, cfg.db_path, running=False)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aquafog gateway: cannot start: {exc}. Is http_port {cfg.http_port} already in use?", file=sys.stderr)
        return 1
    stop = stop_on_signals()
    gw.start()
    quiet_gc()
    return gw.wait(stop)


def cmd_cloud(args) -> int:
    overrides = {k: getattr(args, k, None) for k in ("db_url", "mqtt_host", "mqtt_port", "http_host", "http_port",
                                                     "log_level")}
    try:
        cfg = cloud_config(args, overrides)
    except ConfigError as exc:
        print(f"aquafog cloud: {exc}", file=sys.stderr)
        return 2
    _logging(cfg.log_level)
    from ..cloud.service import Cloud
    try:
        cloud = Cloud(cfg)
    except OSError as exc:
        print(f"aquafog cloud: cannot start: {exc}. Is http_port {cfg.http_port} already in use?", file=sys.stderr)
        return 1
    except Exception as exc:  # the store: a bad URL, PostgreSQL down or refusing, no driver
        print(f"aquafog cloud: cannot open the store {cfg.db_url.split('@')[-1]!r}: {exc}", file=sys.stderr)
        return 1
    stop = stop_on_signals()
    cloud.start()
    quiet_gc()
    return cloud.wait(stop)


def register(sub, groups) -> None:
    g = sub.add_parser("gateway", help="run the fog gateway: MQTT ingest, store, commands, HTTP API")
    add_store_args(g)
    g.add_argument("--mqtt-host", help="the fog broker's address (overrides mqtt_host)")
    g.add_argument("--mqtt-port", type=int, help="its port (overrides mqtt_port)")
    g.add_argument("--http-host", help="address the HTTP API listens on (overrides http_host)")
    g.add_argument("--http-port", type=int, help="port of the HTTP API (overrides http_port)")
    g.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (overrides log_level)")
    g.set_defaults(func=cmd_gateway)

    cl = sub.add_parser("cloud", help="run the cloud: merge the fogs' partials into city-wide answers")
    cl.add_argument("--config", "-c", help=CLOUD_CONFIG_HELP)
    cl.add_argument("--db-url", dest="db_url", help="sqlite:///file or postgresql+psycopg://user@host:port/db")
    cl.add_argument("--mqtt-host", dest="mqtt_host", help="the cloud broker's address (overrides mqtt_host)")
    cl.add_argument("--mqtt-port", dest="mqtt_port", type=int, help="its port (overrides mqtt_port)")
    cl.add_argument("--http-host", dest="http_host", help="address the HTTP API listens on (overrides http_host)")
    cl.add_argument("--http-port", dest="http_port", type=int, help="port of the HTTP API (overrides http_port)")
    cl.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING or ERROR (overrides log_level)")
    cl.set_defaults(func=cmd_cloud)
