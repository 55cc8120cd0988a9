"""What `aquafog setup fog` and `aquafog setup cloud` share: the choices kept in
setup.toml, the broker's account files, the first admin, and the report printed at the end."""

from __future__ import annotations

import secrets
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..provisioning import ProvisionError, acl, identity, mosquitto
from . import configfile
from .layout import BROKER_GROUP, Layout
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
