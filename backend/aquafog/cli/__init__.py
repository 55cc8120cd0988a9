"""The `aquafog` command: one module per group of subcommands, each adding its own
parsers with register(sub, groups)."""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..config import ConfigError
from ..store.owner import StoreOwnerError
from . import accounts, broker, field, services, setup, store

MODULES = (setup, services, store, broker, accounts, field)
# subcommands that several modules fill: `aquafog meter add` (store), ...
GROUPS = {"meter": "register, list and provision meters",
          "config": "configuration files"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aquafog", description="AquaFog: smart water metering with fog gateways "
                                "and a city cloud. `aquafog <command> --help` tells more.")
    p.add_argument("--version", action="version", version=f"aquafog {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    groups = {}
    for name, help_ in GROUPS.items():
        g = sub.add_parser(name, help=help_)
        groups[name] = g.add_subparsers(dest=f"{name}_command", required=True, metavar="subcommand")
    for module in MODULES:
        module.register(sub, groups)
    return p


def _stdout_gone() -> int:
    """The reader of our output went away (`aquafog ... | head`): no traceback, and no
    second error when Python flushes stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141  # as a shell reports a command ended by SIGPIPE


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except BrokenPipeError:
        return _stdout_gone()
    except ConfigError as exc:
        print(f"aquafog: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"aquafog: {exc}", file=sys.stderr)
        return 2
    except StoreOwnerError as exc:  # store work done as the store's owner (root on an installed fog)
        print(f"aquafog: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
