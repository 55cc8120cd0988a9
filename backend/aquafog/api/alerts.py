"""Alerts raised by the gateway (gateway/alerts.py, docs/operate.md "Alerts"): the list, newest first,
and an operator's acknowledgement. A consumer sees only the alerts of their own meters."""

from __future__ import annotations

import re

from flask import Blueprint, jsonify, request
from sqlalchemy import select

from ..gateway.alerts import KINDS, serialize
from ..protocol import METER_ID_RE
from ..store.schema import alerts
from . import ctx, db
from .access import current_user
from .errors import ApiError, bad_request, not_found
from .params import arg_enum, arg_int

bp = Blueprint("alerts", __name__)

MAX_PAGE = 1000
STATES = ("all", "open", "active", "acked")  # open: not acknowledged; active: not cleared
ALERT_ID_RE = re.compile(r"[1-9][0-9]{0,17}")


@bp.get("/alerts")
def list_alerts():
    """Alerts raised by the gateway, newest first, a page at a time (a consumer: their own meters').
    Kinds: leak, burst, valve_fault (the meter's health report lists the alarm), offline (offline
    longer than offline_alert_s), policy_block (an automatic block). `cleared_ms` is null while the
    alert is active, `acked_ms`/`acked_by` null until an operator acknowledges it. docs/operate.md "Alerts".
    ---
    get:
      parameters:
      - {name: state, in: query, description: "open: not acknowledged; active: not cleared; acked: acknowledged; all", schema: {type: string, enum: !const STATES, default: all}}
      - {name: meter, in: query, description: one meter's alerts, schema: {type: string, pattern: !const METER_ID_RE}}
      - {name: kind, in: query, schema: {type: string, enum: !const KINDS}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: !const MAX_PAGE, default: 100}}
      - {name: cursor, in: query, description: the `next` of the previous page, schema: {type: string}}
      responses:
        200: AlertPage
        400: BadRequest
    """
    state = arg_enum("state", STATES, "all")
    kind = arg_enum("kind", KINDS)
    limit = arg_int("limit", 100, 1, MAX_PAGE)
    before = arg_int("cursor", 2**62, 1, 2**62)
    meter = request.args.get("meter")
    if meter and not METER_ID_RE.fullmatch(meter):
        raise bad_request(f"meter must be a meter id (1-32 of a-z 0-9 _ -), got {meter[:40]!r}", "meter")
    a = alerts.c
    q = select(alerts).where(a.id < before).order_by(a.id.desc()).limit(limit + 1)
    user = current_user()
    if user is not None and user.role == "consumer":
        if meter and meter not in user.meters:
            raise ApiError(403, "forbidden", f"meter {meter!r} is not one of yours", "meter")
        q = q.where(a.meter.in_(sorted(user.meters)))
    if meter:
        q = q.where(a.meter == meter)
    if kind:
        q = q.where(a.kind == kind)
    if state == "open":
        q = q.where(a.acked_ms.is_(None))
    elif state == "acked":
        q = q.where(a.acked_ms.is_not(None))
    elif state == "active":
        q = q.where(a.cleared_ms.is_(None))
    rows = db().execute(q).mappings().all()
    return jsonify({"items": [serialize(r) for r in rows[:limit]],
                    "next": str(rows[limit - 1]["id"]) if len(rows) > limit else None})


@bp.post("/alerts/<alert_id>/ack")
def ack_alert(alert_id: str):
    """Acknowledge an alert (operators and admins): records when and who.
    Acknowledging it again changes nothing and answers the same record. An alert stays active
    until its cause is gone (cleared_ms); acknowledging says someone is on it.
    ---
    post:
      parameters:
      - {name: alert_id, in: path, required: true, description: the alert's id, schema: {type: string, pattern: !const ALERT_ID_RE}}
      responses:
        200: Alert
        404: NotFound
    """
    row = None
    if ALERT_ID_RE.fullmatch(alert_id):
        row = ctx().services.alerts().ack(int(alert_id), current_user().username)
    if row is None:
        raise not_found(f"no alert {alert_id[:40]!r} here: list them with GET /api/v1/alerts")
    return jsonify(row)
