"""The gateway's store from the command line: register and list meters, create the
store, check a config file. The store is opened as its owner (store/owner.py): run as
root on an installed fog, nothing here leaves files the gateway cannot open."""

from __future__ import annotations

import sys
from pathlib import Path

from ..store.owner import as_owner
from .common import add_store_args, gateway_config


def _add_meters(db_path, ids: list[str], label: str | None) -> tuple[list[str], list[str]]:
    from ..store.engine import open_engine
    from ..store.registry import add_meters
    engine = open_engine(db_path)
    try:
        return add_meters(engine, ids, label)
    finally:
        engine.dispose()


def _list_meters(db_path) -> list[tuple]:
    from sqlalchemy import select

    from ..store.engine import open_engine
    from ..store.schema import meters
    engine = open_engine(db_path, create=False)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                select(meters.c.meter, meters.c.online, meters.c.ml).order_by(meters.c.meter))]
    finally:
        engine.dispose()


def _init_db(db_path) -> None:
    from ..store.engine import open_engine
    open_engine(db_path).dispose()


def cmd_meter_add(args) -> int:
    cfg = gateway_config(args)
    ids = list(args.ids)
    if args.file:
        ids += [line.strip() for line in Path(args.file).read_text().splitlines() if line.strip()]
    if not ids:
        print("aquafog meter add: give meter ids or --file with one id per line", file=sys.stderr)
        return 2
    try:
        added, existing = as_owner(cfg.db_path, _add_meters, cfg.db_path, ids, args.label)
    except ValueError as exc:
        print(f"aquafog meter add: {exc}", file=sys.stderr)
        return 2
    more = " ..." if len(existing) > 10 else ""
    print(f"registered {len(added)} meter(s) in {cfg.db_path}" +
          (f"; already registered: {', '.join(existing[:10])}{more}" if existing else ""))
    return 0


def cmd_meter_list(args) -> int:
    cfg = gateway_config(args)
    for meter, online, ml in as_owner(cfg.db_path, _list_meters, cfg.db_path):
        state = {True: "online", False: "offline", None: "never seen"}[online]
        litres = "-" if ml is None else f"{ml / 1000:.3f} L"
        print(f"{meter}\t{state}\t{litres}")
    return 0


def cmd_init_db(args) -> int:
    cfg = gateway_config(args)
    as_owner(cfg.db_path, _init_db, cfg.db_path)
    print(f"store ready: {Path(cfg.db_path).resolve()}")
    return 0


def cmd_config_check(args) -> int:
    cfg = gateway_config(args)
    print(f"{args.config or 'defaults'}: OK")
    for k, v in vars(cfg).items():
        print(f"  {k} = {'***' if 'password' in k and v else v!r}")
    return 0


def register(sub, groups) -> None:
    msub = groups["meter"]
    ma = msub.add_parser("add", help="register meters at this gateway (their readings are accepted from then on)")
    add_store_args(ma)
    ma.add_argument("ids", nargs="*", help="meter ids (1-32 of a-z 0-9 _ -)")
    ma.add_argument("--file", help="a file with one meter id per line")
    ma.add_argument("--label", help="a label for these meters (an address, say)")
    ma.set_defaults(func=cmd_meter_add)
    ml = msub.add_parser("list", help="list registered meters")
    add_store_args(ml)
    ml.set_defaults(func=cmd_meter_list)

    i = sub.add_parser("init-db", help="create the store (the gateway does this on start too)")
    add_store_args(i)
    i.set_defaults(func=cmd_init_db)

    cc = groups["config"].add_parser("check", help="validate a config file and print the effective values")
    add_store_args(cc)
    cc.set_defaults(func=cmd_config_check)
