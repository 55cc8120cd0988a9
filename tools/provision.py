"""Provision meters and broker service accounts for a fog.

  provision.py meter m0001 --site site.toml          one meter
  provision.py meter --count 100 --prefix m --site site.toml
  provision.py meter --ids-file ids.txt --site site.toml --reload-pid "$(pidof mosquitto)"
  provision.py service gateway --site site.toml       the gateway's broker account
  provision.py tls ca --dir certs                      a development CA for MQTT over TLS
  provision.py tls server --dir certs fog1.lan 192.168.1.10   the broker's certificate
  provision.py tls client --dir certs gateway          a client certificate (mutual TLS)

A meter gets a random MQTT password, firmware/meters/<id>/config.json (0600, checked
by the firmware's own validator), a registration at the gateway, and a user in
Mosquitto's password file; the ACL file confines every meter to its own topics.
Site-wide settings come from --site (TOML, or JSON); flags beat it. See
tools/README.md "Provisioning".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provisioning import ProvisionError, acl, identity, site  # noqa: E402
from provisioning import tls as devca  # noqa: E402
from provisioning.provisioner import gateway_toml_lines, provision_meters, provision_service  # noqa: E402


def _show(p: Path | None) -> str:
    if p is None:
        return "-"
    try:
        return str(Path(p).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _list(ids: list[str], n: int = 8) -> str:
    return ", ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


def _reload_line(pid: int | None) -> str:
    if pid:
        return f"Mosquitto (pid {pid}) was told to reload its password and ACL files (SIGHUP)"
    return ("make Mosquitto reload its password and ACL files: `sudo systemctl reload mosquitto` "
            "(or give --reload-pid PID next time)")


def _add_broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site", help="site file (TOML, or JSON if it ends in .json) with the settings below")
    p.add_argument("--passwd-file", help="Mosquitto's password_file (created if missing)")
    p.add_argument("--acl-file", help="Mosquitto's acl_file (created if missing)")
    p.add_argument("--topic-root", help="first topic level (default aquafog)")
    p.add_argument("--meters-dir", help="where <id>/config.json files go (default firmware/meters)")
    p.add_argument("--rotate-password", action="store_true",
                   help="give an existing account a new password (config.json and password file together)")
    p.add_argument("--reload-pid", type=int, metavar="PID",
                   help="send SIGHUP to this Mosquitto afterwards so it rereads its files")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="provision.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    m = sub.add_parser("meter", help="provision meters: password, config.json, registration, broker account")
    m.add_argument("ids", nargs="*", help=f"meter ids ({identity.NAME_RULE})")
    m.add_argument("--count", type=int, help="provision N meters named PREFIX0001 ... (see --prefix, --start)")
    m.add_argument("--prefix", default="m", help="with --count (default m)")
    m.add_argument("--start", type=int, default=1, help="with --count: the first number (default 1)")
    m.add_argument("--ids-file", help="a file with one meter id per line (# comments allowed)")
    m.add_argument("--wifi-ssid")
    m.add_argument("--wifi-password")
    m.add_argument("--broker-host", help="the broker's address as the meters reach it")
    m.add_argument("--broker-port", type=int)
    m.add_argument("--gateway-config", help="the gateway's gateway.toml (meters are registered in its db_path)")
    m.add_argument("--db", help="the gateway's SQLite file (instead of --gateway-config)")
    m.add_argument("--label", help="label stored with the meters at the gateway (an address)")
    m.add_argument("--k-factor", help="pulses per litre of the flow sensor (firmware default 450)")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config.json key, VALUE as JSON (e.g. report_interval_s=300); repeatable")
    m.add_argument("--tls-ca", metavar="FILE",
                   help="MQTT over TLS: the CA certificate (PEM) that signed the broker's; copied as ca.crt next to "
                        "config.json (give --broker-port of the TLS listener, e.g. 8883)")
    m.add_argument("--tls-client-certs", metavar="DIR",
                   help="mutual TLS: a `tls ca` folder; each meter gets its own client.crt and client.key (CN = its "
                        "id); its ca.crt is the CA unless --tls-ca")
    m.add_argument("--tls-hostname", metavar="NAME",
                   help="the name in the broker's certificate when --broker-host is another (an IP address)")
    m.add_argument("--skip-existing", action="store_true",
                   help="leave already provisioned meters alone instead of refusing (finish an interrupted batch)")
    _add_broker_args(m)

    s = sub.add_parser("service", help="a broker account for a service (the gateway) with its role's topics")
    s.add_argument("name", help="the MQTT user name, e.g. gateway")
    s.add_argument("--role", choices=sorted(acl.ROLES),
                   help="what it may read and write (default: the role of the same name)")
    s.add_argument("--password-out", metavar="FILE",
                   help="write mqtt_username/mqtt_password lines to this new file (0600) instead of printing them")
    _add_broker_args(s)

    t = sub.add_parser("tls", help="a development CA and certificates for MQTT over TLS (tools/README.md 'TLS')")
    tsub = t.add_subparsers(dest="tls_command", required=True)
    ca = tsub.add_parser("ca", help="make the CA (ca.crt, ca.key); refuses to replace one without --force")
    ca.add_argument("--name", default="AquaFog development CA", help="the CA's common name")
    ca.add_argument("--days", type=int, default=devca.CA_DAYS, help=f"validity (default {devca.CA_DAYS})")
    ca.add_argument("--force", action="store_true",
                    help="replace an existing CA (every certificate it signed must then be issued again)")
    srv = tsub.add_parser("server", help="the broker's certificate (server.crt, server.key), signed by the CA")
    srv.add_argument("hosts", nargs="*", help="every host name and IP address clients use to reach the broker")
    srv.add_argument("--no-loopback", action="store_true",
                     help="leave out localhost, 127.0.0.1 and ::1 (included by default for the local gateway)")
    srv.add_argument("--days", type=int, default=devca.LEAF_DAYS, help=f"validity (default {devca.LEAF_DAYS})")
    cl = tsub.add_parser("client", help="a client certificate (clients/NAME.crt, .key) for mutual TLS")
    cl.add_argument("name", help="the client's MQTT user name (a meter id, or a service account such as gateway)")
    cl.add_argument("--days", type=int, default=devca.LEAF_DAYS, help=f"validity (default {devca.LEAF_DAYS})")
    for x in (ca, srv, cl):
        x.add_argument("--dir", required=True, help="the folder of the CA and its certificates (created if missing)")
        x.add_argument("--key-type", choices=devca.KEY_TYPES, default="ec",
                       help="ec: ECDSA P-256 (default); rsa: RSA 2048")
    return ap


def _site(args, meter: dict | None = None) -> site.Site:
    keys = ["passwd_file", "acl_file", "topic_root", "meters_dir"]
    if args.command == "meter":
        keys += ["wifi_ssid", "wifi_password", "broker_host", "broker_port", "gateway_config", "db", "label",
                 "tls_ca", "tls_client_certs", "tls_hostname"]
    flags = {k: getattr(args, k) for k in keys}
    flags["meter"] = meter or {}
    return site.load(args.site, flags)


def cmd_meter(args) -> int:
    ids = list(args.ids)
    if args.count is not None:
        ids += identity.sequence(args.count, args.prefix, args.start)
    if args.ids_file:
        ids += identity.read_ids_file(args.ids_file)
    extra = dict(site.parse_assignment(a) for a in args.set)
    if args.k_factor is not None:
        extra["k_factor"] = site.parse_assignment("k_factor=" + args.k_factor)[1]
    cfg = _site(args, extra)
    run = provision_meters(cfg, ids, rotate=args.rotate_password, skip_existing=args.skip_existing,
                           reload_pid=args.reload_pid)
    changed = run.provisioned + run.rotated
    if run.provisioned:
        print(f"provisioned {len(run.provisioned)} meter(s): {_list(run.provisioned)}")
    if run.rotated:
        print(f"new password for {len(run.rotated)} meter(s): {_list(run.rotated)} "
              "(the board keeps the old one until it is flashed again)")
    if run.skipped:
        print(f"left alone (already provisioned): {_list(run.skipped)}")
    if not changed:
        print("nothing to do")
        return 0
    first = changed[0]
    print(f"  config.json  {_show(cfg.meters_dir)}/<id>/config.json, mode 0600 (it holds the meter's password)")
    if cfg.tls_ca or cfg.tls_client_certs:
        mutual = ", client.crt, client.key (mutual TLS)" if cfg.tls_client_certs else ""
        print(f"  TLS          mqtt_tls on; next to each config.json: ca.crt{mutual}; make flash copies them. "
              f"broker_port {cfg.broker_port} must be the broker's TLS listener")
    print(f"  broker       password file {_show(cfg.passwd_file)}; ACL {_show(cfg.acl_file)} "
          f"({'meter patterns added' if run.acl_changed else 'meter patterns already present'})")
    print(f"  gateway      {len(run.registered)} registered in {_show(run.db_path)}"
          + (f", {len(run.already_registered)} were already" if run.already_registered else "")
          + "; a running gateway sees new meters within 5 s")
    print("next:")
    print(f"  1. {_reload_line(run.reloaded)}")
    print(f"  2. flash each board: make flash PORT=/dev/ttyUSB0 METER={first}")
    print(f"  3. check it reports: curl -s -H \"Authorization: Bearer $TOKEN\" "
          f"http://<gateway>:8080/api/v1/meters/{first}  (\"online\": true, then a reading every report_interval_s;"
          " TOKEN from `aquafog token add`)")
    return 0


def cmd_service(args) -> int:
    cfg = _site(args)
    run = provision_service(cfg, args.name, args.role, rotate=args.rotate_password,
                            password_out=args.password_out, reload_pid=args.reload_pid)
    verb = "has a new password" if run.rotated else "created"
    print(f"service account {run.name!r} (role {run.role}: {acl.ROLES[run.role].summary}) {verb} in "
          f"{_show(cfg.passwd_file)}; its topics are in {_show(cfg.acl_file)}")
    print(_reload_line(run.reloaded))
    if run.password_out:
        print(f"its user name and password are in {_show(run.password_out)} (mode 0600): copy the two lines "
              "into gateway.toml, restart the gateway, then delete the file")
    else:
        print("its password is shown only this once. Put these two lines into gateway.toml and restart the gateway "
              "(or set AQUAFOG_MQTT_USERNAME and AQUAFOG_MQTT_PASSWORD in its environment):")
        print()
        print(gateway_toml_lines(run.name, run.password), end="")
    return 0


def cmd_tls(args) -> int:
    d = Path(args.dir)
    if args.tls_command == "ca":
        got = devca.make_ca(d, args.name, args.days, args.key_type, force=args.force)
        print(f"{'replaced the' if got.replaced else 'made a'} development CA {args.name!r}: "
              f"{_show(got.cert)} (give it to every client), key {_show(got.key)} (mode 0600: keep it off the "
              "meters and the broker's machine if you can)")
        print(f"next: tools/provision.py tls server --dir {args.dir} <broker host names and IP addresses>")
        return 0
    if args.tls_command == "server":
        got = devca.issue_server(d, args.hosts, args.days, args.key_type, loopback=not args.no_loopback)
        print(f"{'replaced' if got.replaced else 'made'} the broker's certificate {_show(got.cert)} "
              f"for {', '.join(got.names)}; key {_show(got.key)} (mode 0600)")
        print("next: the broker's TLS listener, e.g. aquafog broker-config --tls-port 8883 --tls-host 0.0.0.0 "
              f"--cafile {_show(d / 'ca.crt')} --certfile {_show(got.cert)} --keyfile {_show(got.key)}; "
              "then `mqtt_cafile` in gateway.toml (README 'Security')")
        if got.replaced:
            print("Mosquitto loads the new certificate when told to reload: sudo systemctl reload mosquitto")
        return 0
    got = devca.issue_client(d, args.name, args.days, args.key_type)
    print(f"{'replaced' if got.replaced else 'made'} the client certificate of {args.name!r}: {_show(got.cert)}, "
          f"key {_show(got.key)} (mode 0600)")
    print(f"next: mqtt_certfile = \"{got.cert}\" and mqtt_keyfile = \"{got.key}\" in the client's config "
          "(gateway.toml), for a broker with require_certificate")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"meter": cmd_meter, "service": cmd_service, "tls": cmd_tls}
    try:
        return commands[args.command](args)
    except ProvisionError as exc:
        what = f"{args.command} {args.tls_command}" if args.command == "tls" else args.command
        print(f"provision.py {what}: {exc.render()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.umask(os.umask(0o077) | 0o077)  # nothing this tool creates is readable by others by accident
    sys.exit(main())
