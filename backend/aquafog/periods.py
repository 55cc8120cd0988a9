"""Billing periods in the utility's time zone.

A reading's consumption (its register minus the previous reading's) counts in the day
and month of the reading's own timestamp. Days are keyed YYYYMMDD and months YYYYMM
(integers, readable in the database).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def day_key(d: date) -> int:
    return d.year * 10000 + d.month * 100 + d.day


def month_key(d: date) -> int:
    return d.year * 100 + d.month


def key_to_date(day: int) -> date:
    return date(day // 10000, day // 100 % 100, day % 100)


class Calendar:
    """Maps Unix timestamps to (day, month) keys; caches the current day's bounds
    because almost every reading falls on the same day as the one before."""

    def __init__(self, tz: str = "UTC"):
        self.tz_name = tz
        self.tz = ZoneInfo(tz)
        self._lo = 1
        self._hi = 0
        self._keys = (0, 0)

    def keys(self, ts: int) -> tuple[int, int]:
        if self._lo <= ts < self._hi:
            return self._keys
        d = datetime.fromtimestamp(ts, self.tz).date()
        start = datetime.combine(d, time(0), self.tz)
        end = datetime.combine(d + timedelta(days=1), time(0), self.tz)
        self._lo, self._hi = int(start.timestamp()), int(end.timestamp())
        self._keys = (day_key(d), month_key(d))
        return self._keys

    def today(self, now: float) -> date:
        return datetime.fromtimestamp(now, self.tz).date()

    def day_start(self, d: date) -> int:
        return int(datetime.combine(d, time(0), self.tz).timestamp())
