"""`aquafog setup fog|cloud`: this machine as an installed fog or cloud (the Debian packages
run it; run it again to change a setting), and `aquafog config example`."""

from __future__ import annotations

import os
import sys


def cmd_setup(args) -> int:
    role = args.setup_command
    if os.geteuid() != 0:
        print(f"aquafog setup {role}: run it as root (sudo aquafog setup {role} ...): it writes /etc/aquafog, "
              "/etc/mosquitto and /var/lib/aquafog and manages services", file=sys.stderr)
        return 1
    from ..install.system import SetupError
    if role == "fog":
        from ..install.fog import setup_fog as setup
    else:
        from ..install.cloud import setup_cloud as setup
    try:
        report = setup(args)
    except SetupError as exc:
        print(f"aquafog setup {role}: {exc}", file=sys.stderr)
        return 1
    print(report.render())
    return 0 if report.running is not False else 1


def cmd_config_example(args) -> int:
    from ..config import CLOUD_KEYS, GATEWAY_KEYS, CloudConfig, GatewayConfig
    from ..install.configfile import example
    cls, docs = (GatewayConfig, GATEWAY_KEYS) if args.service == "gateway" else (CloudConfig, CLOUD_KEYS)
    print(f"# aquafog {args.service}: every key with its default (docs/configuration.md)")
    print("\n".join(example(cls, docs)))
    return 0


def _common(p) -> None:
    p.add_argument("--service-port", type=int,
                   help="the broker's loopback listener for the AquaFog service and tools (default 1884)")
    p.add_argument("--tls-port", type=int, help="MQTT over TLS on this port (8883 when certificates are given)")
    p.add_argument("--tls-cert", help="the broker's certificate (PEM), naming every address clients dial")
    p.add_argument("--tls-key", help="its private key (copied 0640 root:mosquitto)")
    p.add_argument("--tls-ca", help="the CA that signed it, which clients trust (PEM)")
    p.add_argument("--http-host", help="address of the API and dashboard (default 0.0.0.0: every interface)")
    p.add_argument("--http-port", type=int, help="their port (fog default 8080, cloud 8090)")
    p.add_argument("--timezone", help="the utility's IANA time zone, e.g. America/Sao_Paulo (days and months "
                                      "of consumption follow it; the same at every fog and the cloud)")
    p.add_argument("--from-package", action="store_true",
                   help="called by the Debian package's postinst: restart the service on the new version")


def register(sub, groups) -> None:
    s = sub.add_parser("setup", help="make this machine an installed fog or cloud, or change its settings (root)")
    ssub = s.add_subparsers(dest="setup_command", required=True, metavar="role")
    f = ssub.add_parser("fog", help="a secure fog: the system's Mosquitto for meters, aquafog-gateway.service",
                        description="Set up this machine as a fog, or change its settings. Idempotent: every "
                                    "earlier choice and password is kept unless a flag changes it.")
    f.add_argument("--broker-host", help="this fog's address as the meters reach it (default: this machine's "
                                         "address on its network); goes into every provisioned meter")
    f.add_argument("--meter-port", type=int, help="plain MQTT for meters on every interface (default 1883; "
                                                  "0: none, only TLS)")
    f.add_argument("--join", metavar="FILE", help="join a city: the file `aquafog setup cloud --fog REGION` wrote at "
                                                  "the cloud (region, the cloud broker, this fog's account on it)")
    f.add_argument("--standalone", action="store_true", help="leave the city: no region, no bridge to a cloud")
    _common(f)
    f.set_defaults(func=cmd_setup)

    c = ssub.add_parser("cloud", help="a secure cloud: the system's Mosquitto for the fogs' bridges, "
                                      "aquafog-cloud.service",
                        description="Set up this machine as the city's cloud, or change its settings, or add fogs. "
                                    "Idempotent: every earlier choice and password is kept.")
    c.add_argument("--public-host", help="the cloud's address as the fogs reach it (default: this machine's "
                                         "address); written into each fog's join file")
    c.add_argument("--fog-port", type=int, help="plain MQTT for the fogs' bridges (default 1883; 0: none, only TLS)")
    c.add_argument("--fog", action="append", default=[], metavar="REGION",
                   help="add a fog: its account on the cloud broker, confined to its region's topics, and a join "
                        "file /etc/aquafog/fogs/REGION.join to copy to the fog (repeatable)")
    c.add_argument("--fog-token", action="append", default=[], metavar="REGION=FILE",
                   help="an API token of that fog (a file holding it; made there by `aquafog token add`), so the "
                        "cloud shows its meters' detail (repeatable)")
    c.add_argument("--db-url", help="the store: default sqlite:////var/lib/aquafog/cloud.db; "
                                    "postgresql+psycopg://user:password@host/db for PostgreSQL")
    _common(c)
    c.set_defaults(func=cmd_setup)

    e = groups["config"].add_parser("example", help="print an example config file with every key and its default")
    e.add_argument("service", choices=("gateway", "cloud"), help="whose config")
    e.set_defaults(func=cmd_config_example)
