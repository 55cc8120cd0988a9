"""AquaFog MQTT API v1 (docs/mqtt-api.md): topics, encoders, decoders.

Pinned byte for byte by tests/vectors/mqtt_v1.json. Registers are integers
(millilitres, millilitres per minute) and are written as litres with exactly three
decimals by integer formatting; no float ever carries a register (ESP32 floats are
single precision). Decoders never raise on bad input: they return an error string.
"""

try:
    import json
except ImportError:  # older MicroPython
    import ujson as json

WIRE_VERSION = 1
MAX_SEQ = 2147483647
MAX_PULSES = 9007199254740991
_HEX = "0123456789abcdef"
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
ERR_BAD_STATE = "state must be open or closed"


# --- topics -------------------------------------------------------------------------
# leaves under <root>/<meter>/
READING = "tele/reading"
HEALTH = "tele/health"
STATUS = "status"
VALVE_RESULT = "stat/valve"
VALVE_COMMAND = "cmnd/valve"
ACK = "cmnd/ack"
COMMANDS = "cmnd/#"


def topic(root, meter, leaf):
    return "%s/%s/%s" % (root, meter, leaf)


# --- encoders -------------------------------------------------------------------------
def milli(n):
    """Integer thousandths as a decimal with exactly three places: 274346 -> "274.346"."""
    return "%d.%03d" % (n // 1000, n % 1000)


def encode_reading(boot, seq, ts, pulses, ml, flow_mlpm, valve):
    return '{"v":1,"boot":"%s","seq":%d,"ts":%d,"pulses":%d,"litres":%s,"flow":%s,"valve":"%s"}' % (
        boot, seq, ts, pulses, milli(ml), milli(flow_mlpm), valve)


def encode_birth(boot, fw, valve, conn):
    """conn: this connection's number; the gateway's answer to the birth echoes it."""
    return '{"v":1,"online":true,"boot":"%s","fw":"%s","valve":"%s","conn":%d}' % (boot, fw, valve, conn)


def encode_will(boot):
    return '{"v":1,"online":false,"boot":"%s"}' % boot


def encode_valve_result(cmd_id, state, ok, error=None, cause=None):
    if cause:  # the meter changed its valve on its own (auto-close on a burst)
        return '{"v":1,"id":"%s","state":"%s","ok":true,"cause":"%s"}' % (cmd_id, state, cause)
    if ok:
        return '{"v":1,"id":"%s","state":"%s","ok":true}' % (cmd_id, state)
    return '{"v":1,"id":"%s","state":"%s","ok":false,"error":"%s"}' % (cmd_id, state, error)


def encode_health(boot, fw, uptime_s, reset, rssi, heap_free, dropped, buffer, clock, alarms):
    return ('{"v":1,"boot":"%s","fw":"%s","uptime_s":%d,"reset":"%s","rssi":%s,"heap_free":%d,'
            '"dropped":%d,"buffer":%d,"clock":"%s","alarms":[%s]}') % (
        boot, fw, uptime_s, reset, "null" if rssi is None else "%d" % rssi, heap_free, dropped, buffer,
        clock, ",".join(['"%s"' % a for a in alarms]))


# --- validation helpers -------------------------------------------------------------
def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def valid_boot(s):
    if not isinstance(s, str) or len(s) != 8:
        return False
    for c in s:
        if c not in _HEX:
            return False
    return True


def valid_command_id(s):
    if not isinstance(s, str) or not 1 <= len(s) <= 64:
        return False
    for c in s:
        if c not in _ID_CHARS:
            return False
    return True


def _text(payload):
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload).decode()
    return payload


def _load_object(payload):
    """(obj, None) for a JSON object with "v":1, else (None, reason)."""
    try:
        text = _text(payload)
        obj = json.loads(text)
    except Exception:  # ValueError, UnicodeError, TypeError: all just bad input
        return None, None, "not_json"
    if not isinstance(obj, dict):
        return None, None, "not_object"
    if "v" not in obj:
        return None, None, "missing v"
    if not _is_int(obj["v"]) or obj["v"] != WIRE_VERSION:
        return None, None, "unsupported_version"
    return obj, text, None


def parse_milli(text, key):
    """Millilitres from the literal of `key` in a JSON text ("274.346" -> 274346).

    Read from the text, not from a float: a single-precision float cannot hold a
    large register. Returns None unless the value is a plain non-negative decimal with
    at most three decimals.
    """
    pattern = '"%s"' % key
    i = text.find(pattern)
    if i < 0:
        return None
    i += len(pattern)
    n = len(text)
    while i < n and text[i] in " \t\r\n":
        i += 1
    if i >= n or text[i] != ":":
        return None
    i += 1
    while i < n and text[i] in " \t\r\n":
        i += 1
    j = i
    while j < n and text[j] in "0123456789.":
        j += 1
    if j < n and text[j] in "eE+-":
        return None
    token = text[i:j]
    if not token:
        return None
    dot = token.find(".")
    if dot < 0:
        whole, frac = token, ""
    else:
        whole, frac = token[:dot], token[dot + 1:]
    if not whole or not whole.isdigit() or len(frac) > 3 or (frac and not frac.isdigit()):
        return None
    return int(whole) * 1000 + int((frac + "000")[:3])


# --- decoders -----------------------------------------------------------------------------
def decode_valve_command(payload):
    """(cmd_id, state, error) for a cmnd/valve payload.

    (id, state, None): a valid command. (id, None, error): a command with a usable id
    but a bad state, to be answered with ok:false. (None, None, error): ignore it.
    """
    obj, _, err = _load_object(payload)
    if err:
        return None, None, err
    cmd_id = obj.get("id")
    if not valid_command_id(cmd_id):
        return None, None, "bad id"
    state = obj.get("state")
    if state != "open" and state != "closed":
        return cmd_id, None, ERR_BAD_STATE
    return cmd_id, state, None


def decode_ack(payload):
    """(fields, None) for a valid cmnd/ack payload, else (None, error).

    fields: {"boot": str|None, "seq": int|None, "pulses": int, "ml": int, "conn": int|None}
    conn is the echo of a birth's conn (an ack answering that birth), else None.
    """
    obj, text, err = _load_object(payload)
    if err:
        return None, err
    boot = obj.get("boot", 0)
    seq = obj.get("seq", 0)
    if boot is None or seq is None:
        if boot is not None or seq is not None:
            return None, "boot and seq must both be null or both set"
    else:
        if not valid_boot(boot):
            return None, "bad boot"
        if not _is_int(seq) or seq < 0 or seq > MAX_SEQ:
            return None, "bad seq"
    pulses = obj.get("pulses")
    if not _is_int(pulses) or pulses < 0 or pulses > MAX_PULSES:
        return None, "bad pulses"
    litres = obj.get("litres")
    if isinstance(litres, bool) or not (isinstance(litres, int) or isinstance(litres, float)):
        return None, "bad litres"
    ml = parse_milli(text, "litres")
    if ml is None:
        return None, "bad litres"
    conn = obj.get("conn")
    if conn is not None and (not _is_int(conn) or conn < 0 or conn > MAX_SEQ):
        return None, "bad conn"
    return {"boot": boot, "seq": seq, "pulses": pulses, "ml": ml, "conn": conn}, None
