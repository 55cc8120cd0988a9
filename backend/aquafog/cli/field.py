"""The field technician's commands: provision meters, broker accounts, TLS files, flash a board.

  aquafog meter provision m0001                       one meter (settings from the site file)
  aquafog meter provision --count 100 --prefix m --site site.toml
  aquafog broker-account add gateway                  the gateway's account on the fog broker
  aquafog broker-account add --region north           fog north's bridge account, on the cloud broker
  aquafog tls ca --dir certs                          a development CA for MQTT over TLS
  aquafog flash /dev/ttyUSB0 m0001                    the firmware and m0001's config.json on a board

The site file: --site, else $AQUAFOG_SITE, else /etc/aquafog/site.toml on an installed
fog (tools/README.md "Provisioning").
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

FLASH_EPILOG = ("Exit codes: 0 flashed; 1 board missing, busy, silent or a copy failed; 2 usage; "
                "3 meter config, firmware source or the host's mpy-cross/mpremote unusable; 4 board lacks "
                "MicroPython >= 1.26 or umqtt.simple (nothing changed). See firmware/README.md#flashing-a-meter.")


@contextmanager
def _private_files():
    """Nothing these commands create is readable by others by accident."""
    old = os.umask(0o077)
    os.umask(old | 0o077)
    try:
        yield
    finally:
        os.umask(old)


def _show(p: Path | None) -> str:
    """A path as short as is clear: relative to the current folder when inside it (never
    relative to /: "etc/aquafog/site.toml" reads as a typo)."""
    if p is None:
        return "-"
    cwd = Path.cwd()
    try:
        return str(Path(p).resolve().relative_to(cwd)) if cwd != Path("/") else str(Path(p).resolve())
    except ValueError:
        return str(p)


def _list(ids: list[str], n: int = 8) -> str:
    return ", ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


def _reload_line(reload) -> str:
    if reload.how == "pid":
        return f"Mosquitto (pid {reload.pid}) was told to reload its password and ACL files (SIGHUP)"
    if reload.how == "systemd":
        return "Mosquitto reloaded its password and ACL files (systemctl reload mosquitto)"
    if reload.how == "failed":
        return (f"`systemctl reload mosquitto` failed ({reload.detail}): run `sudo systemctl reload mosquitto` "
                "yourself, or the broker keeps the old passwords")
    return ("make Mosquitto reload its password and ACL files: `sudo systemctl reload mosquitto` "
            "(or give --reload-pid PID next time)")


def _site(args, keys: list[str], meter: dict | None = None):
    """The settings (defaults < site file < flags) and a line saying which site file."""
    from ..provisioning import site
    path, why = site.find_site_file(args.site)
    flags = {k: getattr(args, k) for k in keys}
    flags["meter"] = meter or {}
    cfg = site.load(path, flags)
    return cfg, f"site file: {_show(path)} ({why})" if path else f"site file: none ({why}); flags only"


BROKER_KEYS = ["passwd_file", "acl_file", "services_passwd_file", "services_acl_file", "topic_root", "meters_dir"]
METER_KEYS = BROKER_KEYS + ["wifi_ssid", "wifi_password", "broker_host", "broker_port", "gateway_config", "db",
                            "label", "tls_ca", "tls_client_certs", "tls_hostname"]


def cmd_meter_provision(args) -> int:
    from ..provisioning import identity, site
    from ..provisioning.provisioner import provision_meters
    ids = list(args.ids)
    if args.count is not None:
        ids += identity.sequence(args.count, args.prefix, args.start)
    if args.ids_file:
        ids += identity.read_ids_file(args.ids_file)
    extra = dict(site.parse_assignment(a) for a in args.set)
    if args.k_factor is not None:
        extra["k_factor"] = site.parse_assignment("k_factor=" + args.k_factor)[1]
    cfg, which = _site(args, METER_KEYS, extra)
    print(which)
    run = provision_meters(cfg, ids, rotate=args.rotate_password, skip_existing=args.skip_existing,
                           reload_pid=args.reload_pid, reload=not args.no_reload)
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
        print(f"  TLS          mqtt_tls on; next to each config.json: ca.crt{mutual}; flashing copies them. "
              f"broker_port {cfg.broker_port} must be the broker's TLS listener")
    print(f"  broker       password file {_show(cfg.passwd_file)}; ACL {_show(cfg.acl_file)} "
          f"({'meter patterns added' if run.acl_changed else 'meter patterns already present'})")
    print(f"  gateway      {len(run.registered)} registered in {_show(run.db_path)}"
          + (f", {len(run.already_registered)} were already" if run.already_registered else "")
          + "; a running gateway sees new meters within 5 s")
    print("next:")
    print(f"  1. {_reload_line(run.reload)}")
    where = (f" --site {args.site}" if args.site else "") + \
        (f" --meters-dir {args.meters_dir}" if args.meters_dir else "")
    print(f"  2. flash each board: aquafog flash{where} /dev/ttyUSB0 {first}"
          f"   (in a checkout: make flash PORT=/dev/ttyUSB0 METER={first})")
    print(f"  3. check it reports: curl -s -H \"Authorization: Bearer $TOKEN\" "
          f"http://<gateway>:8080/api/v1/meters/{first}  (\"online\": true, then a reading every report_interval_s;"
          " TOKEN from `aquafog token add`)")
    return 0


def cmd_broker_account_add(args) -> int:
    from ..provisioning import acl
    from ..provisioning.provisioner import CREDENTIALS, credentials_lines, provision_service
    cfg, which = _site(args, BROKER_KEYS)
    print(which)
    run = provision_service(cfg, args.name, args.role, rotate=args.rotate_password, password_out=args.password_out,
                            reload_pid=args.reload_pid, reload=not args.no_reload, region=args.region)
    role = acl.ROLES[run.role]
    verb = "has a new password" if run.rotated else "created"
    region = f", region {run.region}" if run.region else ""
    print(f"service account {run.name!r} on the {role.broker} broker (role {run.role}{region}: {role.summary}) "
          f"{verb} in {_show(run.passwd_file)}; its topics are in {_show(run.acl_file)}")
    print(_reload_line(run.reload))
    where, user_key, password_key = CREDENTIALS[run.role]
    if run.password_out:
        print(f"its user name and password are in {_show(run.password_out)} (mode 0600): copy the two lines "
              f"into {where}, restart the service, then delete the file")
    else:
        env = " (or set AQUAFOG_MQTT_USERNAME and AQUAFOG_MQTT_PASSWORD in its environment)" \
            if run.role in ("gateway", "cloud") else ""
        print(f"its password is shown only this once. Put these two lines ({user_key}, {password_key}) into {where} "
              f"and restart the service{env}:")
        print()
        print(credentials_lines(run.name, run.password, run.role), end="")
    return 0


def cmd_tls(args) -> int:
    from ..provisioning import tls as devca
    d = Path(args.dir)
    if args.tls_command == "ca":
        got = devca.make_ca(d, args.name, args.days, args.key_type, force=args.force)
        print(f"{'replaced the' if got.replaced else 'made a'} development CA {args.name!r}: "
              f"{_show(got.cert)} (give it to every client), key {_show(got.key)} (mode 0600: keep it off the "
              "meters and the broker's machine if you can)")
        print(f"next: aquafog tls server --dir {args.dir} <broker host names and IP addresses>")
        return 0
    if args.tls_command == "server":
        got = devca.issue_server(d, args.hosts, args.days, args.key_type, loopback=not args.no_loopback)
        print(f"{'replaced' if got.replaced else 'made'} the broker's certificate {_show(got.cert)} "
              f"for {', '.join(got.names)}; key {_show(got.key)} (mode 0600)")
        print("next: the broker's TLS listener, e.g. aquafog broker-config --tls-port 8883 --tls-host 0.0.0.0 "
              f"--cafile {_show(d / 'ca.crt')} --certfile {_show(got.cert)} --keyfile {_show(got.key)}; "
              "then `mqtt_cafile` in gateway.toml (docs/security.md)")
        if got.replaced:
            print("Mosquitto loads the new certificate when told to reload: sudo systemctl reload mosquitto")
        return 0
    got = devca.issue_client(d, args.name, args.days, args.key_type)
    print(f"{'replaced' if got.replaced else 'made'} the client certificate of {args.name!r}: {_show(got.cert)}, "
          f"key {_show(got.key)} (mode 0600)")
    print(f"next: mqtt_certfile = \"{got.cert}\" and mqtt_keyfile = \"{got.key}\" in the client's config "
          "(gateway.toml), for a broker with require_certificate")
    return 0


def cmd_flash(args) -> int:
    from .. import flash
    from ..provisioning import ProvisionError, site
    meters_dir = args.meters_dir
    if meters_dir is None:
        try:
            path, _ = site.find_site_file(args.site)
            meters_dir = site.load(path, {}).meters_dir
        except ProvisionError as exc:
            print(f"aquafog flash: {exc.render()}", file=sys.stderr)
            return flash.EXIT_USAGE
        if meters_dir is None:
            print("aquafog flash: which meters' configs? give --meters-dir (where `aquafog meter provision` "
                  "wrote <id>/config.json), or meters_dir in the site file", file=sys.stderr)
            return flash.EXIT_USAGE
    try:
        flash.flash(args.port, args.meter, Path(meters_dir), args.install_umqtt, args.probe_timeout)
    except flash.FlashError as e:
        print("aquafog flash: " + str(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("aquafog flash: interrupted; the board may hold a partial firmware: run the same flash again",
              file=sys.stderr)
        return 130
    return flash.EXIT_OK


def _provisioning(command: str, func):
    """Run a provisioning command: its refusals (ProvisionError) are exit code 1, on stderr."""
    from ..provisioning import ProvisionError

    def run(args) -> int:
        try:
            with _private_files():
                return func(args)
        except ProvisionError as exc:
            what = f"{command} {args.tls_command}" if command == "aquafog tls" else command
            print(f"{what}: {exc.render()}", file=sys.stderr)
            return 1
    return run


SITE_DEFAULT = "default: $AQUAFOG_SITE, else /etc/aquafog/site.toml if there is one"


def _add_broker_args(p: argparse.ArgumentParser, meters: bool) -> None:
    p.add_argument("--site", help=f"site file (TOML, or JSON if it ends in .json) with the settings below "
                                  f"({SITE_DEFAULT})")
    p.add_argument("--passwd-file", help="Mosquitto's password_file (created if missing)")
    p.add_argument("--acl-file", help="Mosquitto's acl_file (created if missing)")
    p.add_argument("--services-passwd-file",
                   help="the service listener's own password_file: service accounts go there, never into "
                        "--passwd-file (with --services-acl-file)")
    p.add_argument("--services-acl-file", help="the service listener's own acl_file (with --services-passwd-file)")
    p.add_argument("--topic-root", help="first topic level of the meters' topics (default aquafog)")
    if meters:
        p.add_argument("--meters-dir", help="where <id>/config.json files go (default: firmware/meters of the "
                                            "checkout)")
        p.add_argument("--rotate-password", action="store_true",
                       help="give existing meters new passwords (config.json and password file together)")
    else:
        p.add_argument("--meters-dir", help="where the meters' <id>/config.json files are: a service account may "
                                            "not take a meter's name (default: firmware/meters of the checkout)")
        p.add_argument("--rotate-password", action="store_true", help="give the existing account a new password")
    p.add_argument("--reload-pid", type=int, metavar="PID",
                   help="send SIGHUP to this Mosquitto afterwards so it rereads its files")
    p.add_argument("--no-reload", action="store_true",
                   help="do not reload Mosquitto (without --reload-pid, a mosquitto service that systemd runs "
                        "is reloaded with systemctl)")


def _add_meter_provision(msub) -> None:
    from ..provisioning import identity
    m = msub.add_parser("provision", help="provision meters: password, config.json, registration, broker account",
                        description="Give meters their identity and let them in: for each a random MQTT password, "
                                    "<meters dir>/<id>/config.json (checked by the firmware's own validator), its "
                                    "registration at the gateway and its user in Mosquitto's password file; the ACL "
                                    "file confines every meter to its own topics. Site settings come from the site "
                                    "file; flags beat it (tools/README.md 'Provisioning').")
    m.add_argument("ids", nargs="*", help=f"meter ids ({identity.NAME_RULE})")
    m.add_argument("--count", type=int, help="provision N meters named PREFIX0001 ... (see --prefix, --start)")
    m.add_argument("--prefix", default="m", help="with --count: the ids' prefix (default m)")
    m.add_argument("--start", type=int, default=1, help="with --count: the first number (default 1)")
    m.add_argument("--ids-file", help="a file with one meter id per line (# comments allowed)")
    m.add_argument("--wifi-ssid", help="the Wi-Fi network the meters join")
    m.add_argument("--wifi-password", help="its password")
    m.add_argument("--broker-host", help="the broker's address as the meters reach it")
    m.add_argument("--broker-port", type=int, help="its port (default 1883; the TLS listener's with --tls-ca)")
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
                   help="mutual TLS: an `aquafog tls ca` folder; each meter gets its own client.crt and client.key "
                        "(CN = its id); its ca.crt is the CA unless --tls-ca")
    m.add_argument("--tls-hostname", metavar="NAME",
                   help="the name in the broker's certificate when --broker-host is another (an IP address)")
    m.add_argument("--skip-existing", action="store_true",
                   help="leave already provisioned meters alone instead of refusing (finish an interrupted batch)")
    _add_broker_args(m, meters=True)
    m.set_defaults(func=_provisioning("aquafog meter provision", cmd_meter_provision))


def _add_broker_account(sub) -> None:
    from ..provisioning import acl
    b = sub.add_parser("broker-account", help="service accounts on a broker: the gateway's, the cloud's, "
                                              "each fog's bridge on the cloud broker")
    bsub = b.add_subparsers(dest="broker_account_command", required=True, metavar="subcommand")
    roles = "; ".join(f"{name}: {role.summary}" for name, role in acl.ROLES.items())
    a = bsub.add_parser("add", help="a service account on the broker with its role's topics",
                        description="A service account on the broker: a random password in the password file "
                                    "(the service listener's own, with services_passwd_file) and a `user` block "
                                    f"with its role's topics in the ACL file. Roles: {roles}.")
    a.add_argument("name", nargs="?",
                   help="the MQTT user name, e.g. gateway (default with --region R: fog-R)")
    a.add_argument("--role", choices=sorted(acl.ROLES),
                   help="what it may read and write (default: the role of the same name; fog with --region)")
    a.add_argument("--region", help="with role fog: the fog's region (its bridge may use only that region's topics)")
    a.add_argument("--password-out", metavar="FILE",
                   help="write the user name and password lines to this new file (0600) instead of printing them")
    _add_broker_args(a, meters=False)
    a.set_defaults(func=_provisioning("aquafog broker-account add", cmd_broker_account_add))


def _add_tls(sub) -> None:
    from ..provisioning import tls as devca
    t = sub.add_parser("tls", help="a development CA and certificates for MQTT over TLS (tools/README.md 'TLS')")
    tsub = t.add_subparsers(dest="tls_command", required=True, metavar="subcommand")
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
    t.set_defaults(func=_provisioning("aquafog tls", cmd_tls))


def _add_flash(sub) -> None:
    from ..flash import PROBE_TIMEOUT_S
    f = sub.add_parser("flash", help="put the meter firmware and one meter's config.json on a MicroPython board",
                       description="Flash the AquaFog meter firmware this aquafog ships and one meter's config "
                                   "onto a MicroPython board (make flash PORT=... METER=... in a checkout).",
                       epilog=FLASH_EPILOG)
    f.add_argument("port", metavar="PORT", help="the board's serial port, e.g. /dev/ttyUSB0")
    f.add_argument("meter", metavar="METER", help="meter id; its config is METERS_DIR/METER/config.json")
    f.add_argument("--meters-dir", type=Path,
                   help="where the provisioned configs are (default: the site file's meters_dir, else "
                        "firmware/meters of the checkout)")
    f.add_argument("--site", help=f"site file whose meters_dir is the default for --meters-dir ({SITE_DEFAULT})")
    f.add_argument("--install-umqtt", action="store_true",
                   help="if the board lacks umqtt.simple, install it with mpremote mip (needs internet)")
    f.add_argument("--probe-timeout", type=float, default=PROBE_TIMEOUT_S, metavar="SECONDS",
                   help="how long the board has to answer the first question (default %(default)g)")
    f.set_defaults(func=cmd_flash)


def register(sub, groups) -> None:
    _add_meter_provision(groups["meter"])
    _add_broker_account(sub)
    _add_tls(sub)
    _add_flash(sub)
