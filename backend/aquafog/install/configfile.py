"""The service config files `aquafog setup` writes (/etc/aquafog/gateway.toml, cloud.toml):
a block of the keys setup manages, then every other key commented out with its default
and meaning. Running setup again replaces only its block: what a person wrote below it
stays, so an upgrade keeps their configuration."""

from __future__ import annotations

import json
import tomllib
from dataclasses import MISSING, fields

BEGIN = "# --- set by `aquafog setup {role}`: run it again to change these (`aquafog setup {role} --help`) ---"
END = "# --- end of what `aquafog setup` sets; your own settings go below it ---"


def toml_value(v) -> str:
    """A value as TOML: tables inline; JSON spells strings, numbers and booleans alike."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v)


def defaults(cls) -> dict:
    out = {}
    for f in fields(cls):
        out[f.name] = f.default if f.default is not MISSING else f.default_factory()
    return out


def example(cls, docs: dict[str, str], skip=()) -> list[str]:
    """Every key of the config class but `skip`, commented out: its meaning, then its default."""
    lines = []
    for name, value in defaults(cls).items():
        if name in skip:
            continue
        lines.append(f"# {name}: {docs[name]}")
        if isinstance(value, dict):
            lines.append(f"# [{name}]  (a table: see the docs)")
        else:
            lines.append(f"# {name} = {toml_value(value)}")
    return lines


def render(role: str, managed: dict, rest: str | None, new_rest: str = "") -> str:
    """The whole file: the managed block, then `rest` (what follows the block in the
    existing file), or `new_rest` for a new file."""
    head = [BEGIN.format(role=role)] + [f"{k} = {toml_value(v)}" for k, v in managed.items()] + [END]
    return "\n".join(head) + "\n" + (new_rest if rest is None else rest)


def service_config(role: str, cls, docs: dict[str, str], managed: dict, rest: str | None) -> str:
    """A service's config file: for a new one, every key setup does not set follows,
    commented out with its default and meaning."""
    unit = "aquafog-gateway" if role == "fog" else "aquafog-cloud"
    new_rest = "\n".join(["# Every other key, with its default (remove the # to change one, then",
                          f"# `sudo systemctl restart {unit}`):", ""] + example(cls, docs, skip=managed)) + "\n"
    return render(role, managed, rest, new_rest)


def read(path) -> tuple[dict, str | None]:
    """split() of the file at `path`; ({}, None) when there is none."""
    from pathlib import Path
    return split(Path(path).read_text()) if Path(path).exists() else ({}, None)


def split(text: str) -> tuple[dict, str | None]:
    """(the managed values, what follows the block) of an existing file; ({}, None) when
    the file has no block (written by hand: setup then refuses to guess)."""
    lines = text.splitlines(keepends=True)
    try:
        end = next(i for i, line in enumerate(lines) if line.rstrip("\n") == END)
    except StopIteration:
        return {}, None
    managed = tomllib.loads("".join(lines[1:end]))
    return managed, "".join(lines[end + 1:])


def overlaps(managed: dict, rest: str) -> list[str]:
    """Keys set both by setup and below its block (TOML refuses a key twice)."""
    try:
        own = tomllib.loads(rest)
    except tomllib.TOMLDecodeError:
        return []  # the config check reports it, with the line
    return sorted(set(own) & set(managed))
