"""Registering meters at a gateway (provisioning writes here too)."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.engine import Engine

from ..protocol import METER_ID_RE
from .schema import meters


def invalid_ids(ids) -> list[str]:
    return [m for m in ids if not METER_ID_RE.fullmatch(m)]


def add_meters(engine: Engine, ids: list[str], label: str | None = None) -> tuple[list[str], list[str]]:
    """Returns (added, already registered). Raises ValueError naming invalid ids."""
    bad = invalid_ids(ids)
    if bad:
        raise ValueError(f"invalid meter id(s) {', '.join(repr(b) for b in bad[:5])}: a meter id is 1-32 of "
                         "a-z 0-9 _ - starting with a letter or digit")
    now_ms = int(time.time() * 1000)
    with engine.begin() as conn:
        existing = set()
        for i in range(0, len(ids), 500):
            existing.update(conn.execute(select(meters.c.meter).where(meters.c.meter.in_(ids[i:i + 500]))).scalars())
        new = [m for m in dict.fromkeys(ids) if m not in existing]
        if new:
            conn.execute(meters.insert(), [{"meter": m, "label": label, "created_ms": now_ms, "total_ml": 0,
                                            "readings": 0} for m in new])
    return new, sorted(existing)
