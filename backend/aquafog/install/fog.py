"""`aquafog setup fog`: this machine becomes a secure fog, or an installed fog takes new
settings. Idempotent: run again with the same settings it changes nothing; with new ones
it changes only what they touch. Every earlier choice and every password is kept.

What it makes (docs/install-fog.md):
- the system's Mosquitto, through a drop-in that works with Debian's mosquitto.conf: the
  meters' listener (plain on 0.0.0.0:1883 and/or TLS on 8883) with per-meter passwords,
  the ACL and client ids bound to user names; a loopback service listener with its own
  password file, which only service accounts (the gateway) may use; no anonymous access;
  the bridge to the cloud once the fog has joined one;
- /etc/aquafog/gateway.toml (the gateway's account and settings), site.toml (what
  `aquafog meter provision` needs), setup.toml (these choices);
- the store in /var/lib/aquafog, owned by the aquafog user; the first admin;
- mosquitto.service and aquafog-gateway.service enabled and (re)started.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from ..bridge import BridgeConfig, check_region
from ..broker import BrokerConfig
from ..config import GATEWAY_KEYS, GatewayConfig
from . import configfile
from .common import (Accounts, Changes, Report, ServiceConfig, check_mosquitto, first_admin, setup_state,
                     start_services, tls_listener)
from .layout import BROKER_GROUP, USER, Layout
from .system import SetupError, System

GATEWAY_UNIT = "aquafog-gateway.service"
GATEWAY_ACCOUNT = "gateway"


@dataclass
class FogChoices:
    """What `aquafog setup fog` was told; kept in /etc/aquafog/setup.toml."""
    broker_host: str = ""        # this fog's address as meters reach it ("" : found at setup)
    meter_port: int = 1883       # plain MQTT for meters (0: none, TLS only)
    tls_port: int = 0            # MQTT over TLS for meters (0: none)
    service_port: int = 1884     # loopback, the gateway and tools
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    timezone: str = "UTC"
    region: str = ""
    cloud_host: str = ""
    cloud_port: int = 1883
    cloud_username: str = ""
    cloud_password: str = ""
    cloud_cafile: str = ""       # copied to /etc/mosquitto/aquafog/certs/cloud-ca.crt

    def check(self) -> list[str]:
        errors = []
        ports = {"meter_port": self.meter_port, "tls_port": self.tls_port, "service_port": self.service_port}
        for name, port in ports.items():
            if not 0 <= port <= 65535 or (name == "service_port" and port == 0):
                errors.append(f"--{name.replace('_', '-')}: {port} is not a port")
        used = [p for p in ports.values() if p]
        if len(used) != len(set(used)):
            errors.append(f"ports: each listener needs its own (meter {self.meter_port}, TLS {self.tls_port}, "
                          f"service {self.service_port})")
        if not self.meter_port and not self.tls_port:
            errors.append("--meter-port 0 needs --tls-port: the meters need a listener")
        if self.region:
            try:
                check_region(self.region)
            except ValueError as exc:
                errors.append(f"--{exc}")
        if self.cloud_host and not (self.region and self.cloud_username and self.cloud_password):
            errors.append("a cloud needs a region and the fog's account on the cloud broker: "
                          "use --join FILE (made at the cloud by `aquafog setup cloud --fog REGION`)")
        return errors


def _default_address() -> str:
    """The address this machine uses towards the network (no packet is sent), else its
    first address on any network (a fog on a LAN without a default route)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only the routing decision is made
            return s.getsockname()[0]
    except OSError:
        pass
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    v4 = [a for a in out if "." in a]
    return (v4 or out or ["127.0.0.1"])[0]


def _join(path: Path, choices: FogChoices) -> None:
    """Take a join file from the cloud: region, the cloud broker and this fog's account on it."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SetupError(f"--join {path}: cannot read it ({exc}); copy the file `aquafog setup cloud --fog REGION` "
                         "wrote at the cloud (/etc/aquafog/fogs/REGION.join)") from None
    missing = [k for k in ("region", "cloud_host", "cloud_port", "username", "password") if k not in raw]
    if missing:
        raise SetupError(f"--join {path}: not a join file (no {', '.join(missing)})")
    choices.region, choices.cloud_host, choices.cloud_port = raw["region"], raw["cloud_host"], int(raw["cloud_port"])
    choices.cloud_username, choices.cloud_password = raw["username"], raw["password"]
    choices.cloud_cafile = raw.get("ca_pem", "")


def setup_fog(opts, layout: Layout = Layout(), system: System | None = None) -> Report:
    system = system or System(layout.root)
    report = Report("fog")
    state = setup_state(layout, FogChoices, "fog")
    choices: FogChoices = state.choices
    for f in fields(FogChoices):
        value = getattr(opts, f.name, None)
        if value is not None and f.name not in ("cloud_password", "cloud_cafile"):
            setattr(choices, f.name, value)
    if getattr(opts, "join", None):
        _join(opts.join, choices)
    if getattr(opts, "standalone", False):
        for name in ("region", "cloud_host", "cloud_username", "cloud_password", "cloud_cafile"):
            setattr(choices, name, "")
    if not choices.broker_host:
        choices.broker_host = _default_address()
    tls_files = _tls_files(opts, layout, choices)
    errors = choices.check()
    if errors:
        raise SetupError("cannot set up the fog:\n  " + "\n  ".join(errors) + "\nnothing was changed")

    check_mosquitto(layout)
    os.umask(0o027)  # the store and its journal: the service's user and group only
    changes = Changes()
    system.ensure_user()
    system.mkdir(layout.etc, 0o750, None, USER)
    system.mkdir(layout.state, 0o750, USER, USER)
    system.mkdir(layout.meters_dir, 0o700)
    system.mkdir(layout.broker_dir, 0o750, None, BROKER_GROUP)
    for name, (src, mode) in tls_files.items():
        system.mkdir(layout.certs, 0o750, None, BROKER_GROUP)
        changes.broker |= system.copy(src, layout.certs / name, mode, None, BROKER_GROUP)
    cloud_ca = layout.certs / "cloud-ca.crt"
    if choices.cloud_cafile:  # PEM text from the join file
        system.mkdir(layout.certs, 0o750, None, BROKER_GROUP)
        changes.broker |= system.write(cloud_ca, choices.cloud_cafile, 0o644, None, BROKER_GROUP)

    # the broker's accounts: meters (provisioned later) and the gateway's service account
    accounts = Accounts(layout, system)
    meters_passwd, meters_acl = layout.broker_file("meters.passwd"), layout.broker_file("meters.acl")
    services_passwd, services_acl = layout.broker_file("services.passwd"), layout.broker_file("services.acl")
    changes.broker |= accounts.file(meters_passwd)
    changes.broker |= accounts.acl(meters_acl, patterns=True)
    config = ServiceConfig(layout.gateway_toml, "fog", GatewayConfig, GATEWAY_KEYS)
    password, changed = accounts.service(services_passwd, services_acl, GATEWAY_ACCOUNT, "gateway",
                                         config.password(GATEWAY_ACCOUNT))
    changes.broker |= changed

    # the drop-in for Debian's mosquitto.conf
    bridge = None
    if choices.region and choices.cloud_host:
        bridge = BridgeConfig(choices.region, choices.cloud_host, choices.cloud_port,
                              remote_username=choices.cloud_username, remote_password=choices.cloud_password,
                              cafile=str(cloud_ca) if choices.cloud_cafile else None)
    dropin = BrokerConfig(port=choices.meter_port or None, host="0.0.0.0", system=True,
                          password_file=meters_passwd, acl_file=meters_acl, tls=tls_listener(layout, choices.tls_port),
                          service_port=choices.service_port, service_password_file=services_passwd,
                          service_acl_file=services_acl, bridge=bridge).render()
    # 0640 root:mosquitto: Mosquitto reads it again as user mosquitto on a reload, and the
    # bridge's password is in it
    changes.broker |= system.write(layout.dropin, dropin, 0o640, None, BROKER_GROUP)

    # gateway.toml: the managed block; the rest of the file stays as the operator left it
    changes.service |= config.write(system, {
        "db_path": str(Path("/") / layout.gateway_db.relative_to(layout.root)),
        "timezone": choices.timezone,
        "mqtt_host": "127.0.0.1",
        "mqtt_port": choices.service_port,
        "mqtt_username": GATEWAY_ACCOUNT,
        "mqtt_password": password,
        "http_host": choices.http_host,
        "http_port": choices.http_port,
        "region": choices.region,
        "api_url": f"http://{_url_host(choices.broker_host)}:{choices.http_port}" if choices.region else "",
    })

    # site.toml: provisioning on this fog needs no flags but the Wi-Fi
    system.write(layout.site_toml, _site(layout, choices, configfile.read(layout.site_toml)[1]), 0o600)
    state.save(system, choices)

    # the store, as the service's user, and the first admin
    db = layout.gateway_db

    def init_store():
        from ..store.engine import open_engine
        open_engine(db).dispose()
    system.as_owner(db, init_store)
    report.admin = first_admin(system, db, _gateway_accounts(db))
    token_file = layout.etc / "cloud-reader.token"
    if bridge is not None and not token_file.exists():
        # the cloud shows this fog's meter detail with an operator's token of this fog
        token = system.as_owner(db, lambda: _cloud_token(_gateway_accounts(db)))
        system.write(token_file, token + "\n", 0o600)
        report.next.append(f"at the cloud, for this fog's meter detail: copy {token_file} there, then "
                           f"sudo aquafog setup cloud --fog-token {choices.region}=cloud-reader.token")

    start_services(system, changes, GATEWAY_UNIT, report, getattr(opts, "from_package", False))
    report.urls = [f"http://{_url_host(choices.broker_host)}:{choices.http_port}/"]
    report.lines += [
        f"meters connect to {choices.broker_host}:"
        + " and ".join(x for x in (f"{choices.meter_port} (MQTT)" if choices.meter_port else "",
                                   f"{choices.tls_port} (MQTT over TLS)" if choices.tls_port else "") if x),
        f"region: {choices.region or 'none (a fog on its own)'}"
        + (f", bridged to the cloud broker {choices.cloud_host}:{choices.cloud_port}" if bridge else ""),
    ]
    report.next[:0] = [
        "provision meters: sudo aquafog meter provision --count 10 --prefix m --wifi-ssid <network> "
        "--wifi-password <password>",
        "then flash each board: sudo aquafog flash /dev/ttyUSB0 m0001",
    ]
    return report


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _gateway_accounts(db: Path):
    def open_accounts():
        from ..accounts import Accounts as UserAccounts
        from ..store.engine import open_engine
        from ..store.schema import ACCOUNTS
        return UserAccounts(ACCOUNTS), open_engine(db, create=False)
    return open_accounts


def _cloud_token(open_accounts) -> str:
    accounts, engine = open_accounts()
    try:
        with engine.begin() as conn:
            if not any(u["username"] == "cloud-reader" for u in accounts.list_users(conn)):
                import secrets
                accounts.add_user(conn, "cloud-reader", "operator", secrets.token_urlsafe(24), ())
            return accounts.add_token(conn, "cloud-reader", "the city cloud (aquafog setup fog --join)")[1]
    finally:
        engine.dispose()


def _tls_files(opts, layout: Layout, choices: FogChoices) -> dict[str, tuple[Path, int]]:
    """--tls-cert/--tls-key/--tls-ca: checked, to be copied where Mosquitto reads them."""
    given = {k: getattr(opts, k, None) for k in ("tls_cert", "tls_key", "tls_ca")}
    if not any(given.values()):
        if choices.tls_port and not (layout.certs / "server.crt").exists():
            raise SetupError("--tls-port needs the broker's certificate: --tls-cert, --tls-key and --tls-ca")
        return {}
    if not all(given.values()):
        raise SetupError("TLS needs all three: --tls-cert (the broker's certificate, naming this fog's address), "
                         "--tls-key (its key) and --tls-ca (the CA the meters trust); nothing was changed")
    from ..tls import cert_problems
    problems = cert_problems("--tls-", given["tls_ca"], given["tls_cert"], given["tls_key"])
    if problems:
        raise SetupError("the TLS files cannot be used:\n  " + "\n  ".join(problems) + "\nnothing was changed")
    if not choices.tls_port:
        choices.tls_port = 8883
    return {"ca.crt": (Path(given["tls_ca"]), 0o644), "server.crt": (Path(given["tls_cert"]), 0o644),
            "server.key": (Path(given["tls_key"]), 0o640)}


def _site(layout: Layout, c: FogChoices, rest: str | None) -> str:
    def p(path: Path) -> str:
        return str(Path("/") / path.relative_to(layout.root))
    site = {
        "topic_root": "aquafog",
        "broker_host": c.broker_host,
        "broker_port": c.tls_port or c.meter_port,
        "gateway_config": p(layout.gateway_toml),
        "passwd_file": p(layout.broker_file("meters.passwd")),
        "acl_file": p(layout.broker_file("meters.acl")),
        "services_passwd_file": p(layout.broker_file("services.passwd")),
        "services_acl_file": p(layout.broker_file("services.acl")),
        "meters_dir": p(layout.meters_dir),
    }
    if c.tls_port:
        site["tls_ca"] = p(layout.certs / "ca.crt")
    new_rest = ("# `aquafog meter provision` on this fog reads this file; its flags beat it. The Wi-Fi\n"
                "# the meters join is yours to give: --wifi-ssid and --wifi-password, or here:\n"
                "# wifi_ssid = \"pumphouse\"\n# wifi_password = \"...\"\n")
    return configfile.render("fog", site, rest, new_rest)

