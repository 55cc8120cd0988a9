"""Health and ingest statistics."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..store import queries
from . import ctx, db, serialize
from .params import arg_int

bp = Blueprint("health", __name__)

OUTCOMES = ("accepted", "duplicate", "late", "register_reset")


@bp.get("/health")
def health():
    """200 when the broker links and the store are fine, else 503 with the problems.
    ---
    get:
      responses:
        200: Health
        503: Health
    """
    h = ctx().services.health()
    return jsonify(h), 200 if h.get("status") == "ok" else 503


@bp.get("/ingest/stats")
def ingest_stats():
    """Every message the gateway took or refused since its store was created, by reason.
    ---
    get:
      parameters:
      - {name: recent, in: query, description: how many of the latest rejects to list, schema: {type: integer, minimum: 0, maximum: 1000, default: 20}}
      responses:
        200: IngestStats
        400: BadRequest
    """
    """Every message the gateway took or refused since its store was created, by reason."""
    outcomes = {k: 0 for k in OUTCOMES}
    rejected: dict[str, dict] = {}
    for r in queries.ingest_counts(db()):
        if r.reason in outcomes:
            outcomes[r.reason] += r.count
        else:
            entry = rejected.setdefault(r.reason, {"count": 0, "fields": {}})
            entry["count"] += r.count
            if r.field:
                entry["fields"][r.field] = entry["fields"].get(r.field, 0) + r.count
    limit = arg_int("recent", 20, 0, 1000)
    recent = [{
        "received_at": serialize.iso_ms(x["rx_ms"]), "topic": x["topic"], "reason": x["reason"],
        "field": x["field"], "message": x["message"], "payload": x["payload"],
    } for x in queries.recent_rejects(db(), limit)] if limit else []
    return jsonify({**outcomes, "rejected_total": sum(e["count"] for e in rejected.values()),
                    "rejected": rejected, "recent_rejects": recent})
