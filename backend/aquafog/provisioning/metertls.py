"""A meter's MQTT over TLS: the config.json keys and the files next to it.

    aquafog meter provision m0001 --tls-ca certs/ca.crt --broker-port 8883 ...
    aquafog meter provision m0001 --tls-client-certs certs --broker-port 8883 ...   (mutual TLS)

`tls_ca` (a PEM file: the CA that signed the broker's certificate) is copied to
`<meters_dir>/<id>/ca.crt`; `tls_client_certs` (a folder of `aquafog tls ca`)
issues each meter a client certificate whose common name is its id, copied as
`client.crt` and `client.key` (0600), and, without `tls_ca`, gives its `ca.crt` as the
CA. `make flash` copies every one of them to the board next to config.json.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from . import ProvisionError, files

CA_NAME = "ca.crt"
CERT_NAME = "client.crt"
KEY_NAME = "client.key"
PEM_CERT = b"-----BEGIN CERTIFICATE-----"


@dataclass
class MeterTls:
    ca: bytes  # the CA certificate(s), PEM
    client_dir: Path | None  # a development CA that issues each meter's certificate
    hostname: str | None

    def settings(self) -> dict:
        """The config.json keys (the firmware validates them with the rest)."""
        out = {"mqtt_tls": True, "mqtt_cafile": CA_NAME}
        if self.hostname:
            out["mqtt_tls_hostname"] = self.hostname
        if self.client_dir is not None:
            out.update(mqtt_certfile=CERT_NAME, mqtt_keyfile=KEY_NAME)
        return out


def from_site(site) -> MeterTls | None:
    """The site's TLS settings, checked before anything is written; None: plain MQTT."""
    ca_file, client_dir, hostname = site.tls_ca, site.tls_client_certs, site.tls_hostname
    if ca_file is None and client_dir is None:
        if hostname is not None:
            raise ProvisionError("tls_hostname: only used with tls_ca or tls_client_certs",
                                 hint="give --tls-ca (the CA that signed the broker's certificate); nothing was changed")
        return None
    if client_dir is not None:
        from . import tls as devca

        devca.load_ca(Path(client_dir))  # names what is missing, and how to make it
        if ca_file is None:
            ca_file = Path(client_dir) / CA_NAME
    try:
        ca = Path(ca_file).read_bytes()
    except OSError as exc:
        raise ProvisionError(f"tls_ca {ca_file}: cannot read it: {exc.strerror}",
                             hint="give the CA certificate (PEM) that signed the broker's certificate, e.g. the "
                                  "ca.crt of `aquafog tls ca`; nothing was changed") from None
    if PEM_CERT not in ca:
        raise ProvisionError(f"tls_ca {ca_file}: not a PEM certificate (no '{PEM_CERT.decode()}' line)",
                             hint="convert it: openssl x509 -in FILE -out ca.crt (PEM); nothing was changed")
    return MeterTls(ca, Path(client_dir) if client_dir is not None else None, hostname)


def write_files(tls: MeterTls, meter_dir: Path, meter_id: str) -> list[Path]:
    """ca.crt (and client.crt, client.key) in the meter's folder, each written atomically, 0600."""
    written = []
    files.stage_private(meter_dir / CA_NAME, tls.ca.decode("ascii")).commit()
    written.append(meter_dir / CA_NAME)
    if tls.client_dir is not None:
        from . import tls as devca

        got = devca.issue_client(tls.client_dir, meter_id)
        for src, name in ((got.cert, CERT_NAME), (got.key, KEY_NAME)):
            staged = files.stage_private(meter_dir / name, "")
            shutil.copyfile(src, staged.tmp)
            staged.commit()
            written.append(meter_dir / name)
    return written
