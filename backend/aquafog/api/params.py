"""Query-string and body parsing that names the field at fault."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

from flask import request

from .errors import bad_request


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
