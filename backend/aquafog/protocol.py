"""The MQTT API v1, gateway side: topics, decoders for what meters send, encoders for
what the gateway sends. docs/mqtt-api.md is the specification; the shared vectors
in tests/vectors/mqtt_v1.json pin it byte for byte.

Decoders never raise on bad input: they return a `Reject` naming the reason (a stable
code, counted per reason), the field at fault and a sentence for the log.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import NamedTuple

VERSION = 1
DEFAULT_ROOT = "aquafog"

METER_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
BOOT_RE = re.compile(r"[0-9a-f]{8}")
COMMAND_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# The id of a valve change a meter made on its own: local-<boot>-<n>, n = 1, 2, ... per boot.
# Gateway and operator command ids never start with LOCAL_PREFIX.
LOCAL_PREFIX = "local-"
LOCAL_ID_RE = re.compile(r"local-[0-9a-f]{8}-[1-9][0-9]{0,9}")

MAX_SEQ = 2**31 - 1
MAX_REGISTER = 2**53 - 1  # exact in a double, so every JSON library keeps it
MAX_LITRES = MAX_REGISTER // 1000
MAX_COUNT = 2**31 - 1
VALVE_STATES = ("open", "closed")
VALVE_CAUSES = ("burst",)  # why a meter changed its valve on its own
RESET_CAUSES = ("power_on", "hard", "watchdog", "deep_sleep", "soft", "brownout", "unknown")
CLOCK_STATES = ("ntp", "stale", "unset")
ALARMS = ("leak", "burst", "valve_fault")  # also their canonical order

# Topic kinds (everything after aquafog/<meter>/) that a meter may publish.
READING = "tele/reading"
HEALTH = "tele/health"
STATUS = "status"
VALVE_RESULT = "stat/valve"
METER_KINDS = (READING, HEALTH, STATUS, VALVE_RESULT)


class Reject(NamedTuple):
    reason: str
    field: str | None
    message: str


class Reading(NamedTuple):
    meter: str
    boot: str
    seq: int
    ts: int
    pulses: int
    ml: int
    flow_mlpm: int
    valve: str


class Status(NamedTuple):
    meter: str
    online: bool
    boot: str | None
    fw: str | None
    valve: str | None
    conn: int | None = None  # a birth's connection number, echoed in its answer; None from older firmware


class ValveResult(NamedTuple):
    meter: str
    id: str
    state: str
    ok: bool
    error: str | None
    cause: str | None = None  # set when the meter changed its valve on its own


class Health(NamedTuple):
    meter: str
    boot: str
    fw: str
    uptime_s: int
    reset: str
    rssi: int | None
    heap_free: int
    dropped: int
    buffer: int
    clock: str
    alarms: tuple[str, ...]  # distinct, in ALARMS order


@dataclass(frozen=True)
class Limits:
    """Bounds a decoded message must respect; the gateway config sets them."""

    max_payload_bytes: int = 8192
    max_clock_skew_s: int = 300
    min_valid_ts: int = 1577836800  # 2020-01-01: older means the meter's clock was never set
    max_flow_lpm: int = 1000


class Topics:
    """Builds and parses every topic of one topic root (one place per side)."""

    def __init__(self, root: str = DEFAULT_ROOT):
        self.root = root
        self._prefix = root + "/"
        self._depth = root.count("/") + 1

    def reading(self, meter: str) -> str:
        return f"{self.root}/{meter}/{READING}"

    def health(self, meter: str) -> str:
        return f"{self.root}/{meter}/{HEALTH}"

    def status(self, meter: str) -> str:
        return f"{self.root}/{meter}/{STATUS}"

    def valve_result(self, meter: str) -> str:
        return f"{self.root}/{meter}/{VALVE_RESULT}"

    def valve_command(self, meter: str) -> str:
        return f"{self.root}/{meter}/cmnd/valve"

    def ack(self, meter: str) -> str:
        return f"{self.root}/{meter}/cmnd/ack"

    def subscriptions(self) -> list[str]:
        """What the gateway subscribes to. Wide enough to see (and count) wrong
        topic shapes under the meters' own branches."""
        return [f"{self.root}/+/tele/#", f"{self.root}/+/stat/#", f"{self.root}/+/status"]

    def parse(self, topic: str) -> tuple[str, str] | Reject:
        """(meter, kind) of a topic a meter may publish to, or a Reject."""
        if not topic.startswith(self._prefix):
            return Reject("topic_shape", None, f"topic {topic!r} is outside {self._prefix}#")
        parts = topic[len(self._prefix):].split("/", 1)
        if len(parts) != 2:
            return Reject("topic_shape", None, f"topic {topic!r} has no message kind after the meter id")
        meter, kind = parts
        if kind not in METER_KINDS:
            return Reject(
                "topic_shape", None,
                f"topic {topic!r}: {kind!r} is not one of {', '.join(METER_KINDS)}",
            )
        if not METER_ID_RE.fullmatch(meter):
            return Reject(
                "bad_meter_id", None,
                f"topic {topic!r}: meter id must be 1-32 of a-z 0-9 _ - starting with a letter or digit",
            )
        return meter, kind


# ---------------------------------------------------------------- decoding

def _nonfinite(token: str) -> float:
    # JSON has no NaN/Infinity, but Python's parser accepts them; keep them as floats so
    # the field check can name the field they were in.
    return float(token)


_loads = json.JSONDecoder(parse_constant=_nonfinite).decode


def _parse_object(payload: bytes, limits: Limits) -> dict | Reject:
    if len(payload) > limits.max_payload_bytes:
        return Reject(
            "payload_too_large", None,
            f"payload is {len(payload)} bytes; the limit is {limits.max_payload_bytes}",
        )
    try:
        obj = _loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return Reject("not_json", None, "payload is not UTF-8 text")
    except ValueError as exc:
        return Reject("not_json", None, f"payload is not JSON: {exc}")
    except RecursionError:
        return Reject("not_json", None, "payload is nested too deeply")
    if type(obj) is not dict:
        return Reject("not_object", None, f"payload must be a JSON object, got {type(obj).__name__}")
    v = obj.get("v")
    if v is None:
        return Reject("missing_field", "v", "v (contract version) is missing")
    if v != VERSION or type(v) is not int:
        return Reject("unsupported_version", "v", f"v must be {VERSION}, got {v!r}")
    return obj


def _int(obj: dict, key: str, lo: int, hi: int) -> int | Reject:
    if key not in obj:
        return Reject("missing_field", key, f"{key} is missing")
    x = obj[key]
    if type(x) is not int:
        return Reject("wrong_type", key, f"{key} must be an integer, got {type(x).__name__} {x!r:.40}")
    if x < lo or x > hi:
        return Reject("out_of_range", key, f"{key} must be between {lo} and {hi}, got {x}")
    return x


def _milli(obj: dict, key: str, hi: int) -> int | Reject:
    """A decimal number with at most 3 decimals, returned in thousandths."""
    if key not in obj:
        return Reject("missing_field", key, f"{key} is missing")
    x = obj[key]
    t = type(x)
    if t is int:
        milli = x * 1000
    elif t is float:
        if not math.isfinite(x):
            return Reject("not_finite", key, f"{key} must be a finite number, got {x}")
        if x < 0 or x > hi:  # before scaling: x * 1000 overflows to inf near the largest doubles
            return Reject("out_of_range", key, f"{key} must be between 0 and {hi}, got {x}")
        milli = round(x * 1000)
        if abs(x * 1000 - milli) > 0.01:
            return Reject("bad_format", key, f"{key} must have at most 3 decimals, got {x!r}")
    else:
        return Reject("wrong_type", key, f"{key} must be a number, got {t.__name__} {x!r:.40}")
    if milli < 0 or milli > hi * 1000:
        return Reject("out_of_range", key, f"{key} must be between 0 and {hi}, got {x}")
    return milli


def _str(obj: dict, key: str, pattern: re.Pattern, what: str) -> str | Reject:
    if key not in obj:
        return Reject("missing_field", key, f"{key} is missing")
    x = obj[key]
    if type(x) is not str:
        return Reject("wrong_type", key, f"{key} must be a string, got {type(x).__name__}")
    if not pattern.fullmatch(x):
        return Reject("bad_format", key, f"{key} must be {what}, got {x[:40]!r}")
    return x


def _enum(obj: dict, key: str, allowed: tuple[str, ...]) -> str | Reject:
    if key not in obj:
        return Reject("missing_field", key, f"{key} is missing")
    x = obj[key]
    if type(x) is not str:
        return Reject("wrong_type", key, f"{key} must be a string, got {type(x).__name__}")
    if x not in allowed:
        return Reject("invalid_value", key, f"{key} must be one of {', '.join(allowed)}, got {x[:40]!r}")
    return x


def decode_reading(meter: str, payload: bytes, now: float, limits: Limits) -> Reading | Reject:
    obj = _parse_object(payload, limits)
    if type(obj) is Reject:
        return obj
    boot = _str(obj, "boot", BOOT_RE, "8 lowercase hex digits")
    if type(boot) is Reject:
        return boot
    seq = _int(obj, "seq", 0, MAX_SEQ)
    if type(seq) is Reject:
        return seq
    ts = _int(obj, "ts", 0, 2**40)
    if type(ts) is Reject:
        return ts
    if ts < limits.min_valid_ts:
        return Reject("ts_too_old", "ts", f"ts {ts} is before {limits.min_valid_ts}: the meter's clock is not set")
    if ts > now + limits.max_clock_skew_s:
        return Reject(
            "ts_future", "ts",
            f"ts {ts} is {ts - int(now)} s ahead of the gateway clock (allowed skew {limits.max_clock_skew_s} s)",
        )
    pulses = _int(obj, "pulses", 0, MAX_REGISTER)
    if type(pulses) is Reject:
        return pulses
    ml = _milli(obj, "litres", MAX_LITRES)
    if type(ml) is Reject:
        return ml
    flow = _milli(obj, "flow", limits.max_flow_lpm)
    if type(flow) is Reject:
        return flow
    valve = _enum(obj, "valve", VALVE_STATES)
    if type(valve) is Reject:
        return valve
    return Reading(meter, boot, seq, ts, pulses, ml, flow, valve)


def decode_status(meter: str, payload: bytes, limits: Limits) -> Status | Reject | None:
    """None for an empty payload: someone cleared the retained status, nothing to do."""
    if not payload:
        return None
    obj = _parse_object(payload, limits)
    if type(obj) is Reject:
        return obj
    online = obj.get("online")
    if online is None:
        return Reject("missing_field", "online", "online is missing")
    if type(online) is not bool:
        return Reject("wrong_type", "online", f"online must be true or false, got {online!r:.40}")
    boot = fw = valve = conn = None
    if "boot" in obj:
        boot = _str(obj, "boot", BOOT_RE, "8 lowercase hex digits")
        if type(boot) is Reject:
            return boot
    elif online:
        return Reject("missing_field", "boot", "boot is missing from the birth message")
    if online:
        fw = obj.get("fw")
        if fw is not None and (type(fw) is not str or len(fw) > 32):
            return Reject("wrong_type", "fw", "fw must be a string of at most 32 characters")
        valve = _enum(obj, "valve", VALVE_STATES)
        if type(valve) is Reject:
            return valve
        if obj.get("conn") is not None:  # firmware older than conn sends none: answered without it
            conn = _int(obj, "conn", 0, MAX_SEQ)
            if type(conn) is Reject:
                return conn
    return Status(meter, online, boot, fw, valve, conn)


def decode_valve_result(meter: str, payload: bytes, limits: Limits) -> ValveResult | Reject:
    obj = _parse_object(payload, limits)
    if type(obj) is Reject:
        return obj
    cid = _str(obj, "id", COMMAND_ID_RE, "1-64 of A-Z a-z 0-9 _ . : -")
    if type(cid) is Reject:
        return cid
    state = _enum(obj, "state", VALVE_STATES)
    if type(state) is Reject:
        return state
    ok = obj.get("ok")
    if ok is None:
        return Reject("missing_field", "ok", "ok is missing")
    if type(ok) is not bool:
        return Reject("wrong_type", "ok", f"ok must be true or false, got {ok!r:.40}")
    error = obj.get("error")
    if error is not None and type(error) is not str:
        return Reject("wrong_type", "error", "error must be a string")
    if not ok and not error:
        error = "meter reported failure without a reason"
    cause = None
    if obj.get("cause") is not None:
        cause = _enum(obj, "cause", VALVE_CAUSES)
        if type(cause) is Reject:
            return cause
    return ValveResult(meter, cid, state, ok, error[:200] if error else None, cause)


def decode_health(meter: str, payload: bytes, limits: Limits) -> Health | Reject:
    obj = _parse_object(payload, limits)
    if type(obj) is Reject:
        return obj
    boot = _str(obj, "boot", BOOT_RE, "8 lowercase hex digits")
    if type(boot) is Reject:
        return boot
    if "fw" not in obj:
        return Reject("missing_field", "fw", "fw is missing")
    fw = obj["fw"]
    if type(fw) is not str:
        return Reject("wrong_type", "fw", f"fw must be a string, got {type(fw).__name__}")
    if len(fw) > 32:
        return Reject("bad_format", "fw", f"fw must be at most 32 characters, got {len(fw)}")
    uptime = _int(obj, "uptime_s", 0, MAX_COUNT)
    if type(uptime) is Reject:
        return uptime
    reset = _enum(obj, "reset", RESET_CAUSES)
    if type(reset) is Reject:
        return reset
    if "rssi" not in obj:
        return Reject("missing_field", "rssi", "rssi is missing (null when not known)")
    rssi = None
    if obj["rssi"] is not None:
        rssi = _int(obj, "rssi", -127, 0)
        if type(rssi) is Reject:
            return rssi
    counts = []
    for key in ("heap_free", "dropped", "buffer"):
        n = _int(obj, key, 0, MAX_COUNT)
        if type(n) is Reject:
            return n
        counts.append(n)
    clock = _enum(obj, "clock", CLOCK_STATES)
    if type(clock) is Reject:
        return clock
    alarms = _alarms(obj)
    if type(alarms) is Reject:
        return alarms
    return Health(meter, boot, fw, uptime, reset, rssi, counts[0], counts[1], counts[2], clock, alarms)


def _alarms(obj: dict) -> tuple[str, ...] | Reject:
    if "alarms" not in obj:
        return Reject("missing_field", "alarms", "alarms is missing ([] when none)")
    x = obj["alarms"]
    if type(x) is not list:
        return Reject("wrong_type", "alarms", f"alarms must be an array of strings, got {type(x).__name__}")
    for a in x:
        if type(a) is not str:
            return Reject("wrong_type", "alarms", f"alarms must be an array of strings, got a {type(a).__name__}")
        if a not in ALARMS:
            return Reject("invalid_value", "alarms", f"alarms may hold {', '.join(ALARMS)}, got {a[:40]!r}")
    if len(set(x)) != len(x):
        return Reject("invalid_value", "alarms", "alarms must not repeat an alarm")
    return tuple(a for a in ALARMS if a in x)


def decode(topics: Topics, topic: str, payload: bytes, now: float, limits: Limits):
    """Any message a meter may publish -> Reading | Health | Status | ValveResult | None | Reject."""
    parsed = topics.parse(topic)
    if type(parsed) is Reject:
        return parsed
    meter, kind = parsed
    if kind == READING:
        return decode_reading(meter, payload, now, limits)
    if kind == STATUS:
        return decode_status(meter, payload, limits)
    if kind == HEALTH:
        return decode_health(meter, payload, limits)
    return decode_valve_result(meter, payload, limits)


# ---------------------------------------------------------------- encoding

def litres_text(ml: int) -> str:
    """Millilitres as litres with exactly 3 decimals, without going through a float."""
    return "%d.%03d" % divmod(ml, 1000)


def encode_valve_command(command_id: str, state: str) -> bytes:
    if not COMMAND_ID_RE.fullmatch(command_id):
        raise ValueError(f"command id {command_id!r} must be 1-64 of A-Z a-z 0-9 _ . : -")
    if state not in VALVE_STATES:
        raise ValueError(f"valve state must be one of {VALVE_STATES}, got {state!r}")
    return ('{"v":1,"id":"%s","state":"%s"}' % (command_id, state)).encode()


def encode_ack(boot: str | None, seq: int | None, pulses: int, ml: int, conn: int | None = None) -> bytes:
    """conn: set in the answer to a birth, the birth's own conn (the meter syncs only on its
    current connection's); None in the ack of readings."""
    if boot is None:
        text = '{"v":1,"boot":null,"seq":null,"pulses":%d,"litres":%s' % (pulses, litres_text(ml))
    else:
        text = '{"v":1,"boot":"%s","seq":%d,"pulses":%d,"litres":%s' % (boot, seq, pulses, litres_text(ml))
    if conn is not None:
        text += ',"conn":%d' % conn
    return (text + "}").encode()
