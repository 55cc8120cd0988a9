"""Server-sent events for the dashboard (text/event-stream), fed by the writer through
the live hub (gateway/live.py):

    GET /api/v1/meters/<id>/live          reading, command, status, alert events of one meter
    GET /api/v1/ranking/live?n=&period=   the top n, whenever it changes (at most every RANKING_EVERY_S)

Each stream holds one server thread while it is open; at most live_max_clients streams
at once (503 beyond it). A quiet stream sends a comment every HEARTBEAT_S: the write to a
closed connection fails, so a closed tab frees its slot within a second or two.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request

from ..gateway.live import LiveFull, LiveHub, Subscription, sse_frame
from ..periods import day_key, month_key
from ..store import queries
from . import ctx, serialize
from .errors import ApiError
from .meters import _meter_or_404
from .params import arg_enum, arg_int
from .ranking import MAX_N

bp = Blueprint("live", __name__)

HEARTBEAT_S = 1.0        # also how a stream learns its client left: that write fails
POLL_S = 1.0
RETRY_MS = 2000          # how long a browser's EventSource waits before reconnecting
RANKING_EVERY_S = 1.0    # a live ranking sends at most one event per interval
RETRY_AFTER_S = 10
PERIODS = ("today", "month")


def _hub() -> LiveHub:
    hub = ctx().services.live()
    if hub is None or hub.max_clients == 0:
        raise ApiError(404, "not_found", "live events are turned off at this gateway (live_max_clients = 0)")
    return hub


def _full(exc: LiveFull) -> Response:
    resp = jsonify({"error": {"code": "too_many_live_clients", "message": f"{exc}; close another live view, "
                              f"retry later, or raise live_max_clients", "field": None}})
    resp.status_code = 503
    resp.headers["Retry-After"] = str(RETRY_AFTER_S)
    return resp


def _stream(sub: Subscription, body) -> Response:
    resp = Response(body, mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"  # a reverse proxy must not hold events back
    resp.call_on_close(sub.close)              # frees the slot however the response ends
    return resp


def _gone():
    """() -> True once the client closed the connection (waitress; False elsewhere)."""
    return request.environ.get("waitress.client_disconnected") or (lambda: False)


@bp.get("/meters/<meter_id>/live")
def meter_live(meter_id: str):
    """A meter's live events: readings, command ledger changes, online/offline (server-sent events).
    Events: `reading` (on arrival, before the commit; a late one once stored), `command` (a ledger
    change, as GET /commands/{command_id}), `status` (birth or last will), `alert` (an alert of the
    meter raised, cleared or acknowledged, as GET /alerts lists it plus `change`), `missed` (events were
    dropped for this client, or a reconnect came too late to replay them: refetch). Every event but
    `missed` has an id; send the last one back as Last-Event-ID to get what was missed. A comment
    every second keeps the connection alive. docs/http-api.md "Live events".
    ---
    get:
      parameters:
      - meter_id
      - {name: Last-Event-ID, in: header, description: "the id of the last event seen (an EventSource sends it)", schema: {type: string}}
      - {name: last_event_id, in: query, description: "the same, for a client that cannot set the header", schema: {type: string}}
      responses:
        200: EventStream
        404: NotFound
        503: TooManyRequests
    """
    hub = _hub()
    meter = _meter_or_404(meter_id)["meter"]
    last_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    try:
        sub = hub.subscribe(meter, last_id)
    except LiveFull as exc:
        return _full(exc)
    gone = _gone()

    def body():
        # the first bytes send the headers at once (waitress writes nothing before the body starts)
        yield f"retry: {RETRY_MS}\n\n".encode()
        quiet_since = time.monotonic()
        while True:
            frames = sub.get(POLL_S)
            if frames is None:
                return  # the gateway stops
            now = time.monotonic()
            if frames:
                yield b"".join(frames)
                quiet_since = now
            elif gone():
                return
            elif now - quiet_since >= HEARTBEAT_S:
                yield b": keep-alive\n\n"
                quiet_since = now
    return _stream(sub, body())


@bp.get("/ranking/live")
def ranking_live():
    """The top n meters by consumption, live (server-sent events): a `ranking` event at once, then
    whenever the top n changes, at most once a second; the data is GET /ranking's answer.
    ---
    get:
      parameters:
      - {name: n, in: query, schema: {type: integer, minimum: 1, maximum: !const MAX_N, default: 10}}
      - {name: period, in: query, schema: {type: string, enum: !const PERIODS, default: today}}
      responses:
        200: EventStream
        400: BadRequest
        503: TooManyRequests
    """
    n = arg_int("n", 10, 1, MAX_N)
    period = arg_enum("period", PERIODS, "today")
    hub = _hub()
    c = ctx()
    engine, cal = c.engine, c.calendar
    try:
        sub = hub.subscribe_ranking()
    except LiveFull as exc:
        return _full(exc)
    gone = _gone()

    def top() -> dict:
        today = cal.today(time.time())

        def compute() -> dict:
            with engine.connect() as conn:
                if period == "today":
                    lo, rows = today, queries.ranking_day(conn, day_key(today), n)
                else:
                    lo, rows = today.replace(day=1), queries.ranking_month(conn, month_key(today), n)
            return {"period": {"kind": period, "from": lo.isoformat(), "to": today.isoformat(),
                               "timezone": cal.tz_name}, "n": n,
                    "items": [{"rank": i + 1, "meter": r[0], "litres": serialize.litres(r[1])}
                              for i, r in enumerate(rows)]}
        return hub.memo((period, n, today), compute)

    def body():
        yield f"retry: {RETRY_MS}\n\n".encode()
        sent = None
        sent_at = quiet_since = float("-inf")
        due = True  # the first ranking goes out at once
        while True:
            now = time.monotonic()
            if due and now - sent_at >= RANKING_EVERY_S:
                due = False
                ranking = top()
                if ranking != sent:
                    sent, sent_at = ranking, now
                    yield sse_frame("ranking", ranking)
                    quiet_since = now
                    continue
            wait = POLL_S if not due else max(0.0, min(POLL_S, sent_at + RANKING_EVERY_S - now))
            frames = sub.get(wait)
            if frames is None:
                return
            if sub.changed():
                due = True
            now = time.monotonic()
            if gone():
                return
            if not due and now - quiet_since >= HEARTBEAT_S:
                yield b": keep-alive\n\n"
                quiet_since = now
            if sent is not None and sent["period"]["to"] != cal.today(time.time()).isoformat():
                due = True  # a new day (or month): the ranking starts over
    return _stream(sub, body())
