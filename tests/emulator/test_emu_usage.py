"""The water-use model and the water line (pure: no broker)."""

import threading

from emulator import MeterUsage, Profile, WaterLine, assign_profiles
from emulator.usage import DAY

T0 = 1_763_942_400  # a midnight UTC


def test_reproducible_from_the_seed_and_different_across_meters_and_seeds():
    a = MeterUsage("m0001", 1, Profile(3), T0)
    b = MeterUsage("m0001", 1, Profile(3), T0)
    times = [T0 + i * 977.3 for i in range(200)]
    assert [a.pulses(t, 450_000) for t in times] == [b.pulses(t, 450_000) for t in times]
    c = MeterUsage("m0002", 1, Profile(3), T0)
    d = MeterUsage("m0001", 2, Profile(3), T0)
    end = T0 + 2 * DAY
    assert len({a.pulses(end, 450_000), c.pulses(end, 450_000), d.pulses(end, 450_000)}) == 3


def test_volume_is_monotonic_continuous_and_starts_at_origin():
    u = MeterUsage("m0007", 5, Profile(4), T0 + 3600.5)
    assert u.volume_ml(T0 + 3600.5) == 0.0
    last = 0.0
    t = T0 + 3600.5
    while t < T0 + 3 * DAY:
        v = u.volume_ml(t)
        assert v >= last - 1e-6
        last = v
        t += 37.1
    # continuous across midnight
    assert abs(u.volume_ml(T0 + DAY - 1e-3) - u.volume_ml(T0 + DAY + 1e-3)) < 1.0


def test_a_household_uses_a_plausible_amount_with_morning_and_evening_peaks():
    per_day = []
    morning = night = 0.0
    for i in range(20):
        u = MeterUsage("h%d" % i, 1, Profile(2), T0)
        per_day.append(u.volume_ml(T0 + DAY) / 1000)
        morning += u.volume_ml(T0 + 9 * 3600) - u.volume_ml(T0 + 6 * 3600)
        night += u.volume_ml(T0 + 4 * 3600) - u.volume_ml(T0 + 1 * 3600)
    mean = sum(per_day) / len(per_day)
    assert 80 < mean < 600, mean  # litres per day for two persons
    assert morning > 3 * night


def test_heavy_users_use_more_and_a_leak_never_stops():
    normal = sum(MeterUsage("x%d" % i, 1, Profile(2), T0).volume_ml(T0 + DAY) for i in range(10))
    heavy = sum(MeterUsage("x%d" % i, 1, Profile(2, 4.0), T0).volume_ml(T0 + DAY) for i in range(10))
    assert heavy > 2.5 * normal
    leak = MeterUsage("x1", 1, Profile(2, 1.0, 2.0), T0)
    plain = MeterUsage("x1", 1, Profile(2), T0)
    for h in range(0, 24):
        t = T0 + h * 3600
        assert leak.volume_ml(t + 60) - leak.volume_ml(t) >= 119.9  # >= 2 ml/s, always
        assert abs((leak.volume_ml(t) - plain.volume_ml(t)) - 2.0 * h * 3600) < 1e-3


def test_profiles_one_leak_and_a_few_heavy_users():
    ids = ["m%04d" % i for i in range(1, 201)]
    p = assign_profiles(ids, 1)
    kinds = [p[i].kind for i in ids]
    assert kinds.count("leak") == 1
    assert kinds.count("heavy") == 10
    assert all(3 <= p[i].multiplier <= 5 for i in ids if p[i].kind == "heavy")
    assert assign_profiles(ids, 1) == p and assign_profiles(ids, 2) != p


def test_water_line_valve_cuts_delivery_and_power_off_is_not_counted():
    line = WaterLine(MeterUsage("m1", 1, Profile(2, 1.0, 10.0), T0), 1000)  # k=1: a pulse per litre
    # 10 ml/s of leak alone: 36 pulses an hour, plus household use
    h = 3600
    d1 = line.counter(T0 + h)
    line.set_closed(True, T0 + h)
    assert line.counter(T0 + 2 * h) == d1  # closed: nothing flows
    line.set_closed(False, T0 + 2 * h)
    assert line.counter(T0 + 3 * h) > d1
    before_off = line.counted(T0 + 3 * h)
    line.power_off(T0 + 3 * h)
    assert line.counted(T0 + 5 * h) == before_off  # an unpowered meter counts nothing
    line.power_on(T0 + 5 * h)
    assert line.counter(T0 + 5 * h) == 0  # the new boot's hardware counter starts at 0
    later = line.counted(T0 + 6 * h)
    assert later == before_off + line.counter(T0 + 6 * h)


def test_water_line_is_monotonic_under_concurrent_readers():
    line = WaterLine(MeterUsage("m1", 3, Profile(5, 4.0, 1.0), T0), 450_000)
    seen = []

    def reader(offset):
        for i in range(300):
            seen.append((threading.get_ident(), line.counter(T0 + i * 60 + offset)))

    threads = [threading.Thread(target=reader, args=(o,)) for o in (0, 7, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ident in {s[0] for s in seen}:
        values = [v for i, v in seen if i == ident]
        assert values == sorted(values)
    stop = line.last_t
    line.stop(stop)
    assert line.counter(stop + 10 * DAY) == line.counter(stop)
