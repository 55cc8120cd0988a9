"""The `aquafog` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import ConfigError, GatewayConfig
from .process import quiet_gc


def _config(args) -> GatewayConfig:
    overrides = {k: getattr(args, k, None) for k in
                 ("db_path", "mqtt_host", "mqtt_port", "http_host", "http_port", "log_level")}
    return GatewayConfig.load(args.config, overrides=overrides)


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="gateway config file (TOML); see README 'Configuration'")
    p.add_argument("--db", dest="db_path", help="SQLite file of the gateway (overrides db_path)")


def cmd_gateway(args) -> int:
    cfg = _config(args)
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sqlalchemy.exc import OperationalError

    from .gateway.service import Gateway
    from .gateway.writer import store_problem
    try:
        gw = Gateway(cfg)
    except OperationalError as exc:  # e.g. restarted on a full disk: SQLite cannot set up its WAL
        print(f"aquafog gateway: {store_problem(exc, cfg.db_path, running=False)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aquafog gateway: cannot start: {exc}. Is http_port {cfg.http_port} already in use?", file=sys.stderr)
        return 1
    gw.start()
    quiet_gc()
    return gw.wait()


def cmd_meter_add(args) -> int:
    from .store.engine import open_engine
    from .store.registry import add_meters
    cfg = _config(args)
    ids = list(args.ids)
    if args.file:
        ids += [line.strip() for line in Path(args.file).read_text().splitlines() if line.strip()]
    if not ids:
        print("aquafog meter add: give meter ids or --file with one id per line", file=sys.stderr)
        return 2
    try:
        added, existing = add_meters(open_engine(cfg.db_path), ids, args.label)
    except ValueError as exc:
        print(f"aquafog meter add: {exc}", file=sys.stderr)
        return 2
    print(f"registered {len(added)} meter(s) in {cfg.db_path}" +
          (f"; already registered: {', '.join(existing[:10])}{' ...' if len(existing) > 10 else ''}" if existing else ""))
    return 0


def cmd_meter_list(args) -> int:
    from sqlalchemy import select
    from .store.engine import open_engine
    from .store.schema import meters
    cfg = _config(args)
    with open_engine(cfg.db_path, create=False).connect() as conn:
        for row in conn.execute(select(meters.c.meter, meters.c.online, meters.c.ml).order_by(meters.c.meter)):
            state = {True: "online", False: "offline", None: "never seen"}[row.online]
            litres = "-" if row.ml is None else f"{row.ml / 1000:.3f} L"
            print(f"{row.meter}\t{state}\t{litres}")
    return 0


def cmd_init_db(args) -> int:
    from .store.engine import open_engine
    cfg = _config(args)
    open_engine(cfg.db_path)
    print(f"store ready: {Path(cfg.db_path).resolve()}")
    return 0


def cmd_config_check(args) -> int:
    cfg = _config(args)
    print(f"{args.config or 'defaults'}: OK")
    for k, v in vars(cfg).items():
        print(f"  {k} = {'***' if 'password' in k and v else v!r}")
    return 0


def cmd_cloud(args) -> int:
    from .config import CloudConfig
    overrides = {k: getattr(args, k, None) for k in ("db_url", "mqtt_host", "mqtt_port", "http_host", "http_port",
                                                     "log_level")}
    try:
        cfg = CloudConfig.load(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"aquafog cloud: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .cloud.service import Cloud
    try:
        cloud = Cloud(cfg)
    except OSError as exc:
        print(f"aquafog cloud: cannot start: {exc}. Is http_port {cfg.http_port} already in use?", file=sys.stderr)
        return 1
    except Exception as exc:  # the store: a bad URL, PostgreSQL down or refusing
        print(f"aquafog cloud: cannot open the store {cfg.db_url.split('@')[-1]!r}: {exc}", file=sys.stderr)
        return 1
    cloud.start()
    quiet_gc()
    return cloud.wait()


def cmd_broker_config(args) -> int:
    from .bridge import BridgeConfig
    from .broker import BrokerConfig
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
        from .tls import TlsListener
        if None in tls_flags:
            print("aquafog broker-config: a TLS listener needs --tls-port, --cafile, --certfile and --keyfile "
                  "(development ones: tools/provision.py tls; README 'Security')", file=sys.stderr)
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
        text = BrokerConfig(port=None if args.no_plain_listener else args.port, data_dir=Path(args.data_dir),
                            host=args.host, allow_anonymous=args.allow_anonymous, bridge=bridge, tls=tls,
                            password_file=args.password_file, acl_file=args.acl_file,
                            service_port=args.service_port).render()
    except ValueError as exc:
        print(f"aquafog broker-config: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


# --- users and API tokens (accounts.py), at a fog (-c gateway.toml) or the cloud (--cloud) -----
def _accounts(args):
    from .accounts import Accounts
    if args.cloud:
        from .cloud.store import ACCOUNTS, open_cloud_engine
        from .config import CloudConfig
        cfg = CloudConfig.load(args.config, overrides={"db_url": args.db_url})
        return Accounts(ACCOUNTS), open_cloud_engine(cfg.db_url)
    from .store.engine import open_engine
    from .store.schema import ACCOUNTS
    return Accounts(ACCOUNTS), open_engine(_config(args).db_path)


def _password(args) -> str:
    import getpass
    import secrets
    if args.generate:
        pw = secrets.token_urlsafe(18)
        print(f"password for {args.username}: {pw}  (shown once: give it to them, they can change it)")
        return pw
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise SystemExit("aquafog user: give the password with --password-stdin, or --generate one "
                         "(there is no default password)")
    pw = getpass.getpass(f"password for {args.username}: ")
    if getpass.getpass("again: ") != pw:
        raise SystemExit("aquafog user: the two passwords differ; nothing changed")
    return pw


def _account_action(fn):
    from .accounts import AccountError

    def run(args) -> int:
        accounts, engine = _accounts(args)
        try:
            with engine.begin() as conn:
                fn(args, accounts, conn)
        except AccountError as exc:
            print(f"aquafog: {exc.message}", file=sys.stderr)
            return 2
        finally:
            engine.dispose()
        return 0
    return run


@_account_action
def cmd_user_add(args, accounts, conn) -> None:
    meters = [m for part in args.meters for m in part.split(",") if m]
    u = accounts.add_user(conn, args.username, args.role, _password(args), meters)
    print(f"user {u.username} added as {u.role}" + (f" with meters {', '.join(sorted(u.meters))}" if u.meters else ""))


@_account_action
def cmd_user_list(args, accounts, conn) -> None:
    for u in accounts.list_users(conn):
        print(f"{u['username']:<24} {u['role']:<9} {'disabled' if u['disabled'] else 'active':<8} "
              f"{','.join(u['meters'])}")


@_account_action
def cmd_user_passwd(args, accounts, conn) -> None:
    accounts.set_password(conn, args.username, _password(args))
    print(f"password of {args.username} changed; their sessions have ended")


@_account_action
def cmd_user_meters(args, accounts, conn) -> None:
    meters = [m for part in args.meters for m in part.split(",") if m]
    accounts.set_meters(conn, args.username, meters)
    print(f"{args.username} now has meters: {', '.join(sorted(set(meters))) or 'none'}")


@_account_action
def cmd_user_disable(args, accounts, conn) -> None:
    accounts.disable(conn, args.username)
    print(f"{args.username} disabled: sessions ended, tokens revoked")


@_account_action
def cmd_token_add(args, accounts, conn) -> None:
    tid, token = accounts.add_token(conn, args.username, args.name)
    if args.quiet:
        print(token)
    else:
        print(f"token {tid} for {args.username} ({args.name}):\n{token}\n"
              "shown once: keep it like a password; send it as 'Authorization: Bearer <token>'")


@_account_action
def cmd_token_list(args, accounts, conn) -> None:
    for t in accounts.tokens(conn, args.username):
        print(f"{t['id']}  {t['username']:<24} {t['name']:<32} {'revoked' if t['revoked_ms'] else 'active'}")


@_account_action
def cmd_token_revoke(args, accounts, conn) -> None:
    from .accounts import AccountError
    if not accounts.revoke_token(conn, args.token_id):
        raise AccountError(f"no active token {args.token_id!r}; list them with `aquafog token list`")
    print(f"token {args.token_id} revoked")


def _add_account_args(p: argparse.ArgumentParser) -> None:
    _add_store_args(p)
    p.add_argument("--cloud", action="store_true", help="the cloud's accounts (-c is then the cloud config)")
    p.add_argument("--db-url", dest="db_url", help="with --cloud: the cloud's store URL")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aquafog", description="AquaFog fog gateway")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("gateway", help="run the gateway: MQTT ingest, store, commands, HTTP API")
    _add_store_args(g)
    g.add_argument("--mqtt-host")
    g.add_argument("--mqtt-port", type=int)
    g.add_argument("--http-host")
    g.add_argument("--http-port", type=int)
    g.add_argument("--log-level")
    g.set_defaults(func=cmd_gateway)

    m = sub.add_parser("meter", help="register and list meters")
    msub = m.add_subparsers(dest="meter_command", required=True)
    ma = msub.add_parser("add", help="register meters at this gateway")
    _add_store_args(ma)
    ma.add_argument("ids", nargs="*", help="meter ids (1-32 of a-z 0-9 _ -)")
    ma.add_argument("--file", help="a file with one meter id per line")
    ma.add_argument("--label", help="a label for these meters (an address, say)")
    ma.set_defaults(func=cmd_meter_add)
    ml = msub.add_parser("list", help="list registered meters")
    _add_store_args(ml)
    ml.set_defaults(func=cmd_meter_list)

    i = sub.add_parser("init-db", help="create the store (the gateway does this on start too)")
    _add_store_args(i)
    i.set_defaults(func=cmd_init_db)

    c = sub.add_parser("config", help="configuration")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser("check", help="validate a config file and print the effective values")
    _add_store_args(cc)
    cc.set_defaults(func=cmd_config_check)

    b = sub.add_parser("broker-config", help="print the Mosquitto config a fog broker needs")
    b.add_argument("--port", type=int, default=1883)
    b.add_argument("--host", default="127.0.0.1")
    b.add_argument("--data-dir", default="/var/lib/mosquitto")
    b.add_argument("--allow-anonymous", action="store_true", help="dev only: no passwords")
    b.add_argument("--password-file", help="Mosquitto's password file (tools/provision.py keeps it)")
    b.add_argument("--acl-file", help="Mosquitto's ACL file (tools/provision.py keeps it)")
    b.add_argument("--service-port", type=int,
                   help="a 127.0.0.1 listener for the gateway and tools; on the other listeners a meter's "
                        "client id is its user name, so no meter can knock another off (README 'Security')")
    b.add_argument("--bridge-region", help="bridge this fog to the cloud under this region (backend/README.md)")
    b.add_argument("--cloud-host", help="the cloud broker the bridge connects to")
    b.add_argument("--cloud-port", type=int, default=1883)
    t = b.add_argument_group("TLS listener (README 'Security'; development certificates: tools/provision.py tls)")
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

    u = sub.add_parser("user", help="people who may use the API and dashboard (README 'Users and access')")
    usub = u.add_subparsers(dest="user_command", required=True)
    for name, func, help_ in (("add", cmd_user_add, "add a user (the first admin too: there is no default one)"),
                              ("passwd", cmd_user_passwd, "change a password (ends the user's sessions)")):
        x = usub.add_parser(name, help=help_)
        _add_account_args(x)
        x.add_argument("username")
        if name == "add":
            x.add_argument("--role", required=True, choices=("admin", "operator", "consumer"))
            x.add_argument("--meters", action="append", default=[], help="a consumer's meters: m1,m2 (repeatable)")
        pw = x.add_mutually_exclusive_group()
        pw.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        pw.add_argument("--generate", action="store_true", help="make a random password and print it once")
        x.set_defaults(func=func)
    x = usub.add_parser("list", help="list users")
    _add_account_args(x)
    x.set_defaults(func=cmd_user_list)
    x = usub.add_parser("meters", help="set a consumer's meters")
    _add_account_args(x)
    x.add_argument("username")
    x.add_argument("meters", nargs="*", help="meter ids (none: no meters)")
    x.set_defaults(func=cmd_user_meters)
    x = usub.add_parser("disable", help="disable a user: ends their sessions and revokes their tokens")
    _add_account_args(x)
    x.add_argument("username")
    x.set_defaults(func=cmd_user_disable)

    t = sub.add_parser("token", help="API tokens for scripts (Authorization: Bearer <token>)")
    tsub = t.add_subparsers(dest="token_command", required=True)
    x = tsub.add_parser("add", help="make a token for a user (printed once)")
    _add_account_args(x)
    x.add_argument("username")
    x.add_argument("name", help="what the token is for, e.g. 'billing export'")
    x.add_argument("--quiet", "-q", action="store_true", help="print only the token")
    x.set_defaults(func=cmd_token_add)
    x = tsub.add_parser("list", help="list tokens (never their secrets)")
    _add_account_args(x)
    x.add_argument("username", nargs="?")
    x.set_defaults(func=cmd_token_list)
    x = tsub.add_parser("revoke", help="revoke a token")
    _add_account_args(x)
    x.add_argument("token_id")
    x.set_defaults(func=cmd_token_revoke)

    cl = sub.add_parser("cloud", help="run the cloud: merge the fogs' partials into city-wide answers (README 'City scale')")
    cl.add_argument("--config", "-c", help="cloud config file (TOML); keys in README 'City scale'")
    cl.add_argument("--db-url", dest="db_url", help="sqlite:///file or postgresql+psycopg://user@host:port/db")
    cl.add_argument("--mqtt-host", dest="mqtt_host")
    cl.add_argument("--mqtt-port", dest="mqtt_port", type=int)
    cl.add_argument("--http-host", dest="http_host")
    cl.add_argument("--http-port", dest="http_port", type=int)
    cl.add_argument("--log-level", dest="log_level")
    cl.set_defaults(func=cmd_cloud)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"aquafog: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"aquafog: {exc}", file=sys.stderr)
        return 2
