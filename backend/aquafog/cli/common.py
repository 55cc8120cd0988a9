"""What several `aquafog` subcommands share: the config from -c and flags, and the store
arguments.

Without -c: $AQUAFOG_CONFIG (or $AQUAFOG_CLOUD_CONFIG), else on an installed fog or cloud
/etc/aquafog/gateway.toml (cloud.toml), so `sudo aquafog user add ...` there works on the
service's own store; elsewhere the defaults."""

from __future__ import annotations

import argparse
import os

from ..config import CloudConfig, GatewayConfig
from ..install.layout import Layout

CONFIG_HELP = ("gateway config file (TOML; docs/configuration.md lists every key; default: $AQUAFOG_CONFIG, "
               "else /etc/aquafog/gateway.toml when this machine is an installed fog)")
CLOUD_CONFIG_HELP = ("cloud config file (TOML; docs/configuration.md; default: $AQUAFOG_CLOUD_CONFIG, else "
                     "/etc/aquafog/cloud.toml when this machine is an installed cloud)")


def config_file(given: str | None, cloud: bool = False) -> str | None:
    if given:
        return given
    env = os.environ.get("AQUAFOG_CLOUD_CONFIG" if cloud else "AQUAFOG_CONFIG")
    if env is not None:
        return env or None  # set but empty: the defaults
    installed = Layout().cloud_toml if cloud else Layout().gateway_toml
    return str(installed) if installed.is_file() else None


def gateway_config(args) -> GatewayConfig:
    overrides = {k: getattr(args, k, None) for k in
                 ("db_path", "mqtt_host", "mqtt_port", "http_host", "http_port", "log_level")}
    return GatewayConfig.load(config_file(args.config), overrides=overrides)


def cloud_config(args, overrides: dict) -> CloudConfig:
    return CloudConfig.load(config_file(args.config, cloud=True), overrides=overrides)


def add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help=CONFIG_HELP)
    p.add_argument("--db", dest="db_path", help="SQLite file of the gateway (overrides db_path)")
