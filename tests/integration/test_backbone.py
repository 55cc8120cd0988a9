"""The backbone end to end: 200 emulated meters (the real firmware) -> a real Mosquitto
-> a real gateway process -> its HTTP API. Litres must equal the emulator's ground
truth exactly, with duplicate deliveries and a meter reboot during the run; the
ranking must equal a brute-force ranking."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from emulator import Fleet
from emulator.fleet import meter_ids

pytestmark = pytest.mark.integration

HOUR = 3600
SPEED = 360.0  # a simulated hour in 10 real seconds


def expected_consumption(fleet: Fleet, ids) -> tuple[dict, dict]:
    """Brute force from what every meter actually read and sent: a reading's
    consumption is its register minus the previous reading's, in the reading's own UTC
    day and month (the gateway's documented rule)."""
    today, month = {}, {}
    now = datetime.now(timezone.utc)
    for mid in ids:
        ordered, seen = [], set()
        for r in fleet.meter(mid).sent:  # a meter sends in (boot, seq) order; resends come later
            if (r["boot"], r["seq"]) not in seen:
                seen.add((r["boot"], r["seq"]))
                ordered.append(r)
        prev = None
        for r in ordered:  # a meter is ranked in a period once one of its readings falls in it
            seg = 0 if prev is None or r["ml"] < prev["ml"] else r["ml"] - prev["ml"]
            t = datetime.fromtimestamp(r["ts"], timezone.utc)
            if t.date() == now.date():
                today[mid] = today.get(mid, 0) + seg
            if (t.year, t.month) == (now.year, now.month):
                month[mid] = month.get(mid, 0) + seg
            prev = r
    return today, month


def brute_force_top(consumption: dict, n: int) -> list[tuple[str, float]]:
    ranked = sorted(consumption.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(m, ml / 1000) for m, ml in ranked[:n]]


def test_an_hour_of_200_meters_is_stored_exactly_and_ranked_exactly(gateway_factory, broker, tmp_path):
    ids = meter_ids(200)
    gw = gateway_factory(meters=ids).start()
    start = int(time.time()) - HOUR - 120
    fleet = Fleet(broker.host, broker.port, ids, seed=11, speed=SPEED, start_epoch=start, duplicate_prob=0.05,
                  fs_root=tmp_path / "flash")
    fleet.start()
    try:
        rebooted = "m0042"
        fleet.wait_until(start + HOUR / 2, timeout=60)
        first_boot = fleet.meter(rebooted).boot
        fleet.meter(rebooted).reboot()
        fleet.wait_until(start + HOUR, timeout=60)
        fleet.quiesce(timeout=60, freeze=True)
        truth = fleet.ground_truth()
        stats = gw.get("/health")["ingest"]

        # every meter's register equals the emulator's ground truth, to the millilitre and pulse
        mismatches = []
        for mid in ids:
            m = gw.get(f"/meters/{mid}")
            if (m["register"]["pulses"], round(m["register"]["litres"] * 1000)) != (truth[mid]["pulses"],
                                                                                   truth[mid]["ml"]):
                mismatches.append((mid, m["register"], truth[mid]))
            sent = {(r["boot"], r["seq"]) for r in fleet.meter(mid).sent}
            assert m["readings"] == len(sent), mid  # none lost, none stored twice
        assert mismatches == []
        assert sum(t["ml"] for t in truth.values()) > 200 * 1000  # water did flow
        assert fleet.meter(rebooted).boot != first_boot
        assert gw.get(f"/meters/{rebooted}")["register"]["boot"] == fleet.meter(rebooted).boot
        assert stats["duplicates"] > 0, stats  # duplicates really were delivered...
        assert stats["rejected"] == 0, gw.get("/ingest/stats")  # ...and none was mistaken for bad input

        # the ranking equals the brute-force ranking for several N and both periods
        today, month = expected_consumption(fleet, ids)
        for period, consumption in (("today", today), ("month", month)):
            for n in (1, 10, 57, 200):
                got = gw.get(f"/ranking?n={n}&period={period}")["items"]
                assert [(i["meter"], i["litres"]) for i in got] == brute_force_top(consumption, n), (period, n)
    finally:
        fleet.stop()


def test_a_gateway_killed_mid_stream_loses_and_doubles_nothing(gateway_factory, broker, tmp_path):
    """kill -9 while batches are in flight: what was not committed was not PUBACKed, so the
    broker delivers it again, and the meters still hold what was not acknowledged."""
    ids = meter_ids(50)
    gw = gateway_factory(meters=ids, batch_max_delay_ms=200).start()
    start = int(time.time()) - HOUR - 120
    fleet = Fleet(broker.host, broker.port, ids, seed=5, speed=SPEED, start_epoch=start, fs_root=tmp_path / "f")
    fleet.start()
    try:
        fleet.wait_until(start + HOUR / 3, timeout=60)
        gw.proc.kill()
        gw.proc.wait()
        gw.stop()
        fleet.wait_until(start + HOUR / 2, timeout=60)  # meters keep reading while it is down
        gw.start()
        fleet.wait_until(start + HOUR, timeout=60)
        fleet.quiesce(timeout=60, freeze=True)
        truth = fleet.ground_truth()
        for mid in ids:
            m = gw.get(f"/meters/{mid}")
            assert (m["register"]["pulses"], round(m["register"]["litres"] * 1000)) == \
                   (truth[mid]["pulses"], truth[mid]["ml"]), mid
            assert m["readings"] == len({(r["boot"], r["seq"]) for r in fleet.meter(mid).sent}), mid
        today, month = expected_consumption(fleet, ids)
        got = gw.get("/ranking?n=50&period=month")["items"]
        assert [(i["meter"], i["litres"]) for i in got] == brute_force_top(month, 50)
    finally:
        fleet.stop()
