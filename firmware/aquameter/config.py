"""Meter configuration: defaults, then config.json, validated all at once.

validate(raw) returns (cfg, errors). Every problem is reported, each as
"<key>: <problem, allowed range>", so a technician fixes the file in one pass.
"""

_ID_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_REST = _ID_FIRST + "_-"

# key: default (None = required, no default)
DEFAULTS = {
    "meter_id": None,
    "wifi_ssid": None,
    "wifi_password": "",
    "broker_host": None,
    "broker_port": 1883,
    "mqtt_user": None,  # defaults to meter_id
    "mqtt_password": "",
    "mqtt_keepalive_s": 60,
    "topic_root": "aquafog",
    "pulse_pin": 4,
    "relay_pin": 26,
    "relay_active_high": True,
    "k_factor": 450,
    "report_interval_s": 60,
    "ack_timeout_s": 120,
    "outbox_size": 256,
    "reconcile_timeout_s": 10,
    "flow_timeout_s": 10,
    "valve_default": "open",
}

# integer keys: (minimum, maximum)
_INT_RANGES = {
    "broker_port": (1, 65535),
    "mqtt_keepalive_s": (0, 65535),
    "pulse_pin": (0, 48),
    "relay_pin": (0, 48),
    "report_interval_s": (1, 86400),
    "ack_timeout_s": (1, 86400),
    "outbox_size": (1, 4096),
    "reconcile_timeout_s": (0, 3600),
    "flow_timeout_s": (1, 3600),
}

_STR_KEYS = ("wifi_ssid", "wifi_password", "broker_host", "mqtt_user", "mqtt_password")


def valid_meter_id(s):
    if not isinstance(s, str) or not 1 <= len(s) <= 32 or s[0] not in _ID_FIRST:
        return False
    for c in s:
        if c not in _ID_REST:
            return False
    return True


def valid_topic_root(s):
    if not isinstance(s, str) or not 1 <= len(s) <= 64:
        return False
    for c in s:
        if c in "+#/\x00 " or ord(c) > 126:
            return False
    return True


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x):
    return (isinstance(x, int) or isinstance(x, float)) and not isinstance(x, bool)


def validate(raw):
    """Return (cfg, errors): cfg has every key (defaults filled) plus pulses_per_m3."""
    errors = []
    if not isinstance(raw, dict):
        return None, ["config: must be a JSON object"]
    cfg = {}
    for key in DEFAULTS:
        cfg[key] = DEFAULTS[key]
    for key in raw:
        if key in DEFAULTS:
            cfg[key] = raw[key]
        elif not (isinstance(key, str) and key.startswith("_")):  # "_comment" keys allowed
            errors.append("%s: unknown key" % key)

    if not valid_meter_id(cfg["meter_id"]):
        errors.append("meter_id: required, 1-32 characters of a-z 0-9 _ - starting with a letter or digit")
    if cfg["mqtt_user"] is None:
        cfg["mqtt_user"] = cfg["meter_id"]
    for key in _STR_KEYS:
        v = cfg[key]
        if v is None:
            errors.append("%s: required" % key)
        elif not isinstance(v, str):
            errors.append("%s: must be a string" % key)
    for key in ("wifi_ssid", "broker_host"):
        if isinstance(cfg[key], str) and not cfg[key]:
            errors.append("%s: must not be empty" % key)
    if isinstance(cfg["wifi_ssid"], str) and len(cfg["wifi_ssid"]) > 32:
        errors.append("wifi_ssid: at most 32 characters")
    if not valid_topic_root(cfg["topic_root"]):
        errors.append("topic_root: 1-64 printable characters without / + # or spaces")
    for key in _INT_RANGES:
        lo, hi = _INT_RANGES[key]
        v = cfg[key]
        if not _is_int(v) or v < lo or v > hi:
            errors.append("%s: must be an integer %d..%d, got %r" % (key, lo, hi, v))
    if _is_int(cfg["pulse_pin"]) and cfg["pulse_pin"] == cfg["relay_pin"]:
        errors.append("relay_pin: must differ from pulse_pin")
    if not isinstance(cfg["relay_active_high"], bool):
        errors.append("relay_active_high: must be true or false")
    if cfg["valve_default"] not in ("open", "closed"):
        errors.append("valve_default: must be \"open\" or \"closed\"")

    k = cfg["k_factor"]
    cfg["pulses_per_m3"] = None
    if not _is_number(k) or not k > 0 or k > 1000000:
        errors.append("k_factor: must be a number of pulses per litre, > 0 and <= 1000000, got %r" % (k,))
    else:
        ppm3 = int(round(k * 1000))
        if ppm3 < 1:
            errors.append("k_factor: must be at least 0.001 pulses per litre (1 pulse per m3), got %r" % (k,))
        else:
            cfg["pulses_per_m3"] = ppm3
    return cfg, errors
