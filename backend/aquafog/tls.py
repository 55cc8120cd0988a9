"""TLS for MQTT, both ends: the broker's TLS listener (the lines of mosquitto.conf) and
the TLS settings of AquaFog's own MQTT clients (gateway, cloud), with the checks that
turn a missing, unreadable or mismatched certificate file into an error naming the
option and what to do, before Mosquitto or paho fail with an OpenSSL code.

Both ends insist on TLS 1.2 or newer and verify the peer against a CA file; the
client also checks that the broker's certificate names the host it dialled.
`aquafog tls` makes a development CA and certificates (tools/README.md "TLS").
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import ssl
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("aquafog.tls")

TLS_VERSIONS = ("tlsv1.2", "tlsv1.3")  # the oldest a listener accepts; never older than 1.2
DEV_CERTS_HINT = ("make development certificates with `aquafog tls ca` and `... tls server` "
                  "(tools/README.md 'TLS'), or give the file your CA issued")


def file_problem(option: str, path) -> str | None:
    """Why `path` cannot be used as `option` (None: it can): missing, a folder, unreadable."""
    if not path:
        return f"{option}: must name a file"
    p = Path(path)
    if not p.exists():
        return f"{option}: {path} does not exist; {DEV_CERTS_HINT}"
    if not p.is_file():
        return f"{option}: {path} is not a file"
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        return (f"{option}: cannot read {path} ({exc.strerror}); give the user who runs this "
                f"(uid {os.geteuid()}) read access, e.g. chgrp it to that user's group and chmod 0640")
    return None


def unreadable_by(user: str, path) -> str | None:
    """Why `user` cannot read `path` by its mode bits (None: it can, or the user does not
    exist here). Mosquitto 2.0 loads its certificates after dropping root to `mosquitto`."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    if pw.pw_uid == 0:
        return None
    gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}

    def allows(st: os.stat_result, bit: int) -> bool:
        if st.st_uid == pw.pw_uid:
            return bool(st.st_mode >> 6 & bit)
        if st.st_gid in gids:
            return bool(st.st_mode >> 3 & bit)
        return bool(st.st_mode & bit)

    p = Path(path).resolve()
    for folder in reversed(p.parents):
        if not allows(folder.stat(), stat.S_IXOTH):
            return f"user {user} cannot enter the folder {folder}"
    if not allows(p.stat(), stat.S_IROTH):
        return f"user {user} cannot read it"
    return None


def _ssl_problem(what: str, exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return f"{what}: {reason}"


def cert_problems(prefix: str, cafile, certfile=None, keyfile=None) -> list[str]:
    """Every problem with a CA file and an optional certificate + key pair, as
    `<prefix>cafile: ...`: files unreadable, not PEM, or a key that does not match."""
    errors = []
    names = {"cafile": cafile, "certfile": certfile, "keyfile": keyfile}
    if (certfile is None or certfile == "") != (keyfile is None or keyfile == ""):
        errors.append(f"{prefix}certfile/{prefix}keyfile: give both (a certificate and its private key) or neither")
    if certfile and not cafile:
        errors.append(f"{prefix}certfile: needs {prefix}cafile too (the CA that signed the other end's certificate)")
    bad = set()
    for name, value in names.items():
        if value:
            problem = file_problem(prefix + name, value)
            if problem:
                errors.append(problem)
                bad.add(name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile and "cafile" not in bad:
        try:
            ctx.load_verify_locations(cafile=str(cafile))
        except (ssl.SSLError, OSError, ValueError) as exc:
            errors.append(_ssl_problem(f"{prefix}cafile: {cafile} holds no usable PEM CA certificate", exc))
    if certfile and keyfile and not bad & {"certfile", "keyfile"}:
        try:
            ctx.load_cert_chain(str(certfile), str(keyfile))
        except (ssl.SSLError, OSError, ValueError) as exc:
            if getattr(exc, "reason", "") == "KEY_VALUES_MISMATCH":
                errors.append(f"{prefix}keyfile: {keyfile} is not the private key of {prefix}certfile {certfile} "
                              "(give the key made with that certificate)")
            else:
                errors.append(_ssl_problem(f"{prefix}certfile/{prefix}keyfile: {certfile} and {keyfile} are not a "
                                           "PEM certificate and its (unencrypted) private key", exc))
    return errors


# --- the broker's side ------------------------------------------------------------------

@dataclass
class TlsListener:
    """A TLS listener of a broker (Mosquitto 2.x), besides or instead of the plain one.

    port, host          where it listens (8883 is MQTT over TLS's registered port)
    cafile              the CA whose certificates clients must present (with
                        require_certificate); also sent to clients as the chain's root
    certfile, keyfile   the broker's certificate (naming every host and IP the clients
                        dial, as subjectAltName) and its private key
    require_certificate mutual TLS: a client without a certificate the CA signed is refused
                        (passwords and the ACL still apply on top)
    tls_version         the oldest version accepted: tlsv1.2 (the default) or tlsv1.3
    """

    cafile: str
    certfile: str
    keyfile: str
    port: int = 8883
    host: str = "127.0.0.1"
    require_certificate: bool = False
    tls_version: str = "tlsv1.2"

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 1 <= self.port <= 65535:
            raise ValueError(f"tls port: {self.port!r} must be an integer 1-65535")
        if self.tls_version not in TLS_VERSIONS:
            raise ValueError(f"tls_version: {self.tls_version!r} must be one of {', '.join(TLS_VERSIONS)} "
                             "(the oldest TLS version the listener accepts)")
        for name in ("cafile", "certfile", "keyfile", "host"):
            value = getattr(self, name)
            if not value or any(ord(c) < 32 for c in str(value)) or " " in str(value).strip():
                raise ValueError(f"{name}: {value!r} must be a non-empty path or name without spaces "
                                 "or control characters")

    def problems(self, prefix: str = "tls_", broker_user: str | None = None) -> list[str]:
        """Every problem with the files, as `<prefix><option>: ...` (empty: Mosquitto can load
        them). broker_user: the user Mosquitto reads them as (it drops root before loading them)."""
        errors = cert_problems(prefix, self.cafile, self.certfile, self.keyfile)
        if broker_user and not errors:
            for name in ("cafile", "certfile", "keyfile"):
                why = unreadable_by(broker_user, getattr(self, name))
                if why:
                    errors.append(
                        f"{prefix}{name}: {getattr(self, name)}: Mosquitto reads it as user {broker_user} (after "
                        f"dropping root), but {why}. Give that user read access: `chgrp {broker_user} FILE; "
                        "chmod 0640 FILE` (and 0755 or group access on its folders), or copy it to "
                        "/etc/mosquitto/certs/ that way")
        return errors

    def check(self, prefix: str = "tls_", broker_user: str | None = None) -> None:
        errors = self.problems(prefix, broker_user)
        if errors:
            raise TlsError(errors)

    def render(self) -> list[str]:
        """The listener block: its options apply to this listener (they follow its line)."""
        return [
            "# MQTT over TLS (aquafog.tls): passwords and the ACL apply here as on every listener.",
            f"listener {self.port} {self.host}",
            f"cafile {Path(self.cafile).resolve()}",
            f"certfile {Path(self.certfile).resolve()}",
            f"keyfile {Path(self.keyfile).resolve()}",
            f"tls_version {self.tls_version}",
            f"require_certificate {'true' if self.require_certificate else 'false'}",
        ]


class TlsError(ValueError):
    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__(f"{len(errors)} TLS problem(s):\n  " + "\n  ".join(errors))


# --- the clients' side ------------------------------------------------------------------

@dataclass(frozen=True)
class ClientTls:
    """What an AquaFog MQTT client needs for TLS: the CA that signed the broker's
    certificate, and a certificate + key of its own if the broker asks for one."""

    cafile: str
    certfile: str = ""
    keyfile: str = ""

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cafile=self.cafile)
        if self.certfile:
            ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx

    def apply(self, client) -> None:
        """Turn TLS on for a paho client (before it connects). A failed handshake is logged
        once per distinct reason: paho retries quietly, and a TLS problem (an unknown CA, a
        certificate for another host, a refused client certificate) does not fix itself."""
        client.tls_set_context(self.context())
        last = [""]

        def on_connect_fail(_client, _userdata) -> None:
            exc = sys.exc_info()[1]  # paho calls this inside its `except OSError`
            if isinstance(exc, ssl.SSLError) and str(exc) != last[0]:
                last[0] = str(exc)
                log.error("TLS to the broker failed: %s. Check mqtt_cafile (the CA that signed the broker's "
                          "certificate), that the certificate names the host in mqtt_host, and, if the broker "
                          "requires one, mqtt_certfile/mqtt_keyfile (docs/security.md); retrying", exc)

        client.on_connect_fail = on_connect_fail


def client_tls(cafile: str, certfile: str = "", keyfile: str = "") -> ClientTls | None:
    """The settings from a config's mqtt_cafile/mqtt_certfile/mqtt_keyfile (None: plain MQTT)."""
    return ClientTls(cafile, certfile, keyfile) if cafile else None


def apply_client_tls(client, tls: ClientTls | None) -> None:
    if tls is not None:
        tls.apply(client)
