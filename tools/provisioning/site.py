"""Site settings: defaults, then the site file (TOML, or JSON for a .json name), then
flags. Every problem is reported at once as `<key>: <problem>`.

Paths in a site file are relative to the site file's folder; paths in flags are
relative to the current directory.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import ROOT, ProvisionError

DEFAULT_METERS_DIR = ROOT / "firmware" / "meters"

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
    "meters_dir": ("firmware/meters", "where <id>/config.json is written (git-ignored)"),
    "label": (None, "a label stored with the meters at the gateway (an address, a street)"),
    "meter": ({}, "a table of further config.json keys for every meter (k_factor, pins, ...)"),
    "tls_ca": (None, "MQTT over TLS: the CA certificate (PEM) the meters trust, copied next to config.json"),
    "tls_client_certs": (None, "mutual TLS: a `provision.py tls ca` folder that issues each meter a certificate"),
    "tls_hostname": (None, "the name in the broker's certificate, when broker_host is another (firmware default: "
                           "broker_host)"),
}
PATH_KEYS = ("gateway_config", "db", "passwd_file", "acl_file", "meters_dir", "tls_ca", "tls_client_certs")
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
    meters_dir: Path = DEFAULT_METERS_DIR
    label: str | None = None
    meter: dict = field(default_factory=dict)
    tls_ca: Path | None = None
    tls_client_certs: Path | None = None
    tls_hostname: str | None = None

    def meter_settings(self) -> dict:
        """What every meter's config.json gets besides its identity."""
        base = {k: getattr(self, k) for k in TOP_LEVEL_METER_KEYS}
        return {**base, **self.meter}


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
