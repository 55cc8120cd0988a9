"""Mosquitto's ACL file: each meter confined to its own topics, each service account
to its role.

Meters: the four `pattern` lines of the MQTT API (docs/mqtt-api.md), present once. `%u` is the MQTT
user name, which is the meter id, so one constant block confines every meter; the
file does not grow with the fleet and provisioning a meter never has to edit it.
Service accounts: one `user <name>` block each, with the topics of its role. The roles
of a fog broker (gateway, observer) use its topic root; those of the cloud broker
(cloud, fog) use the bridge's topics (aquafog.bridge), `fog` for one region.

Provisioning only ever adds lines (what an operator wrote stays), and only what is
missing, so running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..bridge import (CITY, CITY_PREFIX, COMMAND, FOG_PREFIX, SUMMARY, check_region, cloud_summary_filter,
                      fog_city_filter, fog_command_filter)
from . import ProvisionError

HEADER = [
    "# AquaFog: every meter may use only its own topics (%u = MQTT user name = meter id;",
    "# docs/mqtt-api.md). Maintained by `aquafog meter provision`, which only adds missing lines.",
]


def meter_rules(root: str) -> list[tuple[str, str]]:
    return [
        ("write", f"{root}/%u/tele/#"),
        ("write", f"{root}/%u/stat/#"),
        ("write", f"{root}/%u/status"),
        ("read", f"{root}/%u/cmnd/#"),
    ]


def _fog_on_cloud(region: str) -> str:
    """Where one fog's topics are on the cloud broker ("+": every fog's). The layout of
    aquafog.bridge, which has no public helper for filters; tests/tools/test_provision_acl.py
    checks these filters against the topics bridge.py builds."""
    return f"{CITY_PREFIX}fogs/{region}/"


def _cloud_rules(root: str, region: str | None) -> list[tuple[str, str]]:
    return [("read", cloud_summary_filter()),
            ("write", f"{_fog_on_cloud('+')}{COMMAND}/#"),
            ("readwrite", f"{CITY_PREFIX}{CITY}/#")]


def _fog_rules(root: str, region: str | None) -> list[tuple[str, str]]:
    fog = _fog_on_cloud(region)
    return [("write", f"{fog}{SUMMARY}/#"),
            ("read", f"{fog}{COMMAND}/#"),
            ("read", f"{CITY_PREFIX}{CITY}/#")]


@dataclass(frozen=True)
class Role:
    summary: str
    rules: tuple[tuple[str, str], ...] = ()  # (access, topic with {root}), on a fog broker
    broker: str = "fog"  # whose broker the account is on: "fog" or "cloud"
    needs_region: bool = False
    build: object = None  # (root, region) -> rules, for the cloud broker's roles

    def topics(self, root: str, region: str | None = None) -> list[tuple[str, str]]:
        if self.build is not None:
            return self.build(root, region)
        return [(access, topic.format(root=root)) for access, topic in self.rules]


ROLES = {
    "gateway": Role(
        "the fog gateway: reads what meters send, sends them commands and acks; its partials for the cloud "
        "out, the cloud's commands and city figures in (through the bridge)",
        (("read", "{root}/+/tele/#"), ("read", "{root}/+/stat/#"), ("read", "{root}/+/status"),
         ("write", "{root}/+/cmnd/#"),
         ("write", f"{FOG_PREFIX}{SUMMARY}/#"), ("read", fog_command_filter()),
         ("read", fog_city_filter()))),
    "observer": Role(
        "read-only view of every meter's topics (mosquitto_sub, a technician checking a meter)",
        (("read", "{root}/#"),)),
    "cloud": Role(
        "the city cloud, on the cloud broker: reads every fog's summaries, sends fogs commands, "
        "publishes the city's figures", broker="cloud", build=_cloud_rules),
    "fog": Role(
        "one fog's bridge, on the cloud broker: sends its region's summaries, receives its region's commands "
        "and the city's figures", broker="cloud", needs_region=True, build=_fog_rules),
}


def check_role_region(role_name: str, region: str | None) -> str | None:
    """The region a role's account needs (checked), or None; ProvisionError otherwise."""
    role = ROLES.get(role_name)
    if role is None:
        raise ProvisionError(f"unknown role {role_name!r}", hint=f"use one of: {', '.join(ROLES)}")
    if not role.needs_region:
        if region is not None:
            raise ProvisionError(f"--region {region}: only the fog role has a region, not {role_name}",
                                 hint="drop --region, or give --role fog; nothing was changed")
        return None
    if region is None:
        raise ProvisionError(f"role {role_name}: which region? A fog's bridge may use only its own region's topics",
                             hint="give --region REGION (the fog's region, as in its gateway.toml); "
                                  "nothing was changed")
    try:
        return check_region(region)
    except ValueError as exc:
        raise ProvisionError(f"--{exc}", hint="nothing was changed") from None


def _line(kind: str, access: str, topic: str) -> str:
    return f"{kind} {access:<5} {topic}"


def _tokens(line: str) -> tuple[str, ...]:
    t = tuple(line.split())
    return () if not t or t[0].startswith("#") else t


def users(text: str) -> set[str]:
    """Names with a `user` block (service accounts, or an operator's own)."""
    return {t[1] for t in map(_tokens, text.splitlines()) if len(t) == 2 and t[0] == "user"}


def ensure(text: str, root: str, services: dict[str, str] | None = None, region: str | None = None,
           patterns: bool = True) -> str:
    """`text` with the meter patterns present once (unless not `patterns`: a file no meter
    uses) and, for each service account {name: role}, a `user` block holding the role's
    topics (`region`: the fog role's). Adds only what is missing."""
    lines = text.splitlines()
    have = {_tokens(line) for line in lines}
    missing = [_line("pattern", a, t) for a, t in meter_rules(root) if ("pattern", a, t) not in have]
    if missing and patterns:
        # A pattern applies to every user wherever it stands; the top is where people look.
        block = (HEADER if not any(h in lines for h in HEADER) else []) + missing
        lines = block + ([""] if lines and lines[0].strip() else []) + lines
    for name, role_name in (services or {}).items():
        role_region = check_role_region(role_name, region)
        role = ROLES[role_name]
        wanted = [_line("topic", a, t) for a, t in role.topics(root, role_region)]
        starts = [i for i, line in enumerate(lines) if _tokens(line) == ("user", name)]
        if not starts:
            if lines and lines[-1].strip():
                lines.append("")
            about = f"{role.summary} (region {role_region})" if role_region else role.summary
            lines += [f"# {name}: {about}", f"user {name}"] + wanted
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
