"""A development certificate authority for MQTT over TLS: the CA, the broker's
certificate (every host name and IP address clients dial, as subjectAltName), and
client certificates for mutual TLS (the gateway's service account, a meter).

For development, tests and a pilot. In production use your organisation's PKI or a
public CA for the broker (tools/README.md "TLS"); this CA's key is a plain file.

Files in one folder (`--dir`):

    ca.crt  ca.key              the CA (key 0600); clients trust ca.crt
    server.crt  server.key      the broker's certificate and key (key 0640 group mosquitto
                                where that group exists: Mosquitto reads it after dropping root;
                                else 0600)
    clients/<name>.crt  .key    a client's certificate (CN = its MQTT user name) and key (0600)

Keys are ECDSA P-256 (small, fast on an ESP32's mbedTLS) unless RSA 2048 is asked for.
Certificates are written atomically (temporary file, fsync, rename): a crash never
leaves half a key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import ProvisionError
from .files import Staged, _give_to_broker, _write_tmp

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # reported when a certificate is asked for, not when aquafog starts
    x509 = None

CA_DAYS = 3650
LEAF_DAYS = 825  # what browsers and most TLS stacks still accept for a leaf certificate
KEY_TYPES = ("ec", "rsa")
# a DNS name (letters, digits, hyphens, dots; a leading *. for a wildcard)
_DNS_RE = re.compile(r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass
class Issued:
    """What a run wrote (paths), and what it replaced."""

    cert: Path
    key: Path
    replaced: bool = False
    names: list[str] = field(default_factory=list)


def _need_cryptography() -> None:
    if x509 is None:
        raise ProvisionError("the Python package `cryptography` is not installed",
                             hint="install aquafog with its tools: pip install 'aquafog[tools]' (`make deps` does)")


def ca_paths(d: Path) -> tuple[Path, Path]:
    return Path(d) / "ca.crt", Path(d) / "ca.key"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key(key_type: str):
    if key_type not in KEY_TYPES:
        raise ProvisionError(f"--key-type {key_type!r}: must be one of {', '.join(KEY_TYPES)}")
    return ec.generate_private_key(ec.SECP256R1()) if key_type == "ec" else rsa.generate_private_key(65537, 2048)


def _days(days: int, what: str) -> int:
    if not isinstance(days, int) or not 1 <= days <= 36500:
        raise ProvisionError(f"--days {days!r}: the {what} must be valid for 1 to 36500 days")
    return days


def _folder(d: Path) -> None:
    """0755: Mosquitto (user `mosquitto` after dropping root) must reach server.key in it;
    the keys themselves are 0600 (0640 group mosquitto for the broker's)."""
    for p in (d.parent, d) if d.name == "clients" else (d,):
        if not p.exists():
            p.mkdir(parents=True)
            os.chmod(p, 0o755)


def _write(path: Path, data: bytes, mode: int, broker: bool = False) -> None:
    """Atomically, with `mode` from the first byte on (a key is never readable by others).
    broker: 0640 group mosquitto where that group exists and may be given (Mosquitto 2.0
    loads its certificate and key after dropping root), else 0600."""
    _folder(path.parent)
    tmp = _write_tmp(path, data.decode("ascii"), mode)
    if broker:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            _give_to_broker(tmp, fd)
        finally:
            os.close(fd)
    Staged(path, tmp).commit()


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(d: Path, name: str = "AquaFog development CA", days: int = CA_DAYS, key_type: str = "ec",
            force: bool = False) -> Issued:
    """A new self-signed CA in `d`. An existing CA is refused unless `force`: a new CA
    invalidates every certificate the old one signed, everywhere ca.crt was copied."""
    _need_cryptography()
    d = Path(d)
    cert_path, key_path = ca_paths(d)
    existing = [p for p in (cert_path, key_path) if p.exists()]
    if existing and not force:
        raise ProvisionError(
            f"a CA already exists in {d}: " + ", ".join(str(p) for p in existing),
            hint="nothing was changed. Issue certificates with it (`tls server`, `tls client`), or give --force "
                 "to replace it: then every certificate it signed must be issued again and every client "
                 "(gateway, meters) needs the new ca.crt")
    days = _days(days, "CA")
    if not name or len(name) > 64:
        raise ProvisionError(f"--name {name!r}: the CA's name must be 1-64 characters")
    key = _new_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "AquaFog"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    # the key first: a ca.crt without its key would look like a CA that cannot sign
    _write(key_path, _pem_key(key), 0o600)
    _write(cert_path, _pem_cert(cert), 0o644)
    return Issued(cert_path, key_path, replaced=bool(existing), names=[name])


def load_ca(d: Path):
    _need_cryptography()
    cert_path, key_path = ca_paths(d)
    missing = [str(p) for p in (cert_path, key_path) if not p.exists()]
    if missing:
        raise ProvisionError(f"no CA in {d}: missing {', '.join(missing)}",
                             hint=f"make one first: aquafog tls ca --dir {d}")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ProvisionError(f"cannot use the CA in {d}: {exc}",
                             hint="ca.crt and ca.key must be the PEM files `tls ca` wrote (an unencrypted key)") from None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise ProvisionError(f"{cert_path} and {key_path} do not belong together",
                             hint="make a new CA with `tls ca --force`, or restore the matching pair")
    return cert, key


def parse_hosts(hosts) -> list[x509.GeneralName]:
    """subjectAltName entries: IP addresses as IPAddress, the rest as DNS names; every bad one at once."""
    names, errors = [], []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
            continue
        except ValueError:
            pass
        if isinstance(h, str) and len(h) <= 253 and _DNS_RE.fullmatch(h):
            names.append(x509.DNSName(h.lower()))
        else:
            errors.append(f"{h!r}: neither an IP address nor a host name (letters, digits, - and .)")
    if errors:
        raise ProvisionError(f"{len(errors)} bad host name(s)", errors, hint="nothing was changed")
    return list(dict.fromkeys(names))


def _issue(d: Path, cert_path: Path, key_path: Path, common_name: str, sans: list, usage, days: int,
           key_type: str, broker: bool = False) -> Issued:
    ca_cert, ca_key = load_ca(d)
    days = _days(days, "certificate")
    key = _new_key(key_type)
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=key_type == "rsa", data_encipherment=False,
                                            key_agreement=False, key_cert_sign=False, crl_sign=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    replaced = cert_path.exists() or key_path.exists()
    _write(key_path, _pem_key(key), 0o600, broker=broker)
    _write(cert_path, _pem_cert(cert), 0o644)
    return Issued(cert_path, key_path, replaced=replaced, names=[str(n.value) for n in sans] or [common_name])


def issue_server(d: Path, hosts, days: int = LEAF_DAYS, key_type: str = "ec", loopback: bool = True) -> Issued:
    """The broker's certificate, for every host name and IP address in `hosts` (and, with
    `loopback`, localhost, 127.0.0.1 and ::1: the gateway on the same machine dials those)."""
    _need_cryptography()
    hosts = list(hosts) + (list(LOOPBACK) if loopback else [])
    if not hosts:
        raise ProvisionError("the broker's certificate needs at least one host name or IP address",
                             hint="give the names the meters and the gateway use for the broker, e.g. "
                                  "`tls server fog1.example.org 192.168.1.10`")
    sans = parse_hosts(hosts)
    d = Path(d)
    return _issue(d, d / "server.crt", d / "server.key", str(sans[0].value), sans,
                  ExtendedKeyUsageOID.SERVER_AUTH, days, key_type, broker=True)


def issue_client(d: Path, name: str, days: int = LEAF_DAYS, key_type: str = "ec") -> Issued:
    """A client certificate whose common name is `name` (its MQTT user name: a meter id or a
    service account), for a broker with require_certificate."""
    _need_cryptography()
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ProvisionError(f"client name {name!r}: must be 1-64 of letters, digits, _ . - "
                             "(the MQTT user name: a meter id or a service account)")
    d = Path(d)
    return _issue(d, d / "clients" / f"{name}.crt", d / "clients" / f"{name}.key", name, [],
                  ExtendedKeyUsageOID.CLIENT_AUTH, days, key_type)
