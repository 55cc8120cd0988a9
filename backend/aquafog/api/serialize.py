"""The JSON shapes of the API. Volumes are litres with 3 decimals (exact to the ml)."""

from __future__ import annotations

from datetime import datetime, timezone


def iso(ts_s: float | None) -> str | None:
    if ts_s is None:
        return None
    return datetime.fromtimestamp(ts_s, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def litres(ml: int | None) -> float | None:
    return None if ml is None else ml / 1000


def meter_summary(m) -> dict:
    return {
        "meter": m["meter"],
        "label": m["label"],
        "online": bool(m["online"]) if m["online"] is not None else None,
        "last_seen_at": iso_ms(m["last_seen_ms"]),
        "litres": litres(m["ml"]),
        "flow_lpm": litres(m["flow_mlpm"]),
        "valve": {"desired": m["valve_desired"], "reported": m["valve_reported"]},
    }


def health(h) -> dict | None:
    """The meter's latest tele/health report, as it sent it, and when it was received."""
    if h is None:
        return None
    return {
        "boot": h["boot"], "fw": h["fw"], "uptime_s": h["uptime_s"], "reset": h["reset"], "rssi": h["rssi"],
        "heap_free": h["heap_free"], "dropped": h["dropped"], "buffer": h["buffer"], "clock": h["clock"],
        "alarms": h["alarms"].split(",") if h["alarms"] else [], "received": iso_ms(h["received_ms"]),
    }


def meter_detail(m, today_ml: int, month_ml: int, pending: str | None, health_row=None) -> dict:
    d = meter_summary(m)
    d.update({
        "status_changed_at": iso_ms(m["status_ms"]),
        "fw": m["fw"],
        "register": {
            "litres": litres(m["ml"]), "pulses": m["pulses"], "boot": m["boot"], "seq": m["seq"],
            "at": iso(m["ts"]),
        },
        "consumption": {"today_litres": litres(today_ml), "month_litres": litres(month_ml),
                        "total_litres": litres(m["total_ml"])},
        "readings": m["readings"],
        "registered_at": iso_ms(m["created_ms"]),
        "health": health(health_row),
    })
    d["valve"]["pending_command"] = pending
    return d


def command(c) -> dict:
    return {
        "id": c["id"],
        "meter": c["meter"],
        "kind": c["kind"],
        "state": c["state"],
        "reason": c["reason"],
        "origin": c["origin"],
        "status": c["status"],
        "error": c["error"],
        "attempts": c["attempts"],
        "created_at": iso_ms(c["created_ms"]),
        "sent_at": iso_ms(c["sent_ms"]),
        "done_at": iso_ms(c["done_ms"]),
        "expires_at": iso_ms(c["expires_ms"]),
    }
