"""What `aquafog setup fog` and `aquafog setup cloud` share: the choices kept in
setup.toml, the broker's account files, the first admin, and the report printed at the end."""

from __future__ import annotations

import secrets
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..config import ConfigError
from ..provisioning import ProvisionError, acl, identity, mosquitto
from . import configfile
from .layout import BROKER_GROUP, USER, Layout
from .system import SetupError, System


@dataclass
class Changes:
    broker: bool = False   # Mosquitto must restart (listeners, accounts, certificates)
    service: bool = False  # the AquaFog service must restart (its config)


@dataclass
class Report:
    role: str
    admin: tuple[str, str] | None = None  # (user, password) made now, shown once
    running: bool | None = None           # None: no systemd here (a chroot)
    urls: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    next: list[str] = field(default_factory=list)

    def render(self) -> str:
        unit = "aquafog-gateway" if self.role == "fog" else "aquafog-cloud"
        out = [f"AquaFog {self.role} is set up."]
        if self.running is None:
            out.append(f"{unit}.service is enabled; it starts at the next boot (no running systemd here).")
        elif self.running:
            out.append(f"{unit}.service is running: systemctl status {unit}; journalctl -u {unit}")
        else:
            out.append(f"{unit}.service is NOT running: see why with journalctl -u {unit} -n 50")
        out += [f"dashboard and API: {u}" for u in self.urls] + self.lines
        if self.admin:
            user, password = self.admin
            out += ["", f"First admin: user {user!r}, password {password}",
                    "  shown this once; log in and keep it safe, or set another: sudo aquafog user passwd "
                    f"{'--cloud ' if self.role == 'cloud' else ''}{user}"]
        if self.next:
            out += ["", "next:"] + [f"  {n}" for n in self.next]
        return "\n".join(out)


@dataclass
class State:
    path: Path
    choices: object
    role: str

    def save(self, system: System, choices) -> None:
        lines = ["# What `aquafog setup` was told on this machine; run it again to change (it keeps the rest).",
                 f"role = {configfile.toml_value(self.role)}"]
        lines += [f"{k} = {configfile.toml_value(v)}" for k, v in asdict(choices).items()]
        system.write(self.path, "\n".join(lines) + "\n", 0o600)


def setup_state(layout: Layout, cls, role: str) -> State:
    """The choices of an earlier setup of this machine (defaults the first time)."""
    raw = {}
    if layout.setup_toml.exists():
        try:
            raw = tomllib.loads(layout.setup_toml.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise SetupError(f"{layout.setup_toml}: not valid TOML ({exc}); fix or remove it") from None
        if raw.get("role", role) != role:
            raise SetupError(f"this machine is set up as a {raw['role']} ({layout.setup_toml}); a machine is a fog "
                             "or a cloud, not both (each needs the system's Mosquitto to itself)")
    known = {f.name for f in fields(cls)}
    choices = cls(**{k: v for k, v in raw.items() if k in known})
    return State(layout.setup_toml, choices, role)


def check_mosquitto(layout: Layout) -> None:
    """Debian's Mosquitto, reading the drop-in folder: before any change."""
    conf = layout.dropin.parent.parent / "mosquitto.conf"
    if not layout.dropin.parent.is_dir() or not conf.is_file():
        raise SetupError(f"{conf} or {layout.dropin.parent} is missing: install Mosquitto first "
                         "(sudo apt install mosquitto); nothing was changed")
    folder = "/" + str(layout.dropin.parent.relative_to(layout.root))
    if not any(line.split() == ["include_dir", folder] for line in conf.read_text().splitlines()):
        raise SetupError(f"{conf} has no `include_dir {folder}` line (Debian's has): AquaFog's settings would be "
                         f"ignored; add it back, then run setup again; nothing was changed")


def read_secret(path: str | None, what: str) -> str | None:
    if not path:
        return None
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise SetupError(f"{what} {path}: {exc.strerror}") from None
    if not text or "\n" in text:
        raise SetupError(f"{what} {path}: must hold one line")
    return text


class Accounts:
    """The broker's password and ACL files (0640 root:mosquitto: Mosquitto 2 reads them
    after dropping root, also on every reload)."""

    def __init__(self, layout: Layout, system: System):
        self.layout, self.system = layout, system

    def file(self, path: Path) -> bool:
        if path.exists():
            self.system.write(path, path.read_text(), 0o640, None, BROKER_GROUP)  # owner and mode only
            return False
        return self.system.write(path, "", 0o640, None, BROKER_GROUP)

    def acl(self, path: Path, patterns: bool, services: dict[str, str] | None = None,
            region: str | None = None) -> bool:
        old = path.read_text() if path.exists() else ""
        try:
            text = acl.ensure(old, "aquafog", services, region=region, patterns=patterns)
        except ProvisionError as exc:
            raise SetupError(exc.render()) from None
        return self.system.write(path, text, 0o640, None, BROKER_GROUP)

    def service(self, passwd: Path, acl_file: Path, name: str, role: str, password: str | None,
                region: str | None = None) -> tuple[str, bool]:
        """A service account in its own files: the known password kept when the account
        exists, else a new one. Returns (password, changed)."""
        changed = self.file(passwd)
        changed |= self.acl(acl_file, patterns=False, services={name: role}, region=region)
        try:
            pf = mosquitto.PasswdFile(passwd)
            if password and name in pf.users():
                return password, changed
            password = identity.new_password()
            pf.set(name, password)
        except ProvisionError as exc:
            raise SetupError(exc.render()) from None
        return password, True


class ServiceConfig:
    """A service's config file (/etc/aquafog/gateway.toml, cloud.toml): setup's managed block
    on top, the operator's own lines below it, kept as they are."""

    def __init__(self, path: Path, role: str, cls, docs: dict[str, str]):
        self.path, self.role, self.cls, self.docs = path, role, cls, docs
        self.managed, self.rest = configfile.read(path)
        if path.exists() and self.rest is None:
            raise SetupError(f"{path} was not written by `aquafog setup` (no managed block): move it away and run "
                             "setup again, then copy your own settings below the block")

    def password(self, account: str) -> str | None:
        """The service account's password this file holds, if it is that account's."""
        return self.managed.get("mqtt_password") if self.managed.get("mqtt_username") == account else None

    def write(self, system: System, managed: dict) -> bool:
        """The file with this managed block (0640 root:aquafog: it holds the broker password),
        checked as the service will load it; True if it changed."""
        both = configfile.overlaps(managed, self.rest or "")
        if both:
            raise SetupError(f"{self.path}: {', '.join(both)} set below the managed block too; setup sets them "
                             f"(remove your lines, or give them to setup: `aquafog setup {self.role} --help`)")
        text = configfile.service_config(self.role, self.cls, self.docs, managed, self.rest)
        changed = system.write(self.path, text, 0o640, None, USER)
        try:
            self.cls.load(self.path, env={})
        except ConfigError as exc:
            raise SetupError(f"{self.path} is not valid:\n  " + "\n  ".join(exc.errors)
                             + "\nfix it (`aquafog config check` lists the same), then run setup again") from None
        return changed


def tls_listener(layout: Layout, port: int):
    """The broker's TLS listener on every interface, from the certificates setup copied."""
    if not port:
        return None
    from ..tls import TlsListener
    return TlsListener(str(layout.certs / "ca.crt"), str(layout.certs / "server.crt"),
                       str(layout.certs / "server.key"), port=port, host="0.0.0.0")


def start_services(system: System, changes: Changes, unit: str, report: Report, from_package: bool) -> None:
    """Enabled always (a chroot too); with a running systemd, Mosquitto restarted when its
    files changed (the service with it: PartOf), the service when its config changed, on a
    package's new version, or when it is not running."""
    system.enable("mosquitto.service", unit)
    if not system.systemd:
        return
    if changes.broker or not system.active("mosquitto.service"):
        system.systemctl("restart", "mosquitto.service")
    if changes.service or from_package or not system.active(unit):
        system.systemctl("restart", unit)
    report.running = system.active(unit)


def first_admin(system: System, db: Path, open_accounts) -> tuple[str, str] | None:
    """An admin named `admin` with a random password, unless the store has an admin."""
    password = secrets.token_urlsafe(15)

    def make():
        accounts, engine = open_accounts()
        try:
            with engine.begin() as conn:
                if any(u["role"] == "admin" for u in accounts.list_users(conn)):
                    return None
                accounts.add_user(conn, "admin", "admin", password, ())
                return ("admin", password)
        finally:
            engine.dispose()
    return system.as_owner(db, make)
