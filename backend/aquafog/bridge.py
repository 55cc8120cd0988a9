"""The fog → cloud link: a Mosquitto bridge on the fog's broker, and the topics it maps.

The fog's own Mosquitto carries the link (no home-made relay): it forwards only what
the cloud needs and maps the topic trees with Mosquitto's local/remote prefixes.

    fog (local topic)              direction   cloud (remote topic)
    aquafog-fog/summary/#          out  QoS 1  aquafog-city/fogs/<region>/summary/#
    aquafog-fog/cmnd/#             in   QoS 1  aquafog-city/fogs/<region>/cmnd/#
    aquafog-fog/city/#             in   QoS 1  aquafog-city/city/#

Meter traffic (`aquafog/<meter>/...`) matches none of these patterns and never leaves
the fog. A fog code base never names its region in a topic: it publishes under
FOG_PREFIX and the bridge inserts the region on the way out.

Topic strings for both sides are built here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FOG_PREFIX = "aquafog-fog/"    # topics local to one fog's broker
CITY_PREFIX = "aquafog-city/"  # topics on the cloud broker

SUMMARY = "summary"  # partials a fog sends up (retained, QoS 1)
COMMAND = "cmnd"     # commands the cloud routes to one fog (never retained)
CITY = "city"        # city-wide figures the cloud sends to every fog (the city mean ...)

# On the fog: "1" (connected) or "0" (link down), retained, published by Mosquitto itself.
BRIDGE_STATE_TOPIC = FOG_PREFIX + "bridge/state"

BRIDGE_QOS = 1
REGION_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")  # the one region rule (config, partials, topics)
# mqttv50 is not offered: a v5 bridge announces the fog broker's `max_inflight_messages 0`
# (which the gateway needs) as Receive Maximum 0, and the cloud drops the CONNECT as a
# protocol error (Mosquitto 2.0.11; there is no per-bridge setting).
PROTOCOL_VERSIONS = ("mqttv311",)
TLS_VERSIONS = ("tlsv1.2", "tlsv1.3")


def _levels(what: str, levels: tuple[str, ...]) -> str:
    if not levels:
        raise ValueError(f"{what}: needs at least one topic level (a non-empty string)")
    for level in levels:
        if not isinstance(level, str) or not level or any(c in level for c in "/+#\0"):
            raise ValueError(f"{what}: topic level {level!r} must be a non-empty string without / + # or NUL")
    return "/".join(levels)


def check_region(region: str) -> str:
    if not isinstance(region, str) or not REGION_RE.fullmatch(region):
        raise ValueError(f"region: {region!r} must be 1-32 characters of a-z 0-9 _ -, starting with a letter or digit (e.g. 'north')")
    return region


def _cloud_fog_prefix(region: str) -> str:
    return f"{CITY_PREFIX}fogs/{check_region(region)}/"


# --- fog side (what the fog gateway publishes and subscribes to) ---------------------

def fog_summary_topic(period: str, key: str, *sub: str) -> str:
    """Where a fog publishes a partial: fog_summary_topic("day", "2026-11-26") is
    "aquafog-fog/summary/day/2026-11-26"; further levels (e.g. "topk") may follow."""
    return f"{FOG_PREFIX}{SUMMARY}/" + _levels("fog_summary_topic", (period, key, *sub))


def fog_command_filter() -> str:
    """What a fog subscribes to for the cloud's commands: "aquafog-fog/cmnd/#"."""
    return f"{FOG_PREFIX}{COMMAND}/#"


def fog_command_topic(*levels: str) -> str:
    """A command as the fog receives it: fog_command_topic("valve") is "aquafog-fog/cmnd/valve"."""
    return f"{FOG_PREFIX}{COMMAND}/" + _levels("fog_command_topic", levels)


def fog_city_filter() -> str:
    """What a fog subscribes to for city-wide figures: "aquafog-fog/city/#"."""
    return f"{FOG_PREFIX}{CITY}/#"


def fog_city_topic(*levels: str) -> str:
    """A city-wide figure as a fog receives it: fog_city_topic("mean", "day") is
    "aquafog-fog/city/mean/day"."""
    return f"{FOG_PREFIX}{CITY}/" + _levels("fog_city_topic", levels)


# --- cloud side -----------------------------------------------------------------------

def cloud_summary_filter() -> str:
    """What the cloud subscribes to for every fog's partials: "aquafog-city/fogs/+/summary/#"."""
    return f"{CITY_PREFIX}fogs/+/{SUMMARY}/#"


def cloud_summary_topic(region: str, period: str, key: str, *sub: str) -> str:
    """A fog's partial as the cloud receives it:
    cloud_summary_topic("north", "day", "2026-11-26") is "aquafog-city/fogs/north/summary/day/2026-11-26"."""
    return _cloud_fog_prefix(region) + f"{SUMMARY}/" + _levels("cloud_summary_topic", (period, key, *sub))


def parse_cloud_summary_topic(topic: str) -> tuple[str, list[str]]:
    """("north", ["day", "2026-11-26"]) from "aquafog-city/fogs/north/summary/day/2026-11-26";
    ValueError if the topic is not a fog's summary."""
    parts = topic.split("/")
    if len(parts) < 5 or f"{parts[0]}/" != CITY_PREFIX or parts[1] != "fogs" or parts[3] != SUMMARY:
        raise ValueError(f"topic: {topic!r} is not {cloud_summary_filter()}")
    check_region(parts[2])
    if not all(parts[4:]):
        raise ValueError(f"topic: {topic!r} has an empty level")
    return parts[2], parts[4:]


def cloud_command_topic(region: str, *levels: str) -> str:
    """Where the cloud publishes a command for one fog:
    cloud_command_topic("north", "valve") is "aquafog-city/fogs/north/cmnd/valve"."""
    return _cloud_fog_prefix(region) + f"{COMMAND}/" + _levels("cloud_command_topic", levels)


def city_topic(*levels: str) -> str:
    """Where the cloud publishes a figure for every fog: city_topic("mean", "day") is
    "aquafog-city/city/mean/day"."""
    return f"{CITY_PREFIX}{CITY}/" + _levels("city_topic", levels)


# --- the bridge -------------------------------------------------------------------------

def _int(name: str, value, lo: int, hi: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name}: {value!r} must be {what}")


def _text(name: str, value, *, spaces: bool = False) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: must be a non-empty string, got {value!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{name}: must not contain control characters (a line break would inject config)")
    if value != value.strip() or (not spaces and " " in value):
        raise ValueError(f"{name}: {value!r} must not contain {'leading or trailing ' if spaces else ''}spaces")


@dataclass
class BridgeConfig:
    """The bridge section of a fog broker's mosquitto.conf (Mosquitto 2.x).

    region            this fog's region; names it on the cloud (topics and client id)
    cloud_host/port   the cloud broker (8883 is the usual port with TLS)
    restart_timeout   seconds before reconnecting: a constant, or (base, cap) for
                      Mosquitto's jittered backoff
    keepalive         seconds between pings when idle (Mosquitto's minimum is 5)
    protocol          "mqttv311", the only one offered (see PROTOCOL_VERSIONS)
    remote_username/remote_password
                      the fog's account on the cloud broker (password needs a username)
    cafile/capath     CA that signed the cloud's certificate: either one turns TLS on
    certfile/keyfile  a client certificate, if the cloud asks for one (both or neither)
    tls_version       "tlsv1.2" or "tlsv1.3" (None: Mosquitto's default, tlsv1.2)
    """

    region: str
    cloud_host: str
    cloud_port: int = 1883
    restart_timeout: int | tuple[int, int] = (5, 30)
    keepalive: int = 60
    protocol: str = "mqttv311"
    remote_username: str | None = None
    remote_password: str | None = None
    cafile: str | None = None
    capath: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_version: str | None = None

    def __post_init__(self) -> None:
        check_region(self.region)
        _text("cloud_host", self.cloud_host)
        _int("cloud_port", self.cloud_port, 1, 65535, "an integer 1-65535")
        rt = self.restart_timeout
        if isinstance(rt, (tuple, list)):
            if (len(rt) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in rt)
                    or not 1 <= rt[0] <= rt[1]):
                raise ValueError(f"restart_timeout: {rt!r} must be seconds, or (base, cap) with 1 <= base <= cap")
            self.restart_timeout = (rt[0], rt[1])
        elif not isinstance(rt, int) or isinstance(rt, bool) or rt < 1:
            raise ValueError(f"restart_timeout: {rt!r} must be seconds (>= 1), or (base, cap)")
        _int("keepalive", self.keepalive, 5, 65535, "5-65535 seconds (Mosquitto's minimum is 5)")
        if self.protocol not in PROTOCOL_VERSIONS:
            why = (" (a v5 bridge sends the fog broker's max_inflight_messages 0 as Receive Maximum 0,"
                   " which the cloud rejects)") if self.protocol == "mqttv50" else ""
            raise ValueError(f"protocol: {self.protocol!r} must be one of {', '.join(PROTOCOL_VERSIONS)}{why}")
        if self.remote_username is not None:
            _text("remote_username", self.remote_username)
        if self.remote_password is not None:
            if self.remote_username is None:
                raise ValueError("remote_password: needs remote_username too (Mosquitto ignores a password alone)")
            _text("remote_password", self.remote_password, spaces=True)
        for name in ("cafile", "capath", "certfile", "keyfile"):
            if getattr(self, name) is not None:
                _text(name, getattr(self, name))
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile/keyfile: give both or neither")
        if self.certfile and not self.tls:
            raise ValueError("certfile: a client certificate needs cafile or capath (TLS) too")
        if self.tls_version is not None:
            if self.tls_version not in TLS_VERSIONS:
                raise ValueError(f"tls_version: {self.tls_version!r} must be one of {', '.join(TLS_VERSIONS)}")
            if not self.tls:
                raise ValueError("tls_version: needs cafile or capath (TLS) too")

    @property
    def tls(self) -> bool:
        return bool(self.cafile or self.capath)

    @property
    def client_id(self) -> str:
        """The bridge's client id on the cloud: stable, so the cloud keeps its session."""
        return f"aquafog-fog-{self.region}"

    def topic_lines(self) -> list[str]:
        remote = _cloud_fog_prefix(self.region)
        return [
            f"topic {SUMMARY}/# out {BRIDGE_QOS} {FOG_PREFIX} {remote}",
            f"topic {COMMAND}/# in {BRIDGE_QOS} {FOG_PREFIX} {remote}",
            f"topic {CITY}/# in {BRIDGE_QOS} {FOG_PREFIX} {CITY_PREFIX}",
        ]

    def render(self) -> list[str]:
        """The lines to append to the fog broker's mosquitto.conf (after every general option)."""
        rt = self.restart_timeout
        lines = [
            "# Fog -> cloud bridge (aquafog.bridge): only summaries go out; commands and city figures come in.",
            f"connection aquafog-cloud-{self.region}",
            f"address {self.cloud_host}:{self.cloud_port}",
            f"remote_clientid {self.client_id}",
            f"bridge_protocol_version {self.protocol}",
            # Sessions survive the link: QoS 1 summaries queue on the fog while the cloud is
            # unreachable, commands queue on the cloud while the fog is.
            "cleansession false",
            "start_type automatic",
            # A constant is written as base = cap: Mosquitto 2.0.x keeps its default backoff
            # (5 s .. 30 s) under a single `restart_timeout N`.
            f"restart_timeout {rt[0]} {rt[1]}" if isinstance(rt, tuple) else f"restart_timeout {rt} {rt}",
            f"keepalive_interval {self.keepalive}",
            # The link's state, retained on the fog only ("1" up, "0" down): the cloud
            # broker is shared by every fog, so one fixed topic there would collide.
            "notifications true",
            "notifications_local_only true",
            f"notification_topic {BRIDGE_STATE_TOPIC}",
            # Tell Mosquitto it is a bridge: retained flags pass through, no loops.
            "try_private true",
        ]
        if self.remote_username is not None:
            lines.append(f"remote_username {self.remote_username}")
        if self.remote_password is not None:
            lines.append(f"remote_password {self.remote_password}")
        if self.cafile:
            lines.append(f"bridge_cafile {self.cafile}")
        if self.capath:
            lines.append(f"bridge_capath {self.capath}")
        if self.certfile:
            lines += [f"bridge_certfile {self.certfile}", f"bridge_keyfile {self.keyfile}"]
        if self.tls_version:
            lines.append(f"bridge_tls_version {self.tls_version}")
        return lines + self.topic_lines()
