"""Mosquitto for a fog: the generated configuration, and a local broker process for dev and tests.

The configuration is generated, not hand-written, because two defaults of Mosquitto
break AquaFog's promises: `max_queued_messages 1000` silently drops QoS 1 readings
queued for a busy or restarting gateway, and no persistence loses that queue on a
broker restart.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .bridge import BridgeConfig
    from .tls import TlsListener

# The broker refuses anything larger (and disconnects the sender); the gateway has its
# own, much smaller, limit for what it accepts and counts the rest as rejected.
BROKER_MAX_PACKET_BYTES = 2 * 1024 * 1024


@dataclass
class BrokerConfig:
    """port/host: the plain MQTT listener (port None: none, only TLS); tls: a TLS listener
    (aquafog.tls.TlsListener), besides or instead of it. Passwords and the ACL apply to both.
    Anonymous clients are refused unless allow_anonymous (tests on loopback only).

    service_port: a listener on 127.0.0.1 for the fog's own services (gateway, tools). With
    it, the meters' listeners bind each client id to its user name
    (`use_username_as_clientid`), so one meter's credentials cannot take over another
    meter's connection by connecting with its client id (Mosquitto closes the older of
    two connections with the same id). The services keep their own ids there: the
    gateway opens several connections with one account. service_password_file and
    service_acl_file give that listener accounts of its own, so that a meter's password
    does not open it at all; without them it shares the meters' files.

    system: a drop-in for the system's own Mosquitto (Debian's /etc/mosquitto/conf.d/):
    its mosquitto.conf already sets the persistence folder, the log file and the pid file
    and names its user, and Mosquitto refuses a second persistence_location."""

    port: int | None
    data_dir: Path | None = None
    host: str = "127.0.0.1"
    allow_anonymous: bool = False
    password_file: Path | None = None
    acl_file: Path | None = None
    user: str | None = None  # Mosquitto started as root switches to this user (its default: mosquitto)
    extra: list[str] = field(default_factory=list)
    bridge: "BridgeConfig | None" = None  # a fog's link to the cloud (aquafog.bridge)
    tls: "TlsListener | None" = None
    service_port: int | None = None
    service_password_file: Path | None = None
    service_acl_file: Path | None = None
    system: bool = False

    def _auth(self, service: bool = False) -> list[str]:
        password_file = (self.service_password_file if service else None) or self.password_file
        acl_file = (self.service_acl_file if service else None) or self.acl_file
        lines = [f"allow_anonymous {'true' if self.allow_anonymous else 'false'}"]
        if password_file:
            lines.append(f"password_file {Path(password_file).resolve()}")
        if acl_file:
            lines.append(f"acl_file {Path(acl_file).resolve()}")
        return lines

    def _check(self) -> bool:
        """Problems a broker would only report by refusing to start (or, worse, by starting
        open); returns whether each listener has its own settings."""
        if self.port is None and self.tls is None:
            raise ValueError("broker: no listener; give a plain port, a TLS listener, or both")
        if self.tls is not None and self.port == self.tls.port:
            raise ValueError(f"tls port: {self.tls.port} is the plain listener's port too; give each its own "
                             "(MQTT over TLS usually listens on 8883)")
        if not self.allow_anonymous and self.password_file is None:
            raise ValueError("password file: with anonymous access off, clients need accounts "
                             "(--password-file; `aquafog meter provision` keeps it)")
        if (self.service_password_file or self.service_acl_file) and self.service_port is None:
            raise ValueError("service password file: needs a service listener (--service-port)")
        if self.service_password_file and not self.service_acl_file and self.acl_file:
            raise ValueError("service ACL file: the meters' listeners have an ACL, so the service listener "
                             "needs its own (--service-acl-file)")
        if not self.system and self.data_dir is None:
            raise ValueError("data dir: where Mosquitto keeps its persistence file and log (--data-dir)")
        per_listener = self.service_port is not None
        if per_listener:
            if self.password_file is None or self.allow_anonymous:
                raise ValueError("service port: binding meters' client ids to their user names needs "
                                 "a password file (--password-file) and anonymous access off")
            if self.service_port in (self.port, self.tls.port if self.tls else None):
                raise ValueError(f"service port: {self.service_port} is another listener's port too; "
                                 "give each its own")
        return per_listener

    def render(self) -> str:
        per_listener = self._check()
        lines = [
            "# Generated by AquaFog (aquafog.broker). Edit the generator, not this file.",
            f"per_listener_settings {'true' if per_listener else 'false'}",
            *([f"listener {self.port} {self.host}"] if self.port is not None and not per_listener else []),
            *([] if per_listener else [f"allow_anonymous {'true' if self.allow_anonymous else 'false'}"]),
            # Keep queued QoS 1 messages across a broker restart.
            "persistence true",
        ]
        if not self.system:
            lines.append(f"persistence_location {Path(self.data_dir).resolve()}/")
        lines += [
            "autosave_interval 30",
            # Never drop QoS 1 messages queued for a persistent session (the gateway's):
            # the default of 1000 loses readings as soon as the gateway falls behind.
            "max_queued_messages 0",
            "max_queued_bytes 0",
            # The gateway acknowledges (PUBACK) only after its batch is on disk, so it
            # needs many messages in flight; MQTT 5 clients announce their own limit.
            "max_inflight_messages 0",
            f"max_packet_size {BROKER_MAX_PACKET_BYTES}",
            # Gateway sessions outlive a long outage; meters use clean sessions.
            "persistent_client_expiration 14d",
            "set_tcp_nodelay true",
        ]
        if not self.system:
            lines.append(f"log_dest file {Path(self.data_dir).resolve()}/mosquitto.log")
        lines += [
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self.user and not self.system:
            lines.append(f"user {self.user}")
        if not per_listener:
            lines.extend(self._auth()[1:])
        lines.extend(self.extra)
        # After the general options: what follows a listener line is its own.
        if per_listener:
            meters = [*self._auth(), "use_username_as_clientid true"]
            lines += ["# The fog's own services (gateway, tools): loopback only, client ids their own.",
                      f"listener {self.service_port} 127.0.0.1", *self._auth(service=True)]
            if self.port is not None:
                lines += ["# Meters: a client id is its user name.", f"listener {self.port} {self.host}", *meters]
            if self.tls is not None:
                lines += [*self.tls.render(), *meters]
        elif self.tls is not None:
            lines.extend(self.tls.render())
        if self.bridge is not None:  # last: Mosquitto reads every line after `connection` as the bridge's
            lines.extend(self.bridge.render())
        return "\n".join(lines) + "\n"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "mosquitto is not installed: run `make deps` (installs it with apt-get as root), "
        "or `sudo apt-get install mosquitto mosquitto-clients`"
    )


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f} s")
            time.sleep(0.02)


class LocalBroker:
    """A Mosquitto process on 127.0.0.1 with a generated config (dev, demo and tests)."""

    def __init__(self, data_dir: Path, port: int | None = None, *, new_session: bool = False, **config):
        """new_session: run Mosquitto in its own session, out of reach of a terminal's Ctrl-C
        (the demo stops its children itself, in order)."""
        self.new_session = new_session
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        if os.geteuid() == 0:
            # Started as root, Mosquitto switches to user `mosquitto`, which cannot write the
            # caller's private dirs: no log and, silently, no persistence across a restart.
            config.setdefault("user", "root")
        # Tests on loopback only; every other broker refuses anonymous clients (BrokerConfig).
        config.setdefault("allow_anonymous", "password_file" not in config)
        self.config = BrokerConfig(port=self.port, data_dir=self.data_dir, **config)
        self.conf_path = self.data_dir / "mosquitto.conf"
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mosquitto.log"

    @property
    def service_port(self) -> int:
        """Where the fog's own services connect: the loopback service listener if there is
        one, else the plain listener."""
        return self.config.service_port or self.port

    @property
    def tls_port(self) -> int | None:
        return self.config.tls.port if self.config.tls is not None else None

    def start(self, timeout: float = 10.0) -> "LocalBroker":
        if self.config.tls is not None:
            # a missing or mismatched file, named, before Mosquitto's own words
            self.config.tls.check(broker_user=self.config.user or ("mosquitto" if os.geteuid() == 0 else None))
        self.conf_path.write_text(self.config.render())
        self.proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=self.new_session,
        )
        try:
            wait_for_port(self.host, self.port, timeout, self.proc)
            if self.config.tls is not None:
                wait_for_port(self.config.tls.host, self.config.tls.port, timeout, self.proc)
            if self.config.service_port is not None:
                wait_for_port("127.0.0.1", self.config.service_port, timeout, self.proc)
        except Exception as exc:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port}: {exc}. {err.strip()}") from exc
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
