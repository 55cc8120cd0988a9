"""Fixtures for provisioning (aquafog.provisioning): a fog's files in a temporary folder
(the gateway's store, Mosquitto's password and ACL files, the meters' configs), and a
check of a password against a Mosquitto password file.

Every test runs as on a machine without an installed fog and without systemd, whatever
this machine has: no /etc/aquafog/site.toml, no $AQUAFOG_SITE, no `systemctl reload`."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from aquafog.provisioning import mosquitto, site
from aquafog.provisioning.site import Site
from aquafog.store.engine import open_engine


@pytest.fixture(autouse=True)
def no_installed_fog(tmp_path, monkeypatch):
    monkeypatch.delenv(site.SITE_ENV, raising=False)
    monkeypatch.setattr(site, "SYSTEM_SITE_FILE", tmp_path / "no-etc-aquafog" / "site.toml")
    monkeypatch.setattr(mosquitto, "SYSTEMD_RUNTIME_DIR", tmp_path / "no-run-systemd")


def passwd_matches(path: Path, user: str, password: str) -> bool:
    """Mosquitto 2's `$7$` entries: PBKDF2-HMAC-SHA512(password, salt, iterations)."""
    for line in Path(path).read_text().splitlines():
        name, _, entry = line.partition(":")
        if name == user:
            _, kind, iterations, salt, digest = entry.split("$")
            assert kind == "7", entry
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
            return base64.b64encode(got).decode() == digest
    raise AssertionError(f"no user {user!r} in {path}")


@pytest.fixture
def fog(tmp_path) -> Site:
    """Site settings over a fresh fog: an initialised gateway store, no broker files yet."""
    db = tmp_path / "gateway.db"
    open_engine(db).dispose()
    return Site(wifi_ssid="pumphouse", wifi_password="wifi-secret", broker_host="192.168.1.10",
                db=db, passwd_file=tmp_path / "aquafog.passwd", acl_file=tmp_path / "aquafog.acl",
                meters_dir=tmp_path / "meters")


@pytest.fixture
def password_ok():
    return passwd_matches
