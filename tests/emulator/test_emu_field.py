"""Field faults, with the real firmware in the emulator against a real Mosquitto: a power cut. The gateway here is the acknowledging stand-in
(conftest.AckGateway); the real gateway's side is tested in tests/integration."""

from __future__ import annotations

from emulator import meter_ids


def unique_in_order(readings):
    """Per boot, the first arrival of each seq: they must come 0, 1, 2 ... in order.
    Later arrivals of a seq are resends (the gateway dedupes them)."""
    seen, per_boot = set(), {}
    for r in readings:
        key = (r["boot"], r["seq"])
        if key in seen:
            continue
        seen.add(key)
        per_boot.setdefault(r["boot"], []).append(r["seq"])
    for boot, seqs in per_boot.items():
        assert seqs == list(range(len(seqs))), (boot, seqs)
    return per_boot


def test_power_cut_restores_the_register_and_loses_at_most_the_documented_bound(make_fleet, gateway):
    save_litres, save_gap_s = 1, 10
    fleet = make_fleet(meter_ids(6), speed=300.0, report_interval_s=60,
                       config_overrides={"save_litres": save_litres, "save_min_interval_s": save_gap_s})
    fleet.start()
    fleet.wait_until(fleet.clock.start_epoch + 1800, timeout=15)
    for m in fleet.meters:
        m.power_off()  # abrupt: RAM is gone, the relay drops
    for m in fleet.meters:
        m.power_on()
    fleet.wait_until(fleet.clock.now() + 1800, timeout=15)
    fleet.quiesce(timeout=30)
    truth = fleet.ground_truth()
    for m in fleet.meters:
        assert len(m.boots) == 2
        readings = gateway.readings[m.id]
        unique_in_order(m.sent)
        first_new = next(r for r in readings if r["boot"] == m.boots[1])
        last_old = max((r for r in readings if r["boot"] == m.boots[0]), key=lambda r: r["seq"])
        assert first_new["ml"] >= last_old["ml"]  # the register never goes backwards
        lost_ml = truth[m.id]["ml"] - readings[-1]["ml"]
        # firmware/README "Power loss": at most save_litres + the flow of save_min_interval_s
        # (household peaks here stay under 1 L/s)
        assert 0 <= lost_ml <= save_litres * 1000 + 1000 * save_gap_s, (m.id, lost_ml)
    assert fleet.errors == []


def test_a_thirty_minute_broker_outage_loses_nothing_and_replays_in_order(make_fleet, gateway, broker):
    fleet = make_fleet(meter_ids(6), speed=300.0, report_interval_s=60)
    fleet.start()
    fleet.wait_until(fleet.clock.start_epoch + 600, timeout=10)
    broker.stop()
    down_at = fleet.clock.now()
    fleet.wait_until(down_at + 1800, timeout=15)
    for m in fleet.meters:
        assert not m.online
        assert len(m.app.outbox.ring) >= 29  # half an hour of readings waits in flash
    broker.start()
    up_at = fleet.clock.now()
    fleet.quiesce(timeout=60)
    truth = fleet.ground_truth()
    for m in fleet.meters:
        readings = gateway.readings[m.id]
        per_boot = unique_in_order(readings)
        assert list(per_boot) == [m.boot]
        assert per_boot[m.boot] == list(range(m.app.seq))  # every reading taken arrived, in order
        during = [r for r in readings if down_at <= r["ts"] <= up_at]
        assert len({r["seq"] for r in during}) >= 29
        assert readings[-1]["ml"] == truth[m.id]["ml"]
        assert m.app.outbox.dropped == 0 and m.app.stats["connects"] == 2
    assert fleet.errors == []


def test_ring_overflow_drops_the_oldest_readings_and_reports_the_count(make_fleet, gateway):
    ring = 10
    fleet = make_fleet(["m0001"], speed=300.0, report_interval_s=60,
                       config_overrides={"ring_size": ring, "outbox_size": 4})
    fleet.start()
    m = fleet.meter("m0001")
    fleet.wait_until(fleet.clock.start_epoch + 600, timeout=10)
    fleet.quiesce(timeout=10)  # all acknowledged so far
    first_offline = m.app.seq
    m.net_down()
    fleet.wait_until(fleet.clock.now() + 1800, timeout=15)
    with m.step_lock:
        taken = m.app.seq - first_offline
        assert len(m.app.outbox) == ring and m.app.outbox.dropped == taken - ring
    assert taken >= 29
    m.net_up()
    fleet.quiesce(timeout=20)
    dropped = m.app.outbox.dropped  # a reading or so more may have been taken before the link came back
    assert dropped >= taken - ring
    readings = gateway.readings[m.id]
    unique_in_order([r for r in readings if r["seq"] < first_offline])
    got = {r["seq"] for r in readings}
    missing = set(range(m.app.seq)) - got
    assert missing == set(range(first_offline, first_offline + dropped))  # the oldest went
    later = [r["seq"] for r in readings if r["seq"] >= first_offline]
    assert later == sorted(later)  # the survivors still arrive in order
    health = gateway.wait_for(lambda: [h for h in gateway.health[m.id] if h["dropped"]], 10, "health with drops")
    assert health[-1]["dropped"] == dropped  # reported
    # registers are cumulative: a dropped reading costs resolution, not litres
    assert readings[-1]["ml"] == fleet.ground_truth()[m.id]["ml"]
    assert fleet.errors == []
