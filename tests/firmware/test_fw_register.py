"""Register arithmetic: integer only, exact and monotonic for any k-factor."""

import pytest

from aquameter import config
from aquameter.register import Register


def ppm3(k):
    cfg, errors = config.validate({"meter_id": "m1", "wifi_ssid": "x", "broker_host": "h", "k_factor": k})
    assert not errors
    return cfg["pulses_per_m3"]


@pytest.mark.parametrize("k,expected_ppm3", [(450, 450_000), (1, 1000), (0.1, 100), (7.5, 7500)])
def test_k_factor_becomes_integer_pulses_per_m3(k, expected_ppm3):
    assert ppm3(k) == expected_ppm3


@pytest.mark.parametrize("k", [450, 1, 0.1])
def test_ml_is_exact_and_monotonic(k):
    p = ppm3(k)
    r = Register(p, 10_000)
    r.start(0, 0)
    last = -1
    raw = 0
    for i in range(1, 2000):
        raw += i % 7  # irregular increments
        r.sample(raw, i * 100)
        assert r.pulses == raw
        assert r.ml == raw * 1_000_000 // p  # exact: same rule as the ground truth
        assert r.ml >= last
        last = r.ml
    assert type(r.ml) is int and type(r.flow_mlpm) is int


def test_one_litre_for_each_k_factor():
    for k, pulses in ((450, 450), (1, 1), (0.1, None)):
        r = Register(ppm3(k), 10_000)
        r.start(0, 0)
        if pulses is None:  # 0.1 pulse per litre: one pulse is 10 litres
            r.sample(1, 1000)
            assert r.ml == 10_000
        else:
            r.sample(pulses, 1000)
            assert r.ml == 1000


def test_restore_continues_the_same_function_without_rounding_loss():
    p = ppm3(450)
    r = Register(p, 10_000)
    r.start(0, 0)
    r.sample(5, 1000)  # 5 pulses = 11.11 ml -> 11
    saved = r.state()
    r2 = Register(p, 10_000)
    r2.restore(saved["pulses"], saved["ml"], saved["anchor_pulses"], saved["anchor_ml"], saved["ppm3"])
    r2.start(0, 5000)  # the hardware counter starts from 0 again after boot
    r2.sample(4, 6000)
    assert r2.pulses == 9
    assert r2.ml == 9 * 1_000_000 // p == 20  # not 11 + 4 pulses (8.9 -> 8) = 19


def test_restore_with_changed_k_factor_reanchors_at_the_saved_point():
    r = Register(ppm3(1), 10_000)
    r.restore(100, 222, 0, 0, 450_000)  # saved under k=450
    assert (r.pulses, r.ml) == (100, 222)
    r.start(0, 0)
    r.sample(1, 1000)
    assert r.ml == 222 + 1000


def test_counter_going_backwards_counts_nothing():
    r = Register(1000, 10_000)
    r.start(50, 0)
    r.sample(60, 1000)
    r.sample(3, 2000)  # re-initialised counter
    r.sample(5, 3000)
    assert r.pulses == 12 and r.counter_resyncs == 1


def test_flow_in_ml_per_minute_and_drop_to_zero_after_timeout():
    r = Register(450_000, 10_000)  # k = 450
    r.start(0, 0)
    # 7.5 pulses/s = 1 litre/min: 15 pulses every 2 s
    for s in range(2, 11, 2):
        r.sample(15 * s // 2, s * 1000)
        assert r.flow_mlpm == 1000
    # pulses stop: the flow holds until flow_timeout, then drops to 0
    r.sample(75, 15_000)
    assert r.flow_mlpm > 0
    r.sample(75, 20_001)
    assert r.flow_mlpm == 0


def test_flow_is_averaged_over_sparse_samples():
    r = Register(1000, 10_000)  # k = 1: a pulse per litre
    r.start(0, 0)
    r.sample(30, 60_000)  # 30 litres in a minute
    assert r.flow_mlpm == 30_000
    r.sample(30, 120_000)  # nothing for a minute
    assert r.flow_mlpm == 0


def test_reconcile_adopts_the_larger_register_and_returns_offsets():
    p = ppm3(450)
    r = Register(p, 10_000)
    r.restore(900, 2000, 900, 2000, p)
    r.start(0, 0)
    r.sample(45, 1000)  # 100 ml since boot
    assert (r.pulses, r.ml) == (945, 2100)
    dp, dml = r.reconcile(4500, 10_000)  # the gateway has more (this meter's flash was older)
    assert (dp, dml) == (3600, 8000)
    assert (r.pulses, r.ml) == (4545, 10_100)  # water since boot kept on top
    r.sample(90, 2000)
    assert (r.pulses, r.ml) == (4590, 10_200)
    # a gateway behind the meter changes nothing
    assert r.reconcile(10, 10) == (0, 0)
    assert (r.pulses, r.ml) == (4590, 10_200)


def test_reconcile_onto_the_meters_own_curve_carries_no_rounding():
    p = ppm3(450)  # 2.22 ml a pulse: most registers are a fraction of a ml past a whole one
    r = Register(p, 10_000)
    r.restore(17, 37, 0, 0, p)  # a stale state.json: the gateway persisted more since
    r.start(0, 0)
    assert r.reconcile(352, 352 * 1_000_000 // p) == (335, 745)
    assert (r.anchor_pulses, r.anchor_ml) == (0, 0)  # the same function of pulses as before
    r.sample(34, 1000)
    assert (r.pulses, r.ml) == (386, 386 * 1_000_000 // p)  # not one ml of rounding carried over


def test_reconcile_onto_another_curve_shifts_the_anchor():
    p = ppm3(450)
    r = Register(p, 10_000)
    r.restore(17, 37, 0, 0, p)
    r.start(0, 0)
    assert r.reconcile(352, 900) == (335, 863)  # not this meter's curve (another k-factor, say)
    assert (r.pulses, r.ml) == (352, 900)
    r.sample(9, 1000)
    assert r.ml == 920  # 900 + 9 pulses of 2.22 ml


def test_reconcile_field_by_field():
    r = Register(1000, 10_000)
    r.restore(100, 500_000, 100, 500_000, 1000)
    r.start(0, 0)
    assert r.reconcile(150, 1000) == (50, 0)
    assert (r.pulses, r.ml) == (150, 500_000)
