"""What several `aquafog` subcommands share: the gateway config from -c and flags, and
the store arguments."""

from __future__ import annotations

import argparse

from ..config import GatewayConfig

CONFIG_HELP = "gateway config file (TOML; docs/configuration.md lists every key)"


def gateway_config(args) -> GatewayConfig:
    overrides = {k: getattr(args, k, None) for k in
                 ("db_path", "mqtt_host", "mqtt_port", "http_host", "http_port", "log_level")}
    return GatewayConfig.load(args.config, overrides=overrides)


def add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help=CONFIG_HELP)
    p.add_argument("--db", dest="db_path", help="SQLite file of the gateway (overrides db_path)")
