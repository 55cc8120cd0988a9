"""The cloud's HTTP API under /api/v1: city-wide ranking and mean, the fogs."""

from __future__ import annotations

import threading
import time

from flask import Flask, jsonify, request

from ..api import errors
from ..api.errors import ApiError, bad_request, not_found
from ..api.params import arg_enum, arg_int, policy_request, valve_request
from ..config import CloudConfig
from ..federation import MAX_K, period_key
from ..periods import Calendar, day_key
from ..protocol import COMMAND_ID_RE, METER_ID_RE
from ..accounts import Accounts
from ..api import auth
from ..api.access import install
from ..api import consumption  # noqa: F401  (the document reads consumption.BY)
from . import RoutingError, proxy
from .store import ACCOUNTS

PERIODS = {"today": "day", "month": "month"}


def _litres(ml: int) -> float:
    return ml / 1000


def create_cloud_app(cfg: CloudConfig, cloud) -> Flask:
    app = Flask("aquafog.cloud")
    app.json.sort_keys = False
    errors.register(app)
    app.register_blueprint(auth.bp, url_prefix="/api/v1")
    install(app, Accounts(ACCOUNTS), cloud.engine, cfg.session_hours, cfg.cookie_secure)
    calendar = Calendar(cfg.timezone)

    def current(period: str) -> tuple[str, str]:
        kind = PERIODS[period]
        return kind, period_key(kind, day_key(calendar.today(time.time())))

    @app.get("/api/v1/health")
    def health():
        """200 when the cloud broker link and the store are fine, else 503 with the problems.
        ---
        get:
          responses:
            200: CloudHealth
            503: CloudHealth
        """
        h = cloud.health()
        return jsonify(h), 200 if h["status"] == "ok" else 503

    rankings: dict[tuple, bytes] = {}  # the serialized answers, until the view changes

    @app.get("/api/v1/city/ranking")
    def city_ranking():
        """The city's top n meters with their regions, merged from the fogs' partials.
        ---
        get:
          parameters:
          - {name: period, in: query, schema: {type: string, enum: !const PERIODS, default: today}}
          - name: n
            in: query
            description: exact up to the smallest top-K list a fog sends (`exact_up_to`); a larger n is refused (400)
            schema: {type: integer, minimum: 1, maximum: !const MAX_K, default: 10}
          responses:
            200: CityRanking
            400: BadRequest
        """
        period = arg_enum("period", tuple(PERIODS), "today")
        n = arg_int("n", 10, 1, MAX_K)
        kind, key = current(period)
        stamp = (period, key, n, cloud.view.version(kind, key), tuple(sorted(cloud.view.regions)))
        body = rankings.get(stamp)
        if body is None:
            top, limit = cloud.view.top(kind, key)
            if n > limit:
                raise bad_request(f"n must be at most {limit}: the smallest top-K list a fog sends (summary_top_k); "
                                  "a longer city ranking would not be exact", "n")
            regions = [p.region for p in cloud.view.partials(kind, key)]
            body = app.json.dumps({
                "period": {"kind": period, "key": key, "timezone": cfg.timezone},
                "n": n, "exact_up_to": limit,
                "regions": regions,
                "missing_regions": sorted(set(cloud.view.regions) - set(regions)),
                "items": [{"rank": i + 1, "meter": m, "region": r, "litres": _litres(ml)}
                          for i, (m, ml, r) in enumerate(top[:n])],
            }).encode()
            if len(rankings) > 256:  # old periods and versions
                rankings.clear()
            rankings[stamp] = body
        return app.response_class(body, mimetype="application/json")

    @app.get("/api/v1/city/mean")
    def city_mean():
        """The city's mean consumption, and each region's (every registered meter counts).
        ---
        get:
          parameters:
          - {name: period, in: query, schema: {type: string, enum: !const PERIODS, default: today}}
          responses:
            200: CityMean
            400: BadRequest
        """
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
        """Each region's fog: its meters, API URL, health, and when it was last heard from.
        ---
        get:
          responses:
            200: FogList
        """
        counts: dict[str, int] = {}
        for r in list(cloud.directory.values()):
            counts[r] = counts.get(r, 0) + 1
        items = []
        for r, ts in sorted(cloud.view.regions.items()):
            info, seen = cloud.fogs.get(r, (None, None))
            items.append({"region": r, "last_partial_ms": ts or None, "meters": counts.get(r, 0),
                          "api_url": info.api_url if info else None, "status": info.status if info else None,
                          "problems": list(info.problems) if info else [], "version": info.version if info else None,
                          "info_ms": info.ts_ms if info else None, "info_received_ms": seen})
        return jsonify({"items": items})

    @app.get("/api/v1/policy")
    def get_policy():
        """The city's policy settings, and each fog's mode, source and counts.
        ---
        get:
          responses:
            200: CityPolicy
        """
        p = cloud.policy
        return jsonify({
            "settings": p.settings.to_json() if p else None, "updated_ms": p.ts_ms if p else None,
            "fogs": [{"region": r, "policy": info.policy} for r, (info, _) in sorted(cloud.fogs.items())],
        })

    @app.put("/api/v1/policy")
    def put_policy():
        """Set the policy for every fog (sent retained; a fog adopts them unless its own are newer).
        ---
        put:
          requestBody:
            required: true
            content: {application/json: {schema: PolicySettings}}
          responses:
            200: CityPolicySet
            400: BadRequest
        """
        p, sent = cloud.set_policy(policy_request())
        return jsonify({"settings": p.settings.to_json(), "updated_ms": p.ts_ms, "sent": sent})

    def owning_fog(meter_id: str) -> tuple[str, str, str]:
        """(region, api_url, token) of the fog that owns this meter, or RoutingError."""
        if not METER_ID_RE.fullmatch(meter_id):
            raise RoutingError(404, "not_found", f"meter {meter_id[:40]!r} is in no fog's directory")
        region, api_url = cloud.owner(meter_id)
        token = cfg.fog_tokens.get(region)
        if token is None:
            raise RoutingError(503, "unavailable", f"meter {meter_id!r} is at fog {region!r}, and this cloud has "
                                                   f"no token for its API: set fog_tokens.{region} in the cloud "
                                                   "config to a token made with `aquafog token add` at that fog")
        return region, api_url, token

    def forwarded(meter_id: str, sub: str = ""):
        """The owning fog's answer for this meter (its status and body), with where it came from."""
        try:
            region, api_url, token = owning_fog(meter_id)
            status, body = proxy.fetch(api_url, region, f"meters/{meter_id}{sub}", request.query_string.decode(),
                                       token)
        except RoutingError as e:
            raise ApiError(e.status, e.code, e.message, e.field) from None
        if status < 400:
            body = {**body, "region": region, "served_by": api_url}
        return jsonify(body), status

    @app.get("/api/v1/meters/<meter_id>")
    def meter(meter_id: str):
        """A meter's detail, answered by the fog that owns it.
        ---
        get:
          parameters: [meter_id]
          responses:
            200: ForwardedMeterDetail
            404: NotFound
            502: BadGateway
            503: ServiceUnavailable
            504: GatewayTimeout
        """
        return forwarded(meter_id)

    @app.get("/api/v1/meters/<meter_id>/readings")
    def meter_readings(meter_id: str):
        """A meter's readings, answered by the fog that owns it (the fog's parameters pass through).
        ---
        get:
          parameters:
          - meter_id
          - {name: from, in: query, description: Unix seconds or ISO 8601; default 24 h before `to`, schema: {type: string}}
          - {name: to, in: query, description: Unix seconds or ISO 8601; default now, schema: {type: string}}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: !const aquafog.api.meters.MAX_PAGE, default: 100}}
          - {name: cursor, in: query, description: the `next` of the previous page, schema: {type: string}}
          responses:
            200: ForwardedReadingPage
            400: BadRequest
            404: NotFound
            502: BadGateway
            503: ServiceUnavailable
            504: GatewayTimeout
        """
        return forwarded(meter_id, "/readings")

    @app.get("/api/v1/meters/<meter_id>/commands")
    def meter_commands(meter_id: str):
        """A meter's recent valve commands at the fog that owns it.
        ---
        get:
          parameters:
          - meter_id
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 200, default: 20}}
          responses:
            200: ForwardedCommandPage
            400: BadRequest
            404: NotFound
            502: BadGateway
            503: ServiceUnavailable
            504: GatewayTimeout
        """
        return forwarded(meter_id, "/commands")

    live_slots = threading.BoundedSemaphore(cfg.live_max_clients) if cfg.live_max_clients else None

    @app.get("/api/v1/meters/<meter_id>/live")
    def meter_live(meter_id: str):
        """A meter's live events, relayed from the fog that owns it (server-sent events): the
        fog's stream as it is, `reading`, `command`, `status`, `alert`, `missed` (docs/http-api.md "Live
        events"); Last-Event-ID is passed on. At most live_max_clients relays at once.
        ---
        get:
          parameters:
          - meter_id
          - {name: Last-Event-ID, in: header, description: "the id of the last event seen (an EventSource sends it)", schema: {type: string}}
          responses:
            200: EventStream
            404: NotFound
            502: BadGateway
            503: TooManyRequests
            504: GatewayTimeout
        """
        if live_slots is None:
            raise ApiError(404, "not_found", "live relays are turned off at this cloud (live_max_clients = 0)")
        if not live_slots.acquire(blocking=False):
            resp = jsonify({"error": {"code": "too_many_live_clients", "message": (
                f"{cfg.live_max_clients} live views are open at this cloud; close one, retry later, or raise "
                "live_max_clients"), "field": None}})
            resp.status_code, resp.headers["Retry-After"] = 503, "10"
            return resp
        try:
            region, api_url, token = owning_fog(meter_id)
            status, upstream = proxy.open_stream(api_url, region, f"meters/{meter_id}/live", token,
                                                 request.headers.get("Last-Event-ID"))
        except RoutingError as e:
            live_slots.release()
            raise ApiError(e.status, e.code, e.message, e.field) from None
        if status != 200:
            live_slots.release()
            return jsonify(upstream), status
        gone = request.environ.get("waitress.client_disconnected") or (lambda: False)

        def relay():
            event = b""
            while not gone():
                line = upstream.readline()
                if not line:
                    return  # the fog ended it, or fell silent: the browser reconnects with Last-Event-ID
                event += line
                if line in (b"\n", b"\r\n"):  # one whole event (or comment) at a time
                    yield event
                    event = b""

        def close():
            upstream.close()
            live_slots.release()

        resp = app.response_class(relay(), mimetype="text/event-stream")
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Accel-Buffering"] = "no"
        resp.call_on_close(close)
        return resp

    @app.get("/api/v1/meters/<meter_id>/usage")
    def meter_usage(meter_id: str):
        """A meter's consumption series, from the fog that owns it (its /meters/<id>/usage).
        ---
        get:
          parameters:
          - meter_id
          - {name: by, in: query, schema: {type: string, enum: !const consumption.BY, default: day}}
          - {name: from, in: query, description: "a date (by=hour, by=day) or a month YYYY-MM (by=month)", schema: {type: string}}
          - {name: to, in: query, description: "inclusive, as at the fog", schema: {type: string}}
          responses:
            200: ForwardedUsage
            400: BadRequest
            404: NotFound
            502: BadGateway
            503: ServiceUnavailable
            504: GatewayTimeout
        """
        return forwarded(meter_id, "/usage")

    @app.get("/api/v1/meters/<meter_id>/bill")
    def meter_bill(meter_id: str):
        """A meter's bill for a month, from the fog that owns it (its tariff file).
        ---
        get:
          parameters:
          - meter_id
          - {name: month, in: query, description: "YYYY-MM, not after this month (default this month)", schema: {type: string, pattern: "^[0-9]{4}-[0-9]{2}$"}}
          responses:
            200: ForwardedBill
            400: BadRequest
            404: NotFound
            502: BadGateway
            503: ServiceUnavailable
            504: GatewayTimeout
        """
        return forwarded(meter_id, "/bill")

    @app.post("/api/v1/meters/<meter_id>/valve")
    def valve(meter_id: str):
        """Route a valve command to the fog that owns the meter; its ledger then reports the status.
        ---
        post:
          parameters: [meter_id]
          requestBody:
            required: true
            content: {application/json: {schema: ValveRequest}}
          responses:
            202: {description: routed to the owning fog, content: {application/json: {schema: RoutedCommandBody}}}
            200: {description: "the same command_id and body again: the command as it is", content: {application/json: {schema: RoutedCommandBody}}}
            400: BadRequest
            404: NotFound
            409: Conflict
        """
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
        """A command this cloud routed, with its status as the owning fog reports it.
        ---
        get:
          parameters: [command_id]
          responses:
            200: RoutedCommandBody
            404: NotFound
        """
        row = cloud.command(command_id) if COMMAND_ID_RE.fullmatch(command_id) else None
        if row is None:
            raise not_found(f"no command {command_id[:64]!r} was routed by this cloud")
        return jsonify({"command": _command(row)})

    from ..api import openapi
    from .schemas import CLOUD
    openapi.register(app, "AquaFog cloud", "The city: rankings and means merged from every fog's partials, "
                     "meter detail and valve commands through the owning fog, city-wide policies "
                     "(docs/design.md 'City scale').", CLOUD)
    from .. import web
    web.register(app, "cloud")  # the same dashboard, for the city
    return app


def _command(r: dict) -> dict:
    return {"id": r["id"], "meter": r["meter"], "region": r["region"], "state": r["state"], "reason": r["reason"],
            "status": r["status"], "error": r["error"], "created_ms": r["created_ms"], "updated_ms": r["updated_ms"],
            "expires_ms": r["expires_ms"]}
