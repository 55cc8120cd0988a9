"""Site settings: defaults, then the site file (TOML, or JSON for a .json name), then
flags. Every problem is reported at once as `<key>: <problem>`.

Which site file: --site, else the file AQUAFOG_SITE names (set but empty: none), else
/etc/aquafog/site.toml if there is one (an installed fog's, written by its installer).
Paths in a site file are relative to the site file's folder; paths in flags are
relative to the current directory.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .. import firmware
from . import ProvisionError

# The repository checkout's firmware/meters (git-ignored); None for an installed aquafog,
# which has no checkout: there meters_dir must be given (the installed site file does).
DEFAULT_METERS_DIR = firmware.checkout_meters_dir()
SITE_ENV = "AQUAFOG_SITE"
SYSTEM_SITE_FILE = Path("/etc/aquafog/site.toml")

# key: (default, meaning). tools/README.md "Provisioning" documents every one (a test
# checks); the firmware validates the values that go into config.json.
SITE_KEYS = {
    "wifi_ssid": (None, "Wi-Fi network the meters join (required for meters)"),
    "wifi_password": ("", "its password"),
    "broker_host": (None, "the fog broker's address as the meters reach it (required for meters)"),
    "broker_port": (1883, "its port"),
    "topic_root": ("aquafog", "first topic level; the same as the gateway's topic_root"),
    "gateway_config": (None, "the gateway's gateway.toml: meters are registered in its db_path"),
    "db": (None, "or the gateway's SQLite file directly (beats gateway_config)"),
    "passwd_file": (None, "Mosquitto's password_file (required; created if missing)"),
    "acl_file": (None, "Mosquitto's acl_file (required; created if missing)"),
    "services_passwd_file": (None, "the service listener's own password_file: service accounts go there, never "
                                   "into passwd_file (with services_acl_file)"),
    "services_acl_file": (None, "the service listener's own acl_file (with services_passwd_file)"),
    "meters_dir": ("firmware/meters", "where <id>/config.json is written (git-ignored); the checkout's "
                                      "firmware/meters, no default on an installed aquafog"),
    "label": (None, "a label stored with the meters at the gateway (an address, a street)"),
    "meter": ({}, "a table of further config.json keys for every meter (k_factor, pins, ...)"),
    "tls_ca": (None, "MQTT over TLS: the CA certificate (PEM) the meters trust, copied next to config.json"),
    "tls_client_certs": (None, "mutual TLS: an `aquafog tls ca` folder that issues each meter a certificate"),
    "tls_hostname": (None, "the name in the broker's certificate, when broker_host is another (firmware default: "
                           "broker_host)"),
}
PATH_KEYS = ("gateway_config", "db", "passwd_file", "acl_file", "services_passwd_file", "services_acl_file",
             "meters_dir", "tls_ca", "tls_client_certs")
# Keys the firmware reads that come from the site's top level, and keys only the tool sets.
TOP_LEVEL_METER_KEYS = ("wifi_ssid", "wifi_password", "broker_host", "broker_port", "topic_root")
TOOL_METER_KEYS = ("meter_id", "mqtt_user", "mqtt_password")
# config.json keys of MQTT over TLS: from tls_ca, tls_client_certs and tls_hostname
TLS_METER_KEYS = ("mqtt_tls", "mqtt_cafile", "mqtt_certfile", "mqtt_keyfile", "mqtt_tls_hostname")


@dataclass
class Site:
    wifi_ssid: object = None
    wifi_password: object = ""
    broker_host: object = None
    broker_port: object = 1883
    topic_root: object = "aquafog"
    gateway_config: Path | None = None
    db: Path | None = None
    passwd_file: Path | None = None
    acl_file: Path | None = None
    services_passwd_file: Path | None = None
    services_acl_file: Path | None = None
    meters_dir: Path | None = DEFAULT_METERS_DIR
    label: str | None = None
    meter: dict = field(default_factory=dict)
    tls_ca: Path | None = None
    tls_client_certs: Path | None = None
    tls_hostname: str | None = None

    def meter_settings(self) -> dict:
        """What every meter's config.json gets besides its identity."""
        base = {k: getattr(self, k) for k in TOP_LEVEL_METER_KEYS}
        return {**base, **self.meter}

    @property
    def separate_services(self) -> bool:
        """Service accounts in files of their own (the service listener's), not the meters'."""
        return self.services_passwd_file is not None

    @property
    def service_files(self) -> tuple[Path | None, Path | None]:
        """(password file, ACL file) that service accounts go into."""
        if self.separate_services:
            return self.services_passwd_file, self.services_acl_file
        return self.passwd_file, self.acl_file


def find_site_file(given: str | Path | None) -> tuple[Path | None, str]:
    """The site file to use and why: --site, else $AQUAFOG_SITE (set but empty: none),
    else the installed fog's /etc/aquafog/site.toml if it exists, else none."""
    if given:
        return Path(given), "--site"
    env = os.environ.get(SITE_ENV)
    if env == "":
        return None, f"{SITE_ENV} is empty"
    if env is not None:
        if not Path(env).is_file():
            raise ProvisionError(f"{SITE_ENV}={env}: no such site file",
                                 hint=f"name an existing site file, or set {SITE_ENV} empty for none; "
                                      "nothing was changed")
        return Path(env), SITE_ENV
    if SYSTEM_SITE_FILE.is_file():
        return SYSTEM_SITE_FILE, "the installed fog's"
    return None, f"none given, no {SYSTEM_SITE_FILE}"


def read_site_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProvisionError(f"cannot read the site file {path}: {exc.strerror}",
                             hint="give an existing file (see tools/README.md 'Provisioning')") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ProvisionError(f"{path}: not valid {kind}: {exc}") from None
    if not isinstance(raw, dict):
        raise ProvisionError(f"{path}: must be a table of keys (see tools/README.md 'Provisioning')")
    return raw


def load(site_file: str | Path | None, flags: dict) -> Site:
    """Defaults < site file < flags (a flag of None is "not given"). `flags["meter"]`
    holds --set/--k-factor values, merged over the site file's meter table."""
    raw: dict = {}
    base = Path.cwd()
    errors: list[str] = []
    if site_file:
        raw = read_site_file(site_file)
        base = Path(site_file).resolve().parent
        errors += [f"{k}: unknown key (known: {', '.join(SITE_KEYS)})" for k in raw if k not in SITE_KEYS]
    values = {k: default for k, (default, _) in SITE_KEYS.items()}
    values["meters_dir"] = DEFAULT_METERS_DIR
    values["meter"] = {}
    for k, v in raw.items():
        if k not in SITE_KEYS:
            continue
        if k in PATH_KEYS:
            if not isinstance(v, str) or not v:
                errors.append(f"{k}: must be a path (a non-empty string), got {v!r}")
                continue
            v = (base / v).expanduser()
        values[k] = v
    meter = values["meter"]
    if not isinstance(meter, dict):
        errors.append(f"meter: must be a table of config.json keys, got {meter!r}")
        meter = {}
    meter = dict(meter)
    for k, v in flags.items():
        if k == "meter":
            meter.update(v or {})
        elif v is not None:
            values[k] = Path(v).expanduser() if k in PATH_KEYS else v
    for k in meter:
        if k in TOOL_METER_KEYS:
            errors.append(f"meter.{k}: set by the provisioning tool for each meter; remove it")
        elif k in TLS_METER_KEYS:
            errors.append(f"meter.{k}: give tls_ca (and tls_client_certs, tls_hostname) instead: the tool copies the "
                          "files next to config.json and sets the keys")
        elif k in TOP_LEVEL_METER_KEYS:
            errors.append(f"meter.{k}: give it at the top level of the site file (or as --{k.replace('_', '-')})")
    values["meter"] = {k: v for k, v in meter.items()
                       if k not in TOOL_METER_KEYS + TOP_LEVEL_METER_KEYS + TLS_METER_KEYS}
    if values["tls_hostname"] is not None and not isinstance(values["tls_hostname"], str):
        errors.append(f"tls_hostname: must be a string, got {values['tls_hostname']!r}")
    if values["label"] is not None and not isinstance(values["label"], str):
        errors.append(f"label: must be a string, got {values['label']!r}")
    if (values["services_passwd_file"] is None) != (values["services_acl_file"] is None):
        errors.append("services_passwd_file, services_acl_file: give both or neither (the service listener's "
                      "own password and ACL files)")
    for k in ("services_passwd_file", "services_acl_file"):
        twin = k.replace("services_", "")
        if values[k] is not None and values[twin] is not None and \
                Path(values[k]).expanduser().resolve() == Path(values[twin]).expanduser().resolve():
            errors.append(f"{k}: is {twin} too; the service listener's files must be others than the meters'")
    if errors:
        raise ProvisionError(f"{site_file or 'the settings'}: {len(errors)} error(s)", errors,
                             hint="fix them and run again; nothing was changed")
    return Site(**values)


def require(site: Site, keys) -> None:
    """Every missing required path at once."""
    missing = [k for k in keys if getattr(site, k) is None]
    if missing:
        raise ProvisionError(
            f"{len(missing)} required setting(s) missing", [
                f"{k}: required: {SITE_KEYS[k][1]} (--{k.replace('_', '-')}, or {k} in the site file)"
                for k in missing],
            hint="nothing was changed")


def parse_assignment(text: str) -> tuple[str, object]:
    """--set KEY=VALUE: VALUE is JSON (450, 0.1, true, "x") or else a plain string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ProvisionError(f"--set {text!r}: must be KEY=VALUE, e.g. --set report_interval_s=300")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value
