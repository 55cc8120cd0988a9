"""Mosquitto's ACL file: each meter confined to its own topics, each service account
to its role.

Meters: the four `pattern` lines of README "MQTT API", present once. `%u` is the MQTT
user name, which is the meter id, so one constant block confines every meter; the
file does not grow with the fleet and provisioning a meter never has to edit it.
Service accounts: one `user <name>` block each, with the topics of its role.

The tool only ever adds lines (what an operator wrote stays), and only what is
missing, so running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ProvisionError

HEADER = [
    "# AquaFog: every meter may use only its own topics (%u = MQTT user name = meter id;",
    "# README \"MQTT API\"). Maintained by tools/provision.py, which only adds missing lines.",
]


def meter_rules(root: str) -> list[tuple[str, str]]:
    return [
        ("write", f"{root}/%u/tele/#"),
        ("write", f"{root}/%u/stat/#"),
        ("write", f"{root}/%u/status"),
        ("read", f"{root}/%u/cmnd/#"),
    ]


@dataclass(frozen=True)
class Role:
    summary: str
    rules: tuple[tuple[str, str], ...]  # (access, topic with {root})

    def topics(self, root: str) -> list[tuple[str, str]]:
        return [(access, topic.format(root=root)) for access, topic in self.rules]


ROLES = {
    "gateway": Role(
        "the fog gateway: reads what meters send, sends them commands and acks",
        (("read", "{root}/+/tele/#"), ("read", "{root}/+/stat/#"), ("read", "{root}/+/status"),
         ("write", "{root}/+/cmnd/#"))),
    "observer": Role(
        "read-only view of every meter's topics (mosquitto_sub, a technician checking a meter)",
        (("read", "{root}/#"),)),
}


def _line(kind: str, access: str, topic: str) -> str:
    return f"{kind} {access:<5} {topic}"


def _tokens(line: str) -> tuple[str, ...]:
    t = tuple(line.split())
    return () if not t or t[0].startswith("#") else t


def users(text: str) -> set[str]:
    """Names with a `user` block (service accounts, or an operator's own)."""
    return {t[1] for t in map(_tokens, text.splitlines()) if len(t) == 2 and t[0] == "user"}


def ensure(text: str, root: str, services: dict[str, str] | None = None) -> str:
    """`text` with the meter patterns present once and, for each service account
    {name: role}, a `user` block holding the role's topics. Adds only what is missing."""
    lines = text.splitlines()
    have = {_tokens(line) for line in lines}
    missing = [_line("pattern", a, t) for a, t in meter_rules(root) if ("pattern", a, t) not in have]
    if missing:
        # A pattern applies to every user wherever it stands; the top is where people look.
        block = (HEADER if not any(h in lines for h in HEADER) else []) + missing
        lines = block + ([""] if lines and lines[0].strip() else []) + lines
    for name, role_name in (services or {}).items():
        role = ROLES.get(role_name)
        if role is None:
            raise ProvisionError(f"unknown role {role_name!r}", hint=f"use one of: {', '.join(ROLES)}")
        wanted = [_line("topic", a, t) for a, t in role.topics(root)]
        starts = [i for i, line in enumerate(lines) if _tokens(line) == ("user", name)]
        if not starts:
            if lines and lines[-1].strip():
                lines.append("")
            lines += [f"# {name}: {role.summary}", f"user {name}"] + wanted
            continue
        in_block, current = set(), None
        for line in lines:
            t = _tokens(line)
            if t[:1] == ("user",):
                current = t[1:] == (name,)
            elif current and t:
                in_block.add(t)
        todo = [w for w in wanted if tuple(w.split()) not in in_block]
        lines[starts[0] + 1:starts[0] + 1] = todo
    return "\n".join(lines) + "\n"
