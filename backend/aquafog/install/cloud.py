"""`aquafog setup cloud`: this machine becomes the city's cloud, or an installed cloud takes
new settings and new fogs. Idempotent, like `aquafog setup fog`.

What it makes (docs/install-cloud.md):
- the system's Mosquitto through a drop-in: the fogs' listener (plain 1883 and/or TLS 8883)
  where each fog's bridge logs in with its own account, confined by the ACL to its own
  region's topics (its summaries out, its commands and the city's figures in), client ids
  bound to user names; a loopback service listener for the cloud service's own account;
  no anonymous access;
- per fog (--fog REGION) a join file /etc/aquafog/fogs/REGION.join (root only: it holds the
  fog's password) to copy to the fog for `aquafog setup fog --join`;
- /etc/aquafog/cloud.toml, the store (SQLite in /var/lib/aquafog unless --db-url), the
  first admin, aquafog-cloud.service enabled and (re)started.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..bridge import check_region
from ..broker import BrokerConfig
from ..config import CLOUD_KEYS, CloudConfig
from . import configfile
from .common import (Accounts, Changes, Report, ServiceConfig, check_mosquitto, first_admin, read_secret,
                     setup_state, start_services, tls_listener)
from .fog import _default_address, _url_host
from .layout import BROKER_GROUP, USER, Layout
from .system import SetupError, System

CLOUD_UNIT = "aquafog-cloud.service"
CLOUD_ACCOUNT = "cloud"


@dataclass
class CloudChoices:
    """What `aquafog setup cloud` was told; kept in /etc/aquafog/setup.toml."""
    public_host: str = ""   # the cloud's address as the fogs reach it ("": found at setup)
    fog_port: int = 1883
    tls_port: int = 0
    service_port: int = 1884
    http_host: str = "0.0.0.0"
    http_port: int = 8090
    timezone: str = "UTC"
    db_url: str = ""        # "": SQLite in /var/lib/aquafog
    fogs: list = field(default_factory=list)

    def check(self) -> list[str]:
        errors = []
        for name in ("fog_port", "tls_port", "service_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535 or (name == "service_port" and port == 0):
                errors.append(f"--{name.replace('_', '-')}: {port} is not a port")
        used = [p for p in (self.fog_port, self.tls_port, self.service_port) if p]
        if len(used) != len(set(used)):
            errors.append("ports: each listener needs its own")
        if not self.fog_port and not self.tls_port:
            errors.append("--fog-port 0 needs --tls-port: the fogs' bridges need a listener")
        for region in self.fogs:
            try:
                check_region(region)
            except ValueError as exc:
                errors.append(f"--fog: {exc}")
        return errors


def fog_account(region: str) -> str:
    return f"fog-{region}"


def setup_cloud(opts, layout: Layout = Layout(), system: System | None = None) -> Report:
    system = system or System(layout.root)
    report = Report("cloud")
    state = setup_state(layout, CloudChoices, "cloud")
    choices: CloudChoices = state.choices
    for f in fields(CloudChoices):
        value = getattr(opts, f.name, None)
        if value is not None and f.name != "fogs":
            setattr(choices, f.name, value)
    for region in getattr(opts, "fog", None) or []:
        if region not in choices.fogs:
            choices.fogs.append(region)
    if not choices.public_host:
        choices.public_host = _default_address()
    tokens = {}
    for item in getattr(opts, "fog_token", None) or []:
        region, sep, path = item.partition("=")
        if not sep:
            raise SetupError(f"--fog-token {item!r}: must be REGION=FILE (a file holding the fog's API token)")
        tokens[region] = read_secret(path, f"--fog-token {region}:")
    tls_files = _tls_files(opts, layout, choices)
    errors = choices.check()
    if errors:
        raise SetupError("cannot set up the cloud:\n  " + "\n  ".join(errors) + "\nnothing was changed")
    check_mosquitto(layout)
    os.umask(0o027)

    changes = Changes()
    system.ensure_user()
    system.mkdir(layout.etc, 0o750, None, USER)
    system.mkdir(layout.joins, 0o700)
    system.mkdir(layout.state, 0o750, USER, USER)
    system.mkdir(layout.broker_dir, 0o750, None, BROKER_GROUP)
    for name, (src, mode) in tls_files.items():
        system.mkdir(layout.certs, 0o750, None, BROKER_GROUP)
        changes.broker |= system.copy(src, layout.certs / name, mode, None, BROKER_GROUP)

    accounts = Accounts(layout, system)
    fogs_passwd, fogs_acl = layout.broker_file("fogs.passwd"), layout.broker_file("fogs.acl")
    services_passwd, services_acl = layout.broker_file("services.passwd"), layout.broker_file("services.acl")
    changes.broker |= accounts.file(fogs_passwd)
    changes.broker |= accounts.acl(fogs_acl, patterns=False)  # Mosquitto refuses to start without it
    new_joins = []
    for region in choices.fogs:
        join = layout.joins / f"{region}.join"
        known = _read_join(join)
        password = known.get("password") if known.get("username") == fog_account(region) else None
        password, changed = accounts.service(fogs_passwd, fogs_acl, fog_account(region), "fog", password,
                                             region=region)
        changes.broker |= changed
        text = _join_text(region, fog_account(region), password, choices, layout)
        if system.write(join, text, 0o600):
            new_joins.append(join)
    config = ServiceConfig(layout.cloud_toml, "cloud", CloudConfig, CLOUD_KEYS)
    password, changed = accounts.service(services_passwd, services_acl, CLOUD_ACCOUNT, "cloud",
                                         config.password(CLOUD_ACCOUNT))
    changes.broker |= changed

    dropin = BrokerConfig(port=choices.fog_port or None, host="0.0.0.0", system=True,
                          password_file=fogs_passwd, acl_file=fogs_acl, tls=tls_listener(layout, choices.tls_port),
                          service_port=choices.service_port, service_password_file=services_passwd,
                          service_acl_file=services_acl).render()
    changes.broker |= system.write(layout.dropin, dropin, 0o640, None, BROKER_GROUP)

    db_url = choices.db_url or f"sqlite:///{Path('/') / layout.cloud_db.relative_to(layout.root)}"
    fog_tokens = {**config.managed.get("fog_tokens", {}), **tokens}
    changes.service |= config.write(system, {
        "db_url": db_url,
        "timezone": choices.timezone,
        "mqtt_host": "127.0.0.1",
        "mqtt_port": choices.service_port,
        "mqtt_username": CLOUD_ACCOUNT,
        "mqtt_password": password,
        "http_host": choices.http_host,
        "http_port": choices.http_port,
        "fog_tokens": fog_tokens,
    })
    state.save(system, choices)

    if db_url.startswith("sqlite:///"):
        db = layout.root / db_url.removeprefix("sqlite:///").lstrip("/")
        url = f"sqlite:///{db}"
    else:
        db, url = layout.state, db_url  # PostgreSQL: the setup runs as the aquafog user all the same

    def open_accounts():
        from ..accounts import Accounts as UserAccounts
        from ..cloud.store import ACCOUNTS, open_cloud_engine
        return UserAccounts(ACCOUNTS), open_cloud_engine(url)
    try:
        report.admin = first_admin(system, db, open_accounts)
    except SetupError:
        raise
    except Exception as exc:  # a PostgreSQL that refuses, say
        raise SetupError(f"cannot open the store {db_url.split('@')[-1]}: {exc}") from None

    start_services(system, changes, CLOUD_UNIT, report, getattr(opts, "from_package", False))
    report.urls = [f"http://{_url_host(choices.public_host)}:{choices.http_port}/"]
    port = " and ".join(x for x in (f"{choices.fog_port} (MQTT)" if choices.fog_port else "",
                                    f"{choices.tls_port} (MQTT over TLS)" if choices.tls_port else "") if x)
    report.lines.append(f"fogs' bridges connect to {choices.public_host}:{port}")
    none = "none yet (add one: sudo aquafog setup cloud --fog REGION)"
    report.lines.append(f"fogs: {', '.join(choices.fogs) or none}")
    missing_tokens = [r for r in choices.fogs if r not in fog_tokens]
    for join in new_joins:
        region = join.name.removesuffix(".join")
        report.next.append(f"fog {region}: copy {join} to it (it holds its password: keep it private), then run "
                           f"there: sudo aquafog setup fog --join {join.name}")
    if missing_tokens:
        report.next.append("meter detail of " + ", ".join(missing_tokens) + ": copy the token file each fog wrote "
                           "when it joined, then: sudo aquafog setup cloud --fog-token REGION=FILE")
    return report


def _read_join(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _join_text(region: str, user: str, password: str, c: CloudChoices, layout: Layout) -> str:
    values = {"region": region, "cloud_host": c.public_host, "cloud_port": c.tls_port or c.fog_port,
              "username": user, "password": password}
    if c.tls_port:
        values["ca_pem"] = (layout.certs / "ca.crt").read_text()
    lines = [f"# Fog {region} joins the AquaFog cloud at {c.public_host}: on that fog run",
             f"#   sudo aquafog setup fog --join {region}.join",
             "# It holds the fog's password on the cloud broker: copy it privately, delete it afterwards."]
    return "\n".join(lines + [f"{k} = {configfile.toml_value(v)}" for k, v in values.items()]) + "\n"


def _tls_files(opts, layout: Layout, choices: CloudChoices) -> dict[str, tuple[Path, int]]:
    from .fog import _tls_files as fog_tls
    return fog_tls(opts, layout, choices)

