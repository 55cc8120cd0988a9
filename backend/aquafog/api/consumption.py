"""A meter's consumption for the consumer portal: usage series for charts and the month's
bill from the tariff file (tariff.py; docs/operate.md "Tariffs and bills").

Series by day and month read the incrementally kept totals (consumption_daily and
consumption_monthly, by primary key). By hour they read one meter's readings through its
time index: a reading's consumption (its register minus its predecessor's, as
gateway/accounting.py counts it) falls in the hour of its own timestamp, just as it falls in
its day, so the hours of a day add up to that day's total exactly.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import date, datetime, timedelta

from flask import Blueprint, current_app, jsonify, request

from .. import tariff
from ..periods import day_key, month_key
from ..store import queries
from . import ctx, db, serialize
from .errors import ApiError, bad_request, not_found
from .meters import _meter_or_404
from .params import arg_enum

bp = Blueprint("consumption", __name__)

BY = ("hour", "day", "month")
MAX_DAYS = {"hour": 7, "day": 366}   # hours: 7 days of readings of one meter (~60k at 10 s)
MAX_MONTHS = 120
MONTH_RE = re.compile(r"(\d{4})-(\d{2})")
DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
YEARS = (1970, 9998)  # a wider date overflows the hour arithmetic


# ------------------------------------------------------------------ parameters


def _arg_day(name: str, default: date) -> date:
    raw = request.args.get(name)
    if not raw:
        return default
    try:
        d = date.fromisoformat(raw) if DAY_RE.fullmatch(raw) else None
    except ValueError:
        d = None
    if d is None or not YEARS[0] <= d.year <= YEARS[1]:
        raise bad_request(f"{name} must be a date such as 2026-11-01 (years {YEARS[0]}-{YEARS[1]}), "
                          f"got {raw[:40]!r}", name)
    return d


def _arg_month(name: str, default: date) -> date:
    """YYYY-MM as the month's first day."""
    raw = request.args.get(name)
    if not raw:
        return default
    m = MONTH_RE.fullmatch(raw)
    if not m or not 1 <= int(m[2]) <= 12 or not YEARS[0] <= int(m[1]) <= YEARS[1]:
        raise bad_request(f"{name} must be a month such as 2026-11 (years {YEARS[0]}-{YEARS[1]}), "
                          f"got {raw[:40]!r}", name)
    return date(int(m[1]), int(m[2]), 1)


def _add_months(first: date, n: int) -> date:
    k = first.year * 12 + first.month - 1 + n
    return date(k // 12, k % 12 + 1, 1)


def _months_between(lo: date, hi: date) -> int:
    return (hi.year - lo.year) * 12 + hi.month - lo.month


def _month_end(first: date) -> date:
    return _add_months(first, 1) - timedelta(days=1)


# ------------------------------------------------------------------ usage


@bp.get("/meters/<meter_id>/usage")
def usage(meter_id: str):
    """A meter's consumption series for charts: per hour, day or month, every period listed.
    Periods are the utility's (the gateway's time zone). by=hour: the hours of days from..to
    (default today; to defaults to from; 23 or 25 hours on a day the clocks change), labelled
    with their local start and offset; by=day: days from..to (default this month up to today);
    by=month: months from..to as YYYY-MM (default the 12 months up to this one).
    ---
    get:
      parameters:
      - meter_id
      - {name: by, in: query, schema: {type: string, enum: !const BY, default: day}}
      - {name: from, in: query, description: "a date (by=hour, by=day) or a month YYYY-MM (by=month)", schema: {type: string}}
      - {name: to, in: query, description: "inclusive; by=hour spans at most 7 days, by=day 366, by=month 120 months", schema: {type: string}}
      responses:
        200: Usage
        400: BadRequest
        404: NotFound
    """
    m = _meter_or_404(meter_id)
    by = arg_enum("by", BY, "day")
    cal = ctx().calendar
    today = cal.today(time.time())
    this_month = today.replace(day=1)
    if by == "month":
        hi = _arg_month("to", this_month)
        lo = _arg_month("from", _add_months(hi, -11))
        span = _months_between(lo, hi) + 1
        if span < 1:
            raise bad_request("to must not be before from", "to")
        if span > MAX_MONTHS:
            raise bad_request(f"by=month spans at most {MAX_MONTHS} months, got {span}", "to")
        kept = queries.monthly_series(db(), m["meter"], month_key(lo), month_key(hi))
        firsts = [_add_months(lo, i) for i in range(span)]
        items = [(f"{d.year:04d}-{d.month:02d}", kept.get(month_key(d), 0)) for d in firsts]
        shown = (items[0][0], items[-1][0])
    else:
        lo = _arg_day("from", today if by == "hour" else this_month)
        hi = _arg_day("to", lo if by == "hour" else max(lo, today))
        if hi < lo:
            raise bad_request("to must not be before from", "to")
        days = (hi - lo).days + 1
        if days > MAX_DAYS[by]:
            raise bad_request(f"by={by} spans at most {MAX_DAYS[by]} days, got {days}", "to")
        if by == "day":
            kept = queries.daily_series(db(), m["meter"], day_key(lo), day_key(hi))
            items = [((lo + timedelta(days=i)).isoformat(), kept.get(day_key(lo + timedelta(days=i)), 0))
                     for i in range(days)]
        else:
            items = _hours(m["pk"], lo, hi)
        shown = (lo.isoformat(), hi.isoformat())
    return jsonify({
        "meter": m["meter"], "by": by, "from": shown[0], "to": shown[1], "timezone": cal.tz_name,
        "total_litres": serialize.litres(sum(ml for _, ml in items)),
        "items": [{"period": label, "litres": serialize.litres(ml)} for label, ml in items],
    })


def _hours(meter_pk: int, lo: date, hi: date) -> list[tuple[str, int]]:
    """Each local hour of days lo..hi (23 or 25 on a day the clocks change), labelled with
    its local start time and UTC offset, and the consumption that falls in it."""
    cal = ctx().calendar
    t0, t1 = cal.day_start(lo), cal.day_start(hi + timedelta(days=1))
    ml = [0] * ((t1 - t0 + 3599) // 3600)
    for ts, reg, prev in queries.consumption_segments(db(), meter_pk, t0, t1):
        if prev is not None and reg >= prev:  # the first reading is the baseline; lower: a counter reset
            ml[(ts - t0) // 3600] += reg - prev
    return [(datetime.fromtimestamp(t0 + 3600 * i, cal.tz).isoformat(timespec="minutes"), v)
            for i, v in enumerate(ml)]


# ------------------------------------------------------------------ bill

_lock = threading.Lock()


def _tariffs() -> tariff.TariffTable:
    """The tariff table of `tariff_file`, read again when the file changes (a new version
    needs no restart); a file that no longer loads makes bills 503 with every error."""
    path = ctx().cfg.tariff_file
    if not path:
        raise not_found("billing is not configured at this gateway: set tariff_file in the gateway config to "
                        "a tariff file (docs/operate.md 'Tariffs and bills')")
    try:
        st = os.stat(path)
        stamp = (path, st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (path, None, None)
    with _lock:
        cached = current_app.extensions.get("aquafog_tariffs")
        if cached is None or cached[0] != stamp:
            try:
                cached = (stamp, tariff.load(path))
            except tariff.TariffError as exc:
                cached = (stamp, exc)
            current_app.extensions["aquafog_tariffs"] = cached
    if isinstance(cached[1], tariff.TariffError):
        raise ApiError(503, "tariff_file_invalid",
                       f"the tariff file cannot be used, so no bill: {'; '.join(cached[1].errors)}")
    return cached[1]


@bp.get("/meters/<meter_id>/bill")
def bill(meter_id: str):
    """A meter's bill for a month from the tariff file (docs/operate.md 'Tariffs and bills'): the version in force on the
    month's first day, block lines, water, sewage, total. Money is a decimal string in the currency's
    minor unit; `complete` is false for this month (the bill so far).
    ---
    get:
      parameters:
      - meter_id
      - {name: month, in: query, description: "YYYY-MM, not after this month (default this month)", schema: {type: string, pattern: "^[0-9]{4}-[0-9]{2}$"}}
      responses:
        200: Bill
        400: BadRequest
        404: NotFound
        503: ServiceUnavailable
    """
    m = _meter_or_404(meter_id)
    cal = ctx().calendar
    this_month = cal.today(time.time()).replace(day=1)
    first = _arg_month("month", this_month)
    if first > this_month:
        raise bad_request(f"month must not be after this month ({this_month:%Y-%m})", "month")
    table = _tariffs()
    version = table.in_force(first)
    label = f"{first:%Y-%m}"
    if version is None:
        raise not_found(f"no tariff of {table.utility} is in force for {label}: its first version is effective "
                        f"{table.versions[0].effective.isoformat()}")
    ml = queries.monthly_series(db(), m["meter"], month_key(first), month_key(first)).get(month_key(first), 0)
    b = tariff.compute_bill(version, ml)
    return jsonify(bill_json(m["meter"], first, first < this_month, cal.tz_name, b))


def bill_json(meter: str, first: date, complete: bool, tz: str, b: tariff.Bill) -> dict:
    t = b.tariff

    def money(x):
        return tariff.money(x, t.decimals)

    return {
        "meter": meter, "month": f"{first:%Y-%m}", "from": first.isoformat(), "to": _month_end(first).isoformat(),
        "timezone": tz, "complete": complete,
        "consumption": {"litres": serialize.litres(b.ml), "m3": tariff.m3_text(b.ml)},
        "tariff": {"utility": t.utility, "effective": t.effective.isoformat(), "name": t.name or None},
        "currency": t.currency,
        "lines": [{"block": ln.block, "from_m3": ln.from_m3, "to_m3": ln.to_m3, "minimum": ln.minimum,
                   "m3": tariff.m3_text(ln.ml),
                   "unit_price": None if ln.unit_price is None else str(ln.unit_price),
                   "amount": money(ln.amount)} for ln in b.lines],
        "water": money(b.water),
        "sewage_percent": str(t.sewage_percent),
        "sewage": money(b.sewage),
        "total": money(b.total),
    }
