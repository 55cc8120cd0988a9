"""The meter's clock and pulse input in the emulator, with the real firmware against a real
Mosquitto: NTP into the RTC, the fallback on the tick counter when NTP fails, the reset
cause in health, and a bouncing reed contact counted through the interrupt path's filter.
The gateway here is the acknowledging stand-in (conftest.AckGateway)."""

from __future__ import annotations

import pytest

from emulator import meter_ids
from emulator.clock import TICKS_HALF, TICKS_PERIOD
from emulator.fleet import ReedContact

pytestmark = pytest.mark.integration

MORNING = 1741071600  # 2025-03-04 07:00 UTC: a morning peak, and the same water use on every run


def sane(sent):
    """Each reading's timestamp is the simulated time the firmware took it (whole seconds)."""
    return all(abs(s["ts"] - s["taken"]) <= 2 for s in sent)


# --- clock ----------------------------------------------------------------------------------------
def test_ntp_sets_the_clock_and_health_reports_ntp_time_and_a_power_on(make_fleet, gateway):
    fleet = make_fleet(meter_ids(4), speed=300.0, report_interval_s=60, config_overrides={"health_interval_s": 60})
    fleet.start()
    t0 = fleet.clock.start_epoch
    fleet.wait_until(t0 + 600, timeout=10)
    fleet.quiesce(timeout=10)
    for m in fleet.meters:
        health = gateway.health[m.id]
        assert len(health) >= 5
        assert {h["clock"] for h in health} == {"ntp"}  # synced before the first connect
        assert {h["reset"] for h in health} == {"power_on"}
        with m.step_lock:
            assert m.app.stats["ntp_failures"] == 0
            assert abs(m.board.epoch() - fleet.clock.now()) <= 1
        # seq 0 is taken at boot, before NTP answered (the RTC starts at 2000 on power-on),
        # and stamped when it did
        assert gateway.readings[m.id][0]["seq"] == 0 and m.sent[0]["taken"] < t0 + 10
        assert sane(m.sent) and len(m.sent) >= 9
    assert fleet.errors == []


def test_a_meter_whose_ntp_fails_runs_on_its_ticks_then_its_rtc_then_holds_readings(make_fleet, gateway):
    fleet = make_fleet(["n0001", "n0002"], speed=300.0, report_interval_s=60,
                       config_overrides={"ntp_interval_s": 60, "health_interval_s": 60})
    fleet.start()
    bad, good = fleet.meter("n0001"), fleet.meter("n0002")
    fleet.wait_until(fleet.clock.start_epoch + 300, timeout=10)

    # 1. NTP stops answering after a sync: the time runs on from the tick counter
    bad.ntp_fails = True
    failed_at = fleet.clock.now()
    fleet.wait_until(failed_at + 600, timeout=10)
    gateway.wait_for(lambda: [h for h in gateway.health["n0001"] if h["clock"] == "stale"], 10, "stale clock")
    with bad.step_lock:
        assert bad.app.stats["ntp_failures"] >= 5  # retried every ntp_interval
        assert bad.app.clock.state() == "stale"
        late = [s for s in bad.sent if s["taken"] > failed_at]
    assert len(late) >= 9 and sane(late)
    with good.step_lock:
        assert good.app.stats["ntp_failures"] == 0
    assert {h["clock"] for h in gateway.health["n0002"]} == {"ntp"}

    # 2. machine.reset(): a hard reset keeps the RTC, so the new boot has its time at once
    first = bad.boot

    def reset_once():
        bad.board.reset()

    with bad.step_lock:
        bad.app.step = reset_once
    fleet.scheduler.wake(bad)
    fleet.wait_for(lambda: len(bad.boots) == 2 and bad.online, 10, "reboot after machine.reset()")
    second = bad.boot
    assert second != first
    (h, *_) = gateway.wait_for(lambda: [h for h in gateway.health["n0001"] if h["boot"] == second], 10, "health")
    assert h["reset"] == "hard" and h["clock"] == "stale"
    fleet.wait_until(fleet.clock.now() + 180, timeout=10)
    after_reset = [s for s in bad.sent if s["boot"] == second]
    assert after_reset[0]["seq"] == 0 and len(after_reset) >= 3 and sane(after_reset)

    # 3. a power cut loses the RTC: with no NTP either, readings wait for the time
    bad.power_off()
    powered_at = fleet.clock.now()
    bad.power_on()
    third = bad.boot
    fleet.wait_until(powered_at + 300, timeout=10)
    (h, *_) = gateway.wait_for(lambda: [h for h in gateway.health["n0001"] if h["boot"] == third], 10, "health")
    assert h["reset"] == "power_on" and h["clock"] == "unset"
    with bad.step_lock:
        assert bad.board.epoch() < 1_000_000_000  # 2000-01-01 plus the uptime
        held = len(bad.app.outbox)
    assert held >= 5 and not [s for s in bad.sent if s["boot"] == third]

    # 4. NTP answers again: the held readings get their times and go out
    bad.ntp_fails = False
    fleet.wait_for(lambda: len([s for s in bad.sent if s["boot"] == third]) >= held, 10, "the held readings")
    fleet.quiesce(timeout=10)
    sent = [s for s in bad.sent if s["boot"] == third]
    assert [s["seq"] for s in sent] == list(range(len(sent)))
    assert sane(sent) and sent[0]["taken"] - powered_at < 10  # seq 0: taken at power-on
    assert all(0 < b["ts"] - a["ts"] <= 70 for a, b in zip(sent, sent[1:]))
    gateway.wait_for(lambda: gateway.health["n0001"][-1]["clock"] == "ntp", 10, "ntp clock")
    assert fleet.errors == []


# --- reed contact -------------------------------------------------------------------------------------
def test_a_bouncing_reed_contact_is_counted_once_per_pulse(make_fleet, gateway):
    # k = 1 pulse per litre (a reed household meter): a pulse every 4 s or more; the chatter
    # (2-6 pairs of edges within 4 ms) is shorter than pulse_min_gap_ms
    fleet = make_fleet(meter_ids(20), speed=300.0, report_interval_s=60, k_factor=1, start_epoch=MORNING,
                       config_overrides={"pulse_min_gap_ms": 20}, reed=ReedContact(bounces=(2, 6), bounce_ms=4.0))
    fleet.start()
    # half an hour: longer than a ticks_us period, so quiet spells of any length happen too
    fleet.wait_until(MORNING + 1800, timeout=15)
    fleet.quiesce(timeout=20)
    truth = fleet.ground_truth()
    pulses = sum(t["pulses"] for t in truth.values())
    edges = sum(m.edges_delivered for m in fleet.meters)
    assert pulses >= 50
    assert edges > 3 * pulses  # the handler really saw the chatter
    for m in fleet.meters:
        assert m.board._counter is None  # counted in the interrupt, not by the PCNT stand-in
        assert gateway.readings[m.id][-1]["pulses"] == truth[m.id]["pulses"], m.id
    assert fleet.errors == []


def _long_quiet_pulses(m, start, end):
    """Pulses of the line between start and end that come after a quiet spell whose length
    in ticks_us lands in the negative half of ticks_diff (well clear of the edges)."""
    prev, last, hits = None, 0, 0
    t = start
    while t < end:
        p = m.usage.pulses(t, m.line.ppm3)
        if p > last:
            if prev is not None:
                gap_us = int((t - prev) * 1e6) % TICKS_PERIOD
                if TICKS_HALF + 20_000_000 < gap_us < TICKS_PERIOD - 20_000_000:
                    hits += 1
            prev, last = t, p
        t += 0.5
    return hits


def test_a_reed_pulse_after_a_quiet_spell_of_over_nine_minutes_is_counted(make_fleet, gateway):
    # ticks_us wraps every 17.9 min: the filter must not take such a closure for chatter
    fleet = make_fleet(meter_ids(10), speed=300.0, report_interval_s=60, k_factor=1, start_epoch=MORNING,
                       config_overrides={"pulse_min_gap_ms": 20})
    if sum(_long_quiet_pulses(m, MORNING, MORNING + 1200) for m in fleet.meters) < 2:
        pytest.fail("the scenario has no pulse after a long quiet spell any more: pick another start")
    fleet.start()
    fleet.wait_until(MORNING + 1200, timeout=10)
    fleet.quiesce(timeout=20)
    truth = fleet.ground_truth()
    if fleet.errors:
        pytest.fail("firmware errors: %r" % fleet.errors)
    assert {m.id: gateway.readings[m.id][-1]["pulses"] for m in fleet.meters} == \
        {m.id: truth[m.id]["pulses"] for m in fleet.meters}
