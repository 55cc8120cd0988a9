"""Gateway configuration: defaults, then a TOML file, then AQUAFOG_* environment
variables, then command-line overrides. Validation reports every error at once as
`<key>: <problem>`; docs/configuration.md documents every key.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .accounts import TOKEN_RE
from .bridge import REGION_RE
from .federation import API_URL_RE
from .policy import PolicySettings, parse_settings
from .protocol import Limits
from .tariff import TariffError
from .tariff import load as load_tariffs
from .tls import ClientTls, cert_problems, client_tls


class ConfigError(ValueError):
    def __init__(self, errors: list[str], source: str = "configuration"):
        self.errors = errors
        super().__init__(f"{source} has {len(errors)} error(s):\n  " + "\n  ".join(errors))


class _Loadable:
    """Defaults < TOML file < <ENV_PREFIX><KEY> environment < overrides; every error at once."""

    ENV_PREFIX = "AQUAFOG_"

    def validate(self) -> list[str]:
        raise NotImplementedError

    def _between(self, errors: list[str], name: str, lo: int, hi: int, why: str = "") -> None:
        v = getattr(self, name)
        if not lo <= v <= hi:
            errors.append(f"{name}: must be between {lo} and {hi}{why}, got {v}")

    @property
    def mqtt_tls(self) -> ClientTls | None:
        """TLS to the broker: on when mqtt_cafile is set (docs/security.md)."""
        return client_tls(self.mqtt_cafile, self.mqtt_certfile, self.mqtt_keyfile)

    def _tls(self, errors: list[str]) -> None:
        """mqtt_cafile/mqtt_certfile/mqtt_keyfile: readable PEM files, a key that fits its certificate."""
        if self.mqtt_cafile or self.mqtt_certfile or self.mqtt_keyfile:
            errors.extend(cert_problems("mqtt_", self.mqtt_cafile, self.mqtt_certfile, self.mqtt_keyfile))

    def _common(self, errors: list[str]) -> None:
        """Keys every AquaFog service has: time zone and log level."""
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            errors.append(f"timezone: unknown time zone {self.timezone!r} (use an IANA name such as Europe/Lisbon)")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            errors.append(f"log_level: must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, env: dict | None = None,
             overrides: dict | None = None):
        env = os.environ if env is None else env
        raw: dict = {}
        errors: list[str] = []
        if path:
            try:
                raw.update(tomllib.loads(Path(path).read_text()))
            except FileNotFoundError:
                raise ConfigError([f"{path}: file not found"]) from None
            except PermissionError:
                raise ConfigError([f"{path}: not readable by this user (an installed fog's is root:aquafog 0640): "
                                   "run the command with sudo"]) from None
            except OSError as exc:
                raise ConfigError([f"{path}: cannot read it: {exc.strerror}"]) from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
        known = {f.name: f for f in fields(cls)}
        for key in raw:
            if key not in known:
                errors.append(f"{key}: unknown key (known keys: see docs/configuration.md, or `aquafog config example gateway`)")
        for name in known:
            env_key = cls.ENV_PREFIX + name.upper()
            if env_key in env:
                raw[name] = env[env_key]
        for k, v in (overrides or {}).items():
            if v is not None:
                raw[k] = v
        values = {}
        for name, f in known.items():
            if name not in raw:
                continue
            value = raw[name]
            want = type(getattr(cls, name)) if hasattr(cls, name) else dict
            if want is bool:
                if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                    value = value.lower() in ("true", "1", "yes")
                if not isinstance(value, bool):
                    errors.append(f"{name}: must be true or false, got {value!r}")
                    continue
            elif want is dict:
                if not isinstance(value, dict):
                    errors.append(f"{name}: must be a table ([{name}] in the config file), got {str(value)[:40]!r}")
                    continue
            elif want is int:
                if isinstance(value, str):
                    try:
                        value = int(value)
                    except ValueError:
                        errors.append(f"{name}: must be an integer, got {value!r}")
                        continue
                if type(value) is not int:
                    errors.append(f"{name}: must be an integer, got {value!r}")
                    continue
            elif want is str and not isinstance(value, str):
                errors.append(f"{name}: must be a string, got {value!r}")
                continue
            values[name] = value
        cfg = cls(**{k: v for k, v in values.items() if k in known})
        errors.extend(cfg.validate())
        if errors:
            raise ConfigError(errors, str(path) if path else "configuration")
        return cfg


@dataclass
class GatewayConfig(_Loadable):
    # store
    db_path: str = "aquafog-gateway.db"
    timezone: str = "UTC"
    # MQTT
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_client_id: str = "aquafog-gateway"
    # TLS to the broker (docs/security.md): the CA file turns it on; a certificate + key if
    # the broker requires one (mutual TLS)
    mqtt_cafile: str = ""
    mqtt_certfile: str = ""
    mqtt_keyfile: str = ""
    topic_root: str = "aquafog"
    session_expiry_s: int = 7 * 24 * 3600
    # HTTP API
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    http_threads: int = 8
    # server-sent-event streams open at once (api/live.py); each has its own server thread
    live_max_clients: int = 16
    # ingest
    batch_max_rows: int = 5000
    batch_max_delay_ms: int = 250
    ack_interval_ms: int = 1000
    max_payload_bytes: int = 8192
    max_clock_skew_s: int = 300
    min_valid_ts: int = 1577836800
    max_flow_lpm: int = 1000
    # commands
    command_ttl_s: int = 24 * 3600
    command_resend_s: int = 30
    # federation: the fog's partials for the cloud ("" region: a fog on its own)
    region: str = ""
    summary_top_k: int = 1000
    # a changed partial goes up at most every interval: with the ingest batch delay it bounds
    # how soon a reading shows in the cloud's city answers (issue 4: p99 <= 2 s). 500 ms: p99
    # 0.84 s, 2 fogs x 100k meters; 2000 ms gave 2.3 s. One tick costs ~24 ms at 100k meters
    # and top-1000, ~5% of 500 ms (make bench, city_latency)
    summary_interval_ms: int = 500
    # where the cloud reaches this fog's API (meter detail through the cloud); empty:
    # http://<http_host>:<http_port>, with the machine's name when http_host is 0.0.0.0
    api_url: str = ""
    # consumption policies: the [policy] table (policy.py; docs/operate.md "Policies"), evaluated every interval
    policy: dict = field(default_factory=dict)
    policy_interval_ms: int = 5000
    # alerts (gateway/alerts.py, docs/operate.md "Alerts"): a meter offline longer than this raises `offline`
    offline_alert_s: int = 900
    # billing: the tariff file (tariff.py, docs/operate.md "Tariffs and bills"); empty: no bills
    tariff_file: str = ""
    # web sessions (api/access.py): how long a login lasts; cookie_secure: only over HTTPS
    session_hours: int = 12
    cookie_secure: bool = False
    # operations
    log_level: str = "INFO"

    @property
    def limits(self) -> Limits:
        return Limits(
            max_payload_bytes=self.max_payload_bytes,
            max_clock_skew_s=self.max_clock_skew_s,
            min_valid_ts=self.min_valid_ts,
            max_flow_lpm=self.max_flow_lpm,
        )

    @property
    def db_url(self) -> str:
        return "sqlite:///" + str(Path(self.db_path).expanduser().resolve())

    @property
    def policy_settings(self) -> PolicySettings:
        parsed = parse_settings(self.policy)
        return parsed if isinstance(parsed, PolicySettings) else PolicySettings()  # validate() reports why

    def validate(self) -> list[str]:
        errors: list[str] = []

        def between(name: str, lo: int, hi: int, why: str = "") -> None:
            self._between(errors, name, lo, hi, why)

        between("mqtt_port", 1, 65535)
        between("http_port", 0, 65535, " (0 picks a free port)")
        between("http_threads", 1, 256)
        between("live_max_clients", 0, 256, " (live event streams open at once; 0 turns them off)")
        between("batch_max_rows", 1, 100_000)
        between("batch_max_delay_ms", 1, 10_000, " (the delay before readings are on disk and acknowledged)")
        between("ack_interval_ms", 0, 60_000, " (at most one persistence ack per meter per interval)")
        between("max_payload_bytes", 256, 1_048_576)
        between("max_clock_skew_s", 0, 86_400)
        between("max_flow_lpm", 1, 1_000_000)
        between("command_ttl_s", 1, 30 * 86_400)
        between("command_resend_s", 1, 86_400)
        between("session_expiry_s", 60, 2**32 - 1)
        between("summary_top_k", 1, 100_000, " (the longest city ranking the cloud can answer exactly)")
        between("summary_interval_ms", 100, 3_600_000, " (at most one partial per period per interval)")
        between("policy_interval_ms", 100, 3_600_000, " (how often the policies are evaluated)")
        between("offline_alert_s", 1, 30 * 86_400, " (how long a meter may be offline before it raises an alert)")
        between("session_hours", 1, 24 * 90)
        parsed = parse_settings(self.policy, "policy.")
        if isinstance(parsed, list):
            errors.extend(parsed)
        if self.tariff_file:
            try:
                load_tariffs(self.tariff_file)
            except TariffError as exc:
                errors.extend(f"tariff_file: {e}" for e in exc.errors)
        if self.api_url and not API_URL_RE.fullmatch(self.api_url):
            errors.append(f"api_url: must be http(s)://host[:port] without a path, got {self.api_url[:60]!r}")
        if self.region and not REGION_RE.fullmatch(self.region):
            errors.append(f"region: 1-32 of a-z 0-9 _ - starting with a letter or digit, got {self.region!r}")
        self._common(errors)
        if not self.topic_root or any(c in self.topic_root for c in "+#") or self.topic_root.endswith("/"):
            errors.append(f"topic_root: must be a non-empty topic without + # or a trailing /, got {self.topic_root!r}")
        if not self.db_path:
            errors.append("db_path: must name the SQLite file")
        self._tls(errors)
        return errors


@dataclass
class CloudConfig(_Loadable):
    """`aquafog cloud`: docs/configuration.md "The cloud" documents every key (environment: AQUAFOG_CLOUD_<KEY>)."""

    ENV_PREFIX = "AQUAFOG_CLOUD_"
    # store: a SQLAlchemy URL; SQLite by default, PostgreSQL as postgresql+psycopg://user:pw@host/db
    db_url: str = "sqlite:///aquafog-cloud.db"
    timezone: str = "UTC"  # must be the fogs' time zone: periods are the same days everywhere
    # the cloud broker, where the fogs' bridges deliver
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_client_id: str = "aquafog-cloud"
    mqtt_cafile: str = ""  # TLS to the cloud broker, as the gateway's (docs/security.md)
    mqtt_certfile: str = ""
    mqtt_keyfile: str = ""
    session_expiry_s: int = 7 * 24 * 3600
    # HTTP API
    http_host: str = "127.0.0.1"
    http_port: int = 8090
    http_threads: int = 8
    # commands routed to a fog expire (and are never applied) after this long
    command_ttl_s: int = 24 * 3600
    # meter detail at the fogs: a token per region from `aquafog token add` at that fog
    fog_tokens: dict = field(default_factory=dict)
    # live meter views relayed from the fogs at once (each holds a server thread)
    live_max_clients: int = 16
    # web sessions (api/access.py)
    session_hours: int = 12
    cookie_secure: bool = False
    log_level: str = "INFO"

    def validate(self) -> list[str]:
        errors: list[str] = []
        for name, lo, hi in (("mqtt_port", 1, 65535), ("http_port", 0, 65535), ("http_threads", 1, 256),
                             ("session_expiry_s", 60, 2**32 - 1), ("command_ttl_s", 1, 30 * 86_400),
                             ("session_hours", 1, 24 * 90), ("live_max_clients", 0, 256)):
            self._between(errors, name, lo, hi)
        if not re.match(r"(sqlite|postgresql(\+psycopg)?)://", self.db_url):
            errors.append(f"db_url: must be sqlite:///<file> or postgresql+psycopg://user@host:port/db, "
                          f"got {self.db_url!r}")
        elif self.db_url.startswith("postgresql") and importlib.util.find_spec("psycopg") is None:
            errors.append("db_url: PostgreSQL needs its driver, which is not installed: "
                          "pip install 'aquafog[postgres]' (or use a sqlite:/// URL)")
        for region, token in self.fog_tokens.items():
            if not REGION_RE.fullmatch(str(region)) or not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
                errors.append(f"fog_tokens.{str(region)[:32]}: must map a region to an API token aft_... made with "
                              "`aquafog token add` at that fog")
        self._common(errors)
        self._tls(errors)
        return errors


# One line per key, for the example config files (`aquafog config example`) and the installed
# /etc/aquafog/*.toml; docs/configuration.md says more. A test checks every key has one.
GATEWAY_KEYS = {
    "db_path": "the SQLite file of the store",
    "timezone": "IANA zone of the utility (America/Sao_Paulo); days and months of consumption follow it",
    "mqtt_host": "the fog's broker",
    "mqtt_port": "its port (an installed fog: the loopback service listener)",
    "mqtt_username": "the gateway's broker account",
    "mqtt_password": "its password",
    "mqtt_client_id": "id of the persistent receiving session (the publisher uses <id>-tx)",
    "mqtt_cafile": "TLS to the broker: the CA that signed the broker's certificate",
    "mqtt_certfile": "the gateway's certificate, for a broker that requires one (mutual TLS)",
    "mqtt_keyfile": "its private key",
    "topic_root": "first topic level of the meters' topics",
    "session_expiry_s": "how long the broker keeps the gateway's session (and queued readings) while it is away",
    "http_host": "address of the HTTP API and dashboard (0.0.0.0: every interface)",
    "http_port": "its port",
    "http_threads": "threads serving API requests",
    "live_max_clients": "live event streams open at once (each its own thread); 0 turns them off",
    "batch_max_rows": "a batch of readings is committed at this many messages ...",
    "batch_max_delay_ms": "... or after this long, whichever comes first",
    "ack_interval_ms": "at most one persistence ack per meter per interval (acks are cumulative)",
    "max_payload_bytes": "larger MQTT messages are rejected",
    "max_clock_skew_s": "how far ahead of the gateway a reading's time may be",
    "min_valid_ts": "readings stamped earlier are rejected (the meter's clock is not set)",
    "max_flow_lpm": "larger flow values are rejected",
    "command_ttl_s": "an unanswered valve command expires after this long",
    "command_resend_s": "a sent, unanswered command is sent again after this long",
    "region": "this fog's region in the city (a-z 0-9 _ -); empty: a fog on its own",
    "summary_top_k": "length of the top list sent to the cloud: the longest exact city ranking",
    "summary_interval_ms": "at most one partial per period per interval, only when it changed",
    "api_url": "where the cloud reaches this API; empty: http://<http_host>:<http_port>",
    "policy": "the consumption policies, a [policy] table (docs/operate.md)",
    "policy_interval_ms": "how often the policies are evaluated",
    "offline_alert_s": "a meter offline longer than this raises an offline alert",
    "tariff_file": "the tariff file bills are computed from; empty: no bills",
    "session_hours": "how long a browser login lasts",
    "cookie_secure": "true: the session cookie only over HTTPS (behind a TLS proxy)",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}

CLOUD_KEYS = {
    "db_url": "the store: sqlite:///<file>, or postgresql+psycopg://user:password@host:port/db",
    "timezone": "the fogs' time zone (the same days and months everywhere)",
    "mqtt_host": "the cloud broker, where the fogs' bridges deliver",
    "mqtt_port": "its port (an installed cloud: the loopback service listener)",
    "mqtt_username": "the cloud's broker account",
    "mqtt_password": "its password",
    "mqtt_client_id": "id of the cloud's persistent session",
    "mqtt_cafile": "TLS to the broker: the CA that signed the broker's certificate",
    "mqtt_certfile": "the cloud's certificate, for a broker that requires one (mutual TLS)",
    "mqtt_keyfile": "its private key",
    "session_expiry_s": "how long the broker keeps the cloud's session while it is away",
    "http_host": "address of the HTTP API and dashboard (0.0.0.0: every interface)",
    "http_port": "its port",
    "http_threads": "threads serving API requests",
    "command_ttl_s": "a command routed to a fog expires (never applied) after this long",
    "fog_tokens": "a table: region = an API token of that fog (`aquafog token add` there), for meter detail",
    "live_max_clients": "live meter views relayed from the fogs at once",
    "session_hours": "how long a browser login lasts",
    "cookie_secure": "true: the session cookie only over HTTPS (behind a TLS proxy)",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}
