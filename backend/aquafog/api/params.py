"""Query-string and body parsing that names the field at fault."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

from flask import request

from ..policy import PolicySettings, parse_settings
from ..protocol import COMMAND_ID_RE, LOCAL_PREFIX, VALVE_STATES
from .errors import bad_request

MAX_REASON = 500


def arg_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer from {lo} to {hi}, got {raw[:40]!r}", name) from None
    if not lo <= value <= hi:
        raise bad_request(f"{name} must be from {lo} to {hi}, got {value}", name)
    return value


def arg_enum(name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw not in allowed:
        raise bad_request(f"{name} must be one of {', '.join(allowed)}, got {raw[:40]!r}", name)
    return raw


def arg_time(name: str, default: int) -> int:
    """Unix seconds, or ISO 8601 (a time without offset is UTC)."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if re.fullmatch(r"-?\d{1,12}", raw):
        return int(raw)
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{name} must be Unix seconds or an ISO 8601 time such as 2026-11-24T08:00:00Z, "
                          f"got {raw[:40]!r}", name) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())


def arg_date(name: str) -> date:
    raw = request.args.get(name)
    if not raw:
        raise bad_request(f"{name} is required for a custom period (a date such as 2026-11-01)", name)
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise bad_request(f"{name} must be a date such as 2026-11-01, got {raw[:40]!r}", name) from None


def json_object(allowed: dict[str, type]) -> dict:
    """The request body as a JSON object with only the allowed keys (type-checked)."""
    body = request.get_json(silent=True)
    if body is None:
        raise bad_request("the body must be a JSON object, sent with Content-Type: application/json", "body")
    if not isinstance(body, dict):
        raise bad_request(f"the body must be a JSON object, got {type(body).__name__}", "body")
    for key, value in body.items():
        if key not in allowed:
            raise bad_request(f"unknown field {key[:40]!r}; allowed: {', '.join(allowed)}", key[:40])
        if value is not None and not isinstance(value, allowed[key]):
            raise bad_request(f"{key} must be a {allowed[key].__name__}, got {type(value).__name__}", key)
    return body


def valve_request() -> tuple[str, str | None, str | None]:
    """The body of a valve command, checked: (state, reason, command_id). The fog's API and
    the cloud's take the same body."""
    body = json_object({"state": str, "reason": str, "command_id": str})
    state = body.get("state")
    if state is None:
        raise bad_request("state is required: \"open\" or \"closed\"", "state")
    if state not in VALVE_STATES:
        raise bad_request(f"state must be \"open\" or \"closed\", got {state[:40]!r}", "state")
    reason = body.get("reason")
    if reason is not None and len(reason) > MAX_REASON:
        raise bad_request(f"reason must be at most {MAX_REASON} characters", "reason")
    command_id = body.get("command_id")
    if command_id is not None and not COMMAND_ID_RE.fullmatch(command_id):
        raise bad_request("command_id must be 1-64 of A-Z a-z 0-9 _ . : -", "command_id")
    if command_id is not None and command_id.startswith(LOCAL_PREFIX):
        raise bad_request(f"command_id must not start with {LOCAL_PREFIX!r}: meters use it for the changes "
                          "they make on their own", "command_id")
    return state, reason, command_id


def policy_request() -> PolicySettings:
    """The body of PUT /api/v1/policy, checked (docs/operate.md "Policies"); the fog's API and the
    cloud's take the same body. Every problem is in the message, the first one's field in `field`."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object of policy settings (docs/operate.md 'Policies'), sent with "
                          "Content-Type: application/json", "body")
    parsed = parse_settings(body)
    if isinstance(parsed, list):
        raise bad_request("; ".join(parsed), parsed[0].split(":", 1)[0].split(".", 1)[0])
    return parsed
