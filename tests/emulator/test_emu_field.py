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
