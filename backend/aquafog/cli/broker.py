"""`aquafog broker-config`: the Mosquitto configuration of a fog broker."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_broker_config(args) -> int:
    from ..bridge import BridgeConfig
    from ..broker import BrokerConfig
    bridge = None
    if args.bridge_region is not None or args.cloud_host is not None:
        if args.bridge_region is None or args.cloud_host is None:
            print("aquafog broker-config: a bridge needs both --bridge-region and --cloud-host", file=sys.stderr)
            return 2
        try:
            bridge = BridgeConfig(args.bridge_region, args.cloud_host, args.cloud_port)
        except ValueError as exc:
            print(f"aquafog broker-config: {exc}", file=sys.stderr)
            return 2
    tls = None
    tls_flags = (args.tls_port, args.cafile, args.certfile, args.keyfile)
    if any(x is not None for x in tls_flags) or args.require_certificate:
        from ..tls import TlsListener
        if None in tls_flags:
            print("aquafog broker-config: a TLS listener needs --tls-port, --cafile, --certfile and --keyfile "
                  "(development ones: aquafog tls; docs/security.md)", file=sys.stderr)
            return 2
        try:
            tls = TlsListener(args.cafile, args.certfile, args.keyfile, port=args.tls_port,
                              host=args.tls_host or args.host, require_certificate=args.require_certificate,
                              tls_version=args.tls_version)
        except ValueError as exc:
            print(f"aquafog broker-config: {exc}", file=sys.stderr)
            return 2
        if not args.skip_file_checks:
            # Mosquitto started as root (systemd) reads the files as user mosquitto
            errors = tls.problems("--", broker_user="mosquitto")
            if errors:
                print("aquafog broker-config: the TLS files cannot be used:\n  " + "\n  ".join(errors)
                      + "\n(--skip-file-checks: the config is for another machine)", file=sys.stderr)
                return 2
    elif args.no_plain_listener:
        print("aquafog broker-config: --no-plain-listener needs a TLS listener (--tls-port ...)", file=sys.stderr)
        return 2
    try:
        text = BrokerConfig(port=None if args.no_plain_listener else args.port,
                            data_dir=None if args.drop_in else Path(args.data_dir),
                            host=args.host, allow_anonymous=args.allow_anonymous, bridge=bridge, tls=tls,
                            password_file=args.password_file, acl_file=args.acl_file,
                            service_port=args.service_port, service_password_file=args.service_password_file,
                            service_acl_file=args.service_acl_file, system=args.drop_in).render()
    except ValueError as exc:
        print(f"aquafog broker-config: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


def register(sub, groups) -> None:
    b = sub.add_parser("broker-config", help="print the Mosquitto config a fog broker needs")
    b.add_argument("--port", type=int, default=1883, help="the plain MQTT listener's port (default 1883)")
    b.add_argument("--host", default="127.0.0.1",
                   help="its address (default 127.0.0.1; 0.0.0.0 for meters on the network)")
    b.add_argument("--data-dir", default="/var/lib/mosquitto",
                   help="where Mosquitto keeps its persistence file and log")
    b.add_argument("--drop-in", action="store_true",
                   help="for the system's Mosquitto: a file for /etc/mosquitto/conf.d/ that leaves the persistence "
                        "folder, log and pid file to Debian's mosquitto.conf (--data-dir is then unused)")
    b.add_argument("--allow-anonymous", action="store_true",
                   help="development only: let clients in without a password (never on a network)")
    b.add_argument("--password-file", help="Mosquitto's password file (`aquafog meter provision` keeps it)")
    b.add_argument("--acl-file", help="Mosquitto's ACL file (`aquafog meter provision` keeps it)")
    b.add_argument("--service-port", type=int,
                   help="a 127.0.0.1 listener for the gateway and tools; on the other listeners a meter's "
                        "client id is its user name, so no meter can knock another off (docs/security.md)")
    b.add_argument("--service-password-file",
                   help="the service listener's own password file: only service accounts, no meter, may use it")
    b.add_argument("--service-acl-file", help="the service listener's own ACL file (service accounts' topics)")
    b.add_argument("--bridge-region",
                   help="bridge this fog to the cloud under this region (docs/design.md 'City scale')")
    b.add_argument("--cloud-host", help="the cloud broker the bridge connects to")
    b.add_argument("--cloud-port", type=int, default=1883, help="the cloud broker's port (default 1883)")
    t = b.add_argument_group("TLS listener (docs/security.md; development certificates: aquafog tls)")
    t.add_argument("--tls-port", type=int, help="listen for MQTT over TLS on this port (usually 8883)")
    t.add_argument("--tls-host", help="its address (default: --host); 0.0.0.0 for meters on the network")
    t.add_argument("--cafile", help="the CA that signed client certificates (and the broker's)")
    t.add_argument("--certfile", help="the broker's certificate, naming every host and IP clients dial")
    t.add_argument("--keyfile", help="its private key (readable by user mosquitto: 0640 root:mosquitto)")
    t.add_argument("--tls-version", default="tlsv1.2", choices=("tlsv1.2", "tlsv1.3"),
                   help="the oldest TLS version accepted (default tlsv1.2)")
    t.add_argument("--require-certificate", action="store_true",
                   help="mutual TLS: refuse clients without a certificate signed by --cafile")
    t.add_argument("--no-plain-listener", action="store_true",
                   help="TLS only: no plain MQTT listener (or keep it with --host 127.0.0.1 for local clients)")
    t.add_argument("--skip-file-checks", action="store_true",
                   help="do not check the certificate files (the config is for another machine)")
    b.set_defaults(func=cmd_broker_config)
