"""The fog's partials for the cloud (federation.py has the format and why it is exact),
computed from the incrementally kept per-day and per-month totals, never the readings.
cloudlink.py publishes them."""

from __future__ import annotations

from sqlalchemy import func, select

from ..config import GatewayConfig
from ..federation import Partial, period_key
from ..periods import Calendar
from ..store import queries
from ..store.schema import consumption_daily, consumption_monthly, meters


def compute(conn, cfg: GatewayConfig, calendar: Calendar, now: float, seq: int) -> list[Partial]:
    """Today's and this month's partials of this fog."""
    day, month = calendar.keys(int(now))
    n_meters = conn.execute(select(func.count()).select_from(meters)).scalar_one()
    out = []
    for period, table, col, key, rank in (
            ("day", consumption_daily, consumption_daily.c.day, day, queries.ranking_day),
            ("month", consumption_monthly, consumption_monthly.c.month, month, queries.ranking_month)):
        # each query sees the store as of its own start (no shared snapshot), and a period's
        # figures only grow: the top first, so the sum read after it is never smaller
        top = tuple((m, int(ml)) for m, ml in rank(conn, key, cfg.summary_top_k))
        total = conn.execute(select(func.coalesce(func.sum(table.c.ml), 0)).where(col == key)).scalar_one()
        out.append(Partial(cfg.region, period, period_key(period, day), seq, int(now * 1000), n_meters, int(total),
                           cfg.summary_top_k, top))
    return out
