"""Meters: list, detail, readings, commands, and the valve."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify, request, url_for

from ..protocol import ALARMS, METER_ID_RE, VALVE_STATES
from ..store import queries
from . import ctx, db, serialize
from .errors import bad_request, not_found
from .params import arg_enum, arg_int, arg_time, valve_request

bp = Blueprint("meters", __name__)

MAX_PAGE = 1000


def _meter_or_404(meter_id: str):
    m = queries.get_meter(db(), meter_id) if METER_ID_RE.fullmatch(meter_id) else None
    if m is None:
        raise not_found(f"meter {meter_id[:40]!r} is not registered at this gateway; "
                        "list meters with GET /api/v1/meters")
    return m


@bp.get("/meters")
def list_meters():
    """Registered meters, by id, a page at a time.
    ---
    get:
      parameters:
      - {name: status, in: query, schema: {type: string, enum: !const queries.METER_STATUSES}}
      - {name: valve, in: query, description: the reported valve state, schema: {type: string, enum: !const VALVE_STATES}}
      - name: alarm
        in: query
        description: meters whose latest health report lists this alarm
        schema: {type: string, enum: !const ALARMS}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: !const MAX_PAGE, default: 100}}
      - {name: cursor, in: query, description: the `next` of the previous page, schema: {type: string}}
      responses:
        200: MeterPage
        400: BadRequest
    """
    status = arg_enum("status", queries.METER_STATUSES)
    valve = arg_enum("valve", VALVE_STATES)
    alarm = arg_enum("alarm", ALARMS)
    limit = arg_int("limit", 100, 1, MAX_PAGE)
    cursor = request.args.get("cursor") or None
    if cursor is not None and not METER_ID_RE.fullmatch(cursor):
        raise bad_request("cursor must be the 'next' value of a previous page", "cursor")
    rows = queries.list_meters(db(), status, valve, cursor, limit + 1, alarm)
    items = [serialize.meter_summary(r) for r in rows[:limit]]
    return jsonify({"items": items, "next": items[-1]["meter"] if len(rows) > limit else None})


@bp.get("/meters/<meter_id>")
def get_meter(meter_id: str):
    """A meter: register, flow, valve, consumption today, this month and in total, latest health.
    ---
    get:
      parameters: [meter_id]
      responses:
        200: MeterDetail
        404: NotFound
    """
    m = _meter_or_404(meter_id)
    day, month = ctx().calendar.keys(int(time.time()))
    today_ml, month_ml = queries.consumption(db(), m["meter"], day, month)
    pending = queries.pending_command(db(), m["pk"])
    health = queries.meter_health_of(db(), m["pk"])
    return jsonify(serialize.meter_detail(m, today_ml, month_ml, pending, health))


@bp.get("/meters/<meter_id>/readings")
def get_readings(meter_id: str):
    """A meter's stored readings in [from, to), oldest first, a page at a time.
    ---
    get:
      parameters:
      - meter_id
      - name: from
        in: query
        description: Unix seconds or ISO 8601 (UTC without an offset); default 24 h before `to`
        schema: {type: string, examples: ["2026-11-24T08:00:00Z", "1795507200"]}
      - {name: to, in: query, description: Unix seconds or ISO 8601; default now, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: !const MAX_PAGE, default: 100}}
      - {name: cursor, in: query, description: the `next` of the previous page, schema: {type: string}}
      responses:
        200: ReadingPage
        400: BadRequest
        404: NotFound
    """
    m = _meter_or_404(meter_id)
    now = int(time.time())
    t_to = arg_time("to", now + 1)
    t_from = arg_time("from", t_to - 86400)
    if t_from >= t_to:
        raise bad_request("from must be before to", "from")
    limit = arg_int("limit", 100, 1, MAX_PAGE)
    after = None
    cursor = request.args.get("cursor")
    if cursor:
        try:
            ts, idx, seq = (int(x) for x in cursor.split(".", 2))
            after = (ts, idx, seq)
        except ValueError:
            raise bad_request("cursor must be the 'next' value of a previous page", "cursor") from None
    rows = queries.readings_page(db(), m["pk"], t_from, t_to, after, limit + 1)
    boots = queries.boot_ids(db(), m["pk"])
    items = [{
        "boot": boots.get(r.boot_idx), "seq": r.seq, "ts": serialize.iso(r.ts), "pulses": r.pulses,
        "litres": serialize.litres(r.ml), "flow_lpm": serialize.litres(r.flow_mlpm), "valve": r.valve,
        "received_at": serialize.iso_ms(r.rx_ms),
    } for r in rows[:limit]]
    nxt = None
    if len(rows) > limit:
        last = rows[limit - 1]
        nxt = f"{last.ts}.{last.boot_idx}.{last.seq}"
    return jsonify({"meter": m["meter"], "from": serialize.iso(t_from), "to": serialize.iso(t_to),
                    "items": items, "next": nxt})


@bp.get("/meters/<meter_id>/commands")
def get_meter_commands(meter_id: str):
    """A meter's most recent valve commands, newest first.
    ---
    get:
      parameters:
      - meter_id
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 200, default: 20}}
      responses:
        200: CommandPage
        400: BadRequest
        404: NotFound
    """
    m = _meter_or_404(meter_id)
    limit = arg_int("limit", 20, 1, 200)
    return jsonify({"items": [serialize.command(c) for c in queries.meter_commands(db(), m["pk"], limit)]})


@bp.post("/meters/<meter_id>/valve")
def post_valve(meter_id: str):
    """Open or close a meter's valve: a command in the ledger, applied when the meter confirms.
    ---
    post:
      parameters: [meter_id]
      requestBody:
        required: true
        content: {application/json: {schema: ValveRequest}}
      responses:
        202:
          description: the command, queued (or sent); follow it at Location
          headers: {Location: {description: GET /api/v1/commands/<id>, schema: {type: string}}}
          content: {application/json: {schema: CommandBody}}
        200: {description: "the same command_id and body again: the command as it is", content: {application/json: {schema: CommandBody}}}
        400: BadRequest
        404: NotFound
        409: Conflict
    """
    if not METER_ID_RE.fullmatch(meter_id):
        raise not_found(f"meter {meter_id[:40]!r} is not registered at this gateway; "
                        "list meters with GET /api/v1/meters")
    state, reason, command_id = valve_request()
    row, created = ctx().services.submit_valve(meter_id, state, reason, command_id)
    c = queries.get_command(db(), row["id"])
    resp = jsonify({"command": serialize.command(c)})
    resp.status_code = 202 if created else 200
    resp.headers["Location"] = url_for("commands.get_command", command_id=row["id"])
    return resp
