"""Consumption policies (policy.py): the settings in force, the latest evaluation (who is
over a rule and what happened to them: the dry-run list), and the record of automatic blocks."""

from __future__ import annotations

import json

from flask import Blueprint, jsonify, request
from sqlalchemy import select

from ..protocol import METER_ID_RE
from ..store.schema import meters, policy_blocks
from . import ctx, db
from .errors import bad_request
from .params import arg_enum, arg_int, policy_request

bp = Blueprint("policy", __name__)

MAX_LISTED = 10_000


@bp.get("/policy")
def get_policy():
    """The policy settings in force, where they came from, and the latest evaluation (the dry-run list).
    ---
    get:
      parameters:
      - {name: limit, in: query, description: how many of the meters over a rule to list, schema: {type: integer, minimum: 0, maximum: !const MAX_LISTED, default: 100}}
      responses:
        200: PolicyState
        400: BadRequest
    """
    limit = arg_int("limit", 100, 0, MAX_LISTED)
    enforcer = ctx().services.policy()
    body = enforcer.describe_settings()
    last = enforcer.last
    if last is None:
        body["evaluation"] = None
    else:
        body["evaluation"] = {**last, "meters": last["meters"][:limit], "meters_total": len(last["meters"])}
    return jsonify(body)


@bp.put("/policy")
def put_policy():
    """Replace the policy settings (source api); evaluated at once.
    ---
    put:
      requestBody:
        required: true
        content: {application/json: {schema: PolicySettings}}
      responses:
        200: PolicyState
        400: BadRequest
    """
    return jsonify(ctx().services.policy().replace(policy_request()))


@bp.get("/policy/blocks")
def list_blocks():
    """Automatic blocks, newest first; ?meter= one meter's, ?active=true|false.
    ---
    get:
      parameters:
      - {name: active, in: query, description: "true: blocks in force; false: ended ones", schema: {type: string, enum: ["true", "false"]}}
      - {name: meter, in: query, description: one meter's blocks, schema: {type: string, pattern: !const METER_ID_RE}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: !const MAX_LISTED, default: 100}}
      - {name: cursor, in: query, description: the `next` of the previous page, schema: {type: string}}
      responses:
        200: PolicyBlockPage
        400: BadRequest
    """
    limit = arg_int("limit", 100, 1, MAX_LISTED)
    before = arg_int("cursor", 2**62, 1, 2**62)
    active = arg_enum("active", ("true", "false"))
    b = policy_blocks.c
    q = (select(policy_blocks, meters.c.meter).join(meters, meters.c.pk == b.meter_pk)
         .where(b.id < before).order_by(b.id.desc()).limit(limit + 1))
    meter = request.args.get("meter")
    if meter:
        if not METER_ID_RE.fullmatch(meter):
            raise bad_request(f"meter must be a meter id (1-32 of a-z 0-9 _ -), got {meter[:40]!r}", "meter")
        q = q.where(meters.c.meter == meter)
    if active is not None:
        q = q.where(b.released_ms.is_(None) if active == "true" else b.released_ms.is_not(None))
    rows = db().execute(q).mappings().all()
    items = [_block(r) for r in rows[:limit]]
    return jsonify({"items": items, "next": str(rows[limit - 1]["id"]) if len(rows) > limit else None})


def _block(r) -> dict:
    mean = None
    if r["mean_meters"] is not None:
        mean = {"source": r["mean_source"], "sum_ml": r["mean_sum_ml"], "meters": r["mean_meters"],
                "factor": float(r["mean_factor"])}
    return {
        "meter": r["meter"], "period": {"kind": r["period"], "key": r["period_key"]}, "rule": r["rule"],
        "rules": [{"rule": rule, "threshold_ml": t} for rule, t in json.loads(r["rules"])],
        "ml": r["ml"], "litres": r["ml"] / 1000, "threshold_ml": r["threshold_ml"], "mean": mean,
        "command_id": r["command_id"], "created_ms": r["created_ms"], "active": r["released_ms"] is None,
        "released_ms": r["released_ms"], "released_by": r["released_by"],
        "release_command_id": r["release_command_id"],
    }
