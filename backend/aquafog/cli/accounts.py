"""Users and API tokens (accounts.py), at a fog (-c gateway.toml) or the cloud (--cloud).
A SQLite store is opened as its owner (store/owner.py), so root leaves it no files its
service cannot open."""

from __future__ import annotations

import argparse
import sys

from ..store.owner import as_owner
from .common import add_store_args, cloud_config, config_file, gateway_config


def _store(args) -> tuple[str | None, str]:
    """(the SQLite file or None, the store's URL or path) of the fog or, with --cloud, the cloud
    (also without --cloud on an installed cloud, which has no fog store)."""
    if not args.cloud and args.config is None and config_file(None) is None and config_file(None, cloud=True):
        args.cloud = True
    if args.cloud:
        from sqlalchemy.engine import make_url

        url = cloud_config(args, {"db_url": args.db_url}).db_url
        return (make_url(url).database or None) if url.startswith("sqlite") else None, url
    path = gateway_config(args).db_path
    return path, path


def _accounts(cloud: bool, where: str):
    from ..accounts import Accounts
    if cloud:
        from ..cloud.store import ACCOUNTS, open_cloud_engine
        return Accounts(ACCOUNTS), open_cloud_engine(where)
    from ..store.engine import open_engine
    from ..store.schema import ACCOUNTS
    return Accounts(ACCOUNTS), open_engine(where)


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


def _account_action(fn, needs_password: bool = False):
    from ..accounts import AccountError

    def in_store(args, where: str) -> str | None:
        """The action, in one transaction; its refusal's message, or None."""
        accounts, engine = _accounts(args.cloud, where)
        try:
            with engine.begin() as conn:
                fn(args, accounts, conn)
        except AccountError as exc:
            return exc.message
        finally:
            engine.dispose()
        return None

    def run(args) -> int:
        sqlite_file, where = _store(args)
        if needs_password:  # asked for here, before the store is opened (as its owner, maybe in a child)
            args.password = _password(args)
        refused = as_owner(sqlite_file, in_store, args, where) if sqlite_file else in_store(args, where)
        if refused:
            print(f"aquafog: {refused}", file=sys.stderr)
            return 2
        return 0
    return run


def cmd_user_add(args, accounts, conn) -> None:
    meters = [m for part in args.meters for m in part.split(",") if m]
    u = accounts.add_user(conn, args.username, args.role, args.password, meters)
    print(f"user {u.username} added as {u.role}" + (f" with meters {', '.join(sorted(u.meters))}" if u.meters else ""))


@_account_action
def cmd_user_list(args, accounts, conn) -> None:
    for u in accounts.list_users(conn):
        print(f"{u['username']:<24} {u['role']:<9} {'disabled' if u['disabled'] else 'active':<8} "
              f"{','.join(u['meters'])}")


def cmd_user_passwd(args, accounts, conn) -> None:
    accounts.set_password(conn, args.username, args.password)
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
    from ..accounts import AccountError
    if not accounts.revoke_token(conn, args.token_id):
        raise AccountError(f"no active token {args.token_id!r}; list them with `aquafog token list`")
    print(f"token {args.token_id} revoked")


def _add_account_args(p: argparse.ArgumentParser) -> None:
    add_store_args(p)
    p.add_argument("--cloud", action="store_true",
                   help="the cloud's accounts (-c is then the cloud config; the default on an installed cloud)")
    p.add_argument("--db-url", dest="db_url", help="with --cloud: the cloud's store URL")


def register(sub, groups) -> None:
    u = sub.add_parser("user", help="people who may use the API and dashboard (docs/operate.md 'Users and access')")
    usub = u.add_subparsers(dest="user_command", required=True)
    for name, func, help_ in (("add", _account_action(cmd_user_add, needs_password=True),
                               "add a user (the first admin too: there is no default one)"),
                              ("passwd", _account_action(cmd_user_passwd, needs_password=True),
                               "change a password (ends the user's sessions)")):
        x = usub.add_parser(name, help=help_)
        _add_account_args(x)
        x.add_argument("username", help="the user's login name")
        if name == "add":
            x.add_argument("--role", required=True, choices=("admin", "operator", "consumer"),
                           help="admin: everything; operator: every meter and valve commands; consumer: own meters")
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
    x.add_argument("username", help="the user's login name")
    x.add_argument("meters", nargs="*", help="meter ids (none: no meters)")
    x.set_defaults(func=cmd_user_meters)
    x = usub.add_parser("disable", help="disable a user: ends their sessions and revokes their tokens")
    _add_account_args(x)
    x.add_argument("username", help="the user's login name")
    x.set_defaults(func=cmd_user_disable)

    t = sub.add_parser("token", help="API tokens for scripts (Authorization: Bearer <token>)")
    tsub = t.add_subparsers(dest="token_command", required=True)
    x = tsub.add_parser("add", help="make a token for a user (printed once)")
    _add_account_args(x)
    x.add_argument("username", help="the user's login name")
    x.add_argument("name", help="what the token is for, e.g. 'billing export'")
    x.add_argument("--quiet", "-q", action="store_true", help="print only the token")
    x.set_defaults(func=cmd_token_add)
    x = tsub.add_parser("list", help="list tokens (never their secrets)")
    _add_account_args(x)
    x.add_argument("username", nargs="?", help="only this user's tokens (default: everyone's)")
    x.set_defaults(func=cmd_token_list)
    x = tsub.add_parser("revoke", help="revoke a token")
    _add_account_args(x)
    x.add_argument("token_id", help="the token's id, as `aquafog token list` shows it (not the secret)")
    x.set_defaults(func=cmd_token_revoke)
