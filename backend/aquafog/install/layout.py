"""Where an installed AquaFog keeps its files (Debian's layout), in one place. `root` moves
the whole tree (tests, and building an image)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

USER = "aquafog"          # the services' system user (and group)
BROKER_GROUP = "mosquitto"  # Debian's Mosquitto reads its files as this group
VENV = Path("/opt/aquafog/venv")  # built by the aquafog package from its wheels


@dataclass(frozen=True)
class Layout:
    root: Path = Path("/")

    def _p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    # configuration: root:aquafog 0750, secrets 0640 (the services read them)
    @property
    def etc(self) -> Path:
        return self._p("/etc/aquafog")

    @property
    def setup_toml(self) -> Path:
        """What `aquafog setup` was told (region, ports, TLS ...): root only, it holds the
        cloud account's password."""
        return self.etc / "setup.toml"

    @property
    def gateway_toml(self) -> Path:
        return self.etc / "gateway.toml"

    @property
    def cloud_toml(self) -> Path:
        return self.etc / "cloud.toml"

    @property
    def site_toml(self) -> Path:
        """Provisioning's defaults on this fog (`aquafog meter provision`)."""
        return self.etc / "site.toml"

    @property
    def joins(self) -> Path:
        """At the cloud: one file per fog with its broker account, for `setup fog --join`."""
        return self.etc / "fogs"

    # state: aquafog:aquafog 0750
    @property
    def state(self) -> Path:
        return self._p("/var/lib/aquafog")

    @property
    def gateway_db(self) -> Path:
        return self.state / "gateway.db"

    @property
    def cloud_db(self) -> Path:
        return self.state / "cloud.db"

    @property
    def meters_dir(self) -> Path:
        """The provisioned meters' config.json (their passwords): root only."""
        return self.state / "meters"

    # the system's Mosquitto
    @property
    def dropin(self) -> Path:
        return self._p("/etc/mosquitto/conf.d/aquafog.conf")

    @property
    def broker_dir(self) -> Path:
        """Password and ACL files and certificates: root:mosquitto 0750, files 0640."""
        return self._p("/etc/mosquitto/aquafog")

    def broker_file(self, name: str) -> Path:
        return self.broker_dir / name

    @property
    def certs(self) -> Path:
        return self.broker_dir / "certs"

    @property
    def units(self) -> Path:
        return self._p("/lib/systemd/system")
