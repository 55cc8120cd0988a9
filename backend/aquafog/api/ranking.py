"""Top-N meters by consumption in a period, from the incrementally kept per-day and
per-month totals (never from the readings)."""

from __future__ import annotations

import time
from datetime import date, timedelta

from flask import Blueprint, jsonify

from ..periods import day_key, month_key
from ..store import queries
from . import ctx, db, serialize
from .errors import bad_request
from .params import arg_date, arg_enum, arg_int

bp = Blueprint("ranking", __name__)

PERIODS = ("today", "month", "custom")
MAX_N = 1000
MAX_RANGE_DAYS = 366


def split_range(lo: date, hi: date) -> tuple[list[int], list[tuple[int, int]]]:
    """Whole months in [lo, hi] (read from the monthly totals) and the loose days around them."""
    months, days = [], []
    d = lo
    while d <= hi:
        first = d.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
        last = nxt - timedelta(days=1)
        if d == first and last <= hi:
            months.append(month_key(d))
        else:
            days.append((day_key(d), day_key(min(last, hi))))
        d = nxt
    return months, days


@bp.get("/ranking")
def ranking():
    """Top n meters by consumption in a period (from the kept daily and monthly totals); ties by meter id.
    ---
    get:
      parameters:
      - {name: n, in: query, schema: {type: integer, minimum: 1, maximum: !const MAX_N, default: 10}}
      - {name: period, in: query, schema: {type: string, enum: !const PERIODS, default: today}}
      - {name: from, in: query, description: "first day, for period=custom (required then)", schema: {type: string, format: date}}
      - name: to
        in: query
        description: last day (inclusive), for period=custom (required then); at most 366 days after from (MAX_RANGE_DAYS)
        schema: {type: string, format: date}
      responses:
        200: Ranking
        400: BadRequest
    """
    n = arg_int("n", 10, 1, MAX_N)
    period = arg_enum("period", PERIODS, "today")
    cal = ctx().calendar
    today = cal.today(time.time())
    conn = db()
    if period == "today":
        lo = hi = today
        rows = queries.ranking_day(conn, day_key(today), n)
    elif period == "month":
        lo, hi = today.replace(day=1), today
        rows = queries.ranking_month(conn, month_key(today), n)
    else:
        lo, hi = arg_date("from"), arg_date("to")
        if hi < lo:
            raise bad_request("to must not be before from", "to")
        if (hi - lo).days >= MAX_RANGE_DAYS:
            raise bad_request(f"a custom period spans at most {MAX_RANGE_DAYS} days", "to")
        months, days = split_range(lo, hi)
        rows = queries.ranking_range(conn, months, days, n)
    return jsonify({
        "period": {"kind": period, "from": lo.isoformat(), "to": hi.isoformat(), "timezone": cal.tz_name},
        "n": n,
        "items": [{"rank": i + 1, "meter": r[0], "litres": serialize.litres(r[1])} for i, r in enumerate(rows)],
    })
