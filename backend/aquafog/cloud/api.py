"""The cloud's HTTP API under /api/v1: city-wide ranking and mean, the fogs."""

from __future__ import annotations

import time

from flask import Flask, jsonify

from ..api import errors
from ..api.errors import ApiError, bad_request, not_found
from ..api.params import arg_enum, arg_int, valve_request
from ..config import CloudConfig
from ..federation import MAX_K, period_key
from ..periods import Calendar, day_key
from ..protocol import COMMAND_ID_RE, METER_ID_RE
from . import RoutingError

PERIODS = {"today": "day", "month": "month"}


def _litres(ml: int) -> float:
    return ml / 1000


def create_cloud_app(cfg: CloudConfig, cloud) -> Flask:
    app = Flask("aquafog.cloud")
    errors.register(app)
    calendar = Calendar(cfg.timezone)

    def current(period: str) -> tuple[str, str]:
        kind = PERIODS[period]
        return kind, period_key(kind, day_key(calendar.today(time.time())))

    @app.get("/api/v1/health")
    def health():
        h = cloud.health()
        return jsonify(h), 200 if h["status"] == "ok" else 503

    @app.get("/api/v1/city/ranking")
    def city_ranking():
        period = arg_enum("period", tuple(PERIODS), "today")
        n = arg_int("n", 10, 1, MAX_K)
        kind, key = current(period)
        top, limit = cloud.view.top(kind, key)
        if n > limit:
            raise bad_request(f"n must be at most {limit}: the smallest top-K list a fog sends (summary_top_k); "
                              "a longer city ranking would not be exact", "n")
        regions = [p.region for p in cloud.view.partials(kind, key)]
        return jsonify({
            "period": {"kind": period, "key": key, "timezone": cfg.timezone},
            "n": n, "exact_up_to": limit,
            "regions": regions,
            "missing_regions": sorted(set(cloud.view.regions) - set(regions)),
            "items": [{"rank": i + 1, "meter": m, "region": r, "litres": _litres(ml)}
                      for i, (m, ml, r) in enumerate(top[:n])],
        })

    @app.get("/api/v1/city/mean")
    def city_mean():
        period = arg_enum("period", tuple(PERIODS), "today")
        kind, key = current(period)
        total, count, parts = cloud.view.mean(kind, key)
        return jsonify({
            "period": {"kind": period, "key": key, "timezone": cfg.timezone},
            "meters": count, "sum_ml": total, "litres": _litres(total), "mean_litres": round(total / count / 1000, 3) if count else None,
            "regions": [{"region": p.region, "meters": p.meters, "sum_ml": p.sum_ml, "litres": _litres(p.sum_ml),
                         "mean_litres": round(p.sum_ml / p.meters / 1000, 3) if p.meters else None,
                         "as_of_ms": p.ts_ms} for p in parts],
            "missing_regions": sorted(set(cloud.view.regions) - {p.region for p in parts}),
        })

    @app.get("/api/v1/fogs")
    def fogs():
        return jsonify({"items": [{"region": r, "last_partial_ms": ts} for r, ts in sorted(cloud.view.regions.items())]})

    @app.get("/api/v1/meters/<meter_id>")
    def meter(meter_id: str):
        region = cloud.directory.get(meter_id) if METER_ID_RE.fullmatch(meter_id) else None
        if region is None:
            raise not_found(f"meter {meter_id[:40]!r} is in no fog's directory")
        return jsonify({"meter": meter_id, "region": region})

    @app.post("/api/v1/meters/<meter_id>/valve")
    def valve(meter_id: str):
        state, reason, cid = valve_request()
        if not METER_ID_RE.fullmatch(meter_id):
            raise not_found(f"meter {meter_id[:40]!r} is in no fog's directory")
        try:
            row, created = cloud.route_valve(meter_id, state, reason, cid)
        except RoutingError as e:
            raise ApiError(e.status, e.code, e.message, e.field) from None
        return jsonify({"command": _command(row)}), 202 if created else 200

    @app.get("/api/v1/commands/<command_id>")
    def command(command_id: str):
        row = cloud.command(command_id) if COMMAND_ID_RE.fullmatch(command_id) else None
        if row is None:
            raise not_found(f"no command {command_id[:64]!r} was routed by this cloud")
        return jsonify({"command": _command(row)})

    return app


def _command(r: dict) -> dict:
    return {"id": r["id"], "meter": r["meter"], "region": r["region"], "state": r["state"], "reason": r["reason"],
            "status": r["status"], "error": r["error"], "created_ms": r["created_ms"], "updated_ms": r["updated_ms"],
            "expires_ms": r["expires_ms"]}
