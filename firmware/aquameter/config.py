"""Meter configuration: defaults, then config.json, validated all at once.

validate(raw) returns (cfg, errors). Every problem is reported, each as
"<key>: <problem, allowed range>", so a technician fixes the file in one pass.
"""

_ID_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_REST = _ID_FIRST + "_-"

# key: default (None = required, or "not set" where the key says so)
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
    # MQTT over TLS (off: plain MQTT, as before)
    "mqtt_tls": False,
    "mqtt_cafile": "ca.crt",  # the CA that signed the broker's certificate, a file next to config.json
    "mqtt_tls_hostname": None,  # the name the broker's certificate must carry; defaults to broker_host
    "mqtt_certfile": None,  # mutual TLS: this meter's certificate and key (both or neither)
    "mqtt_keyfile": None,
    # pulse input
    "pulse_pin": 4,
    "k_factor": 450,
    "pulse_min_gap_ms": 0,  # 0: hardware counter; > 0: interrupt counting with a quiet-time filter (reed)
    "flow_timeout_s": 10,
    # valve
    "relay_pin": 26,
    "relay_active_high": True,
    "valve_default": "open",
    "valve_feedback_pin": None,  # not fitted
    "valve_feedback_closed_level": 0,
    "valve_travel_s": 15,
    # reporting and store-and-forward
    "report_interval_s": 60,
    "ack_timeout_s": 120,
    "reconcile_timeout_s": 10,
    "outbox_size": 16,
    "ring_size": 2880,
    "replay_per_s": 10,
    "save_litres": 5,
    "save_min_interval_s": 10,
    # time, health, watchdog
    "ntp_host": None,  # defaults to broker_host; "" turns NTP off
    "ntp_interval_s": 21600,
    "health_interval_s": 900,
    "watchdog_s": 60,
    "maintenance_s": 1800,
    # on-device flags
    "leak_hours": 24,
    "leak_quiet_s": 600,
    "burst_lpm": 30,
    "burst_minutes": 30,
    "burst_close": False,
}

# integer keys: (minimum, maximum)
_INT_RANGES = {
    "broker_port": (1, 65535),
    "mqtt_keepalive_s": (0, 65535),
    "pulse_pin": (0, 39),
    "relay_pin": (0, 39),
    "pulse_min_gap_ms": (0, 1000),
    "flow_timeout_s": (1, 3600),
    "valve_feedback_closed_level": (0, 1),
    "valve_travel_s": (1, 300),
    "report_interval_s": (1, 86400),
    "ack_timeout_s": (1, 86400),
    "reconcile_timeout_s": (1, 3600),
    "outbox_size": (1, 4096),
    "ring_size": (0, 100000),
    "replay_per_s": (1, 1000),
    "save_litres": (1, 100000),
    "save_min_interval_s": (1, 86400),
    "ntp_interval_s": (60, 604800),
    "health_interval_s": (10, 86400),
    "maintenance_s": (60, 86400),
    "leak_hours": (0, 720),
    "leak_quiet_s": (10, 86400),
    "burst_minutes": (1, 1440),
}

_STR_KEYS = ("wifi_ssid", "wifi_password", "broker_host", "mqtt_user", "mqtt_password")
_BOOL_KEYS = ("relay_active_high", "burst_close", "mqtt_tls")
_FILE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
# the board's own files: a certificate must not take their names
_RESERVED_FILES = ("config.json", "state.json", "state.json.tmp", "ring.bin", "main.py", "boot.py")


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


def valid_file_name(s):
    """A file in the board's root, next to config.json: 1-64 of letters, digits . _ -, not hidden."""
    if not isinstance(s, str) or not 1 <= len(s) <= 64 or s[0] == "." or s in _RESERVED_FILES:
        return False
    for c in s:
        if c not in _FILE_CHARS:
            return False
    return True


def _check_tls(cfg, errors):
    tls = cfg["mqtt_tls"]
    if cfg["mqtt_tls_hostname"] is None:
        cfg["mqtt_tls_hostname"] = cfg["broker_host"]
    elif not tls:
        errors.append("mqtt_tls_hostname: only used with mqtt_tls true (set that, or remove this key)")
    name = cfg["mqtt_tls_hostname"]
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 253 or " " in name or "/" in name):
        errors.append("mqtt_tls_hostname: must be the host name (or IP address) in the broker's certificate, "
                      "1-253 characters without spaces or /, got %r" % (name,))
    files = []
    for key in ("mqtt_cafile", "mqtt_certfile", "mqtt_keyfile"):
        v = cfg[key]
        if v is None and key != "mqtt_cafile":
            continue
        if not valid_file_name(v):
            errors.append("%s: must be a file name next to config.json on the board: 1-64 of letters, digits "
                          ". _ -, not starting with . and not one of %s, got %r" % (key, ", ".join(_RESERVED_FILES), v))
        elif v in files:
            errors.append("%s: must differ from the other certificate files, got %r" % (key, v))
        files.append(v)
        if key != "mqtt_cafile" and not tls:
            errors.append("%s: only used with mqtt_tls true (set that, or remove this key)" % key)
    if (cfg["mqtt_certfile"] is None) != (cfg["mqtt_keyfile"] is None):
        errors.append("mqtt_certfile, mqtt_keyfile: mutual TLS needs both, the meter's certificate and its key")
    if tls is True and cfg["ntp_host"] == "":
        errors.append("ntp_host: must be set with mqtt_tls (certificate dates are checked, and an ESP32's clock "
                      "restarts at 2000 after a power cut: without NTP the meter would never connect)")


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x):
    return (isinstance(x, int) or isinstance(x, float)) and not isinstance(x, bool)


def validate(raw):
    """Return (cfg, errors): cfg has every key (defaults filled) plus pulses_per_m3 and burst_mlpm."""
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
    if cfg["ntp_host"] is None:
        cfg["ntp_host"] = cfg["broker_host"]
    if cfg["ntp_host"] is not None and not isinstance(cfg["ntp_host"], str):
        errors.append("ntp_host: must be a string (\"\" turns NTP off)")
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
    fb = cfg["valve_feedback_pin"]
    if fb is not None and (not _is_int(fb) or fb < 0 or fb > 39):
        errors.append("valve_feedback_pin: must be null (not fitted) or an integer 0..39, got %r" % (fb,))
    pins = [cfg["pulse_pin"], cfg["relay_pin"], fb]
    if _is_int(pins[0]) and pins[0] == pins[1]:
        errors.append("relay_pin: must differ from pulse_pin")
    if fb is not None and fb in pins[:2]:
        errors.append("valve_feedback_pin: must differ from pulse_pin and relay_pin")
    if _is_int(pins[1]) and pins[1] >= 34:
        errors.append("relay_pin: GPIO 34-39 are input-only and cannot drive a relay")
    for key in _BOOL_KEYS:
        if not isinstance(cfg[key], bool):
            errors.append("%s: must be true or false" % key)
    _check_tls(cfg, errors)
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
    b = cfg["burst_lpm"]
    cfg["burst_mlpm"] = 0
    if not _is_number(b) or b < 0 or b > 1000:
        errors.append("burst_lpm: must be a number of litres per minute 0..1000 (0 turns it off), got %r" % (b,))
    else:
        cfg["burst_mlpm"] = int(b * 1000)
    w = cfg["watchdog_s"]
    if not _is_int(w) or not (w == 0 or 10 <= w <= 3600):
        errors.append("watchdog_s: must be 0 (off) or an integer 10..3600, got %r" % (w,))
    return cfg, errors
