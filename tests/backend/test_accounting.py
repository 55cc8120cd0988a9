"""Exactly-once litres: the accounting rules against a real SQLite file (unit, no broker)."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from aquafog.gateway.accounting import Accounting
from aquafog.periods import Calendar
from aquafog.protocol import Reading, Reject
from aquafog.store.engine import open_engine
from aquafog.store.registry import add_meters
from aquafog.store.schema import consumption_daily, consumption_monthly, meters, readings

DAY = 86400
T0 = 1763942400  # 2025-11-24 00:00 UTC


class Store:
    def __init__(self, path, tz="UTC"):
        self.engine = open_engine(path)
        add_meters(self.engine, ["m1"])
        self.acc = Accounting(Calendar(tz), self.engine.dialect)
        self.rejects: list[Reject] = []

    def feed(self, batch: list[Reading]) -> None:
        with self.engine.begin() as conn:
            self.acc.load(conn, ["m1"])
            b = self.acc.begin_batch()
            st_ = self.acc.states["m1"]
            for r in batch:
                rej = b.reading(conn, st_, r, 0)
                if rej:
                    self.rejects.append(rej)
            b.write(conn)
        self.last = b

    def meter(self):
        with self.engine.connect() as conn:
            return conn.execute(select(meters).where(meters.c.meter == "m1")).mappings().one()

    def daily(self) -> dict[int, int]:
        with self.engine.connect() as conn:
            return {r.day: r.ml for r in conn.execute(select(consumption_daily)) if r.ml}

    def monthly(self) -> dict[int, int]:
        with self.engine.connect() as conn:
            return {r.month: r.ml for r in conn.execute(select(consumption_monthly)) if r.ml}

    def count(self) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(select(readings.c.seq)).all())


def rd(boot="aaaaaaaa", seq=0, ts=T0, ml=0, pulses=None) -> Reading:
    return Reading("m1", boot, seq, ts, ml if pulses is None else pulses, ml, 0, "open")


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "gw.db")
    yield s
    s.engine.dispose()


def test_first_reading_is_the_baseline_and_later_ones_count_their_difference(store):
    store.feed([rd(seq=0, ml=5000), rd(seq=1, ts=T0 + 60, ml=5250), rd(seq=2, ts=T0 + 120, ml=6000)])
    m = store.meter()
    assert (m["ml"], m["seq"], m["total_ml"], m["readings"]) == (6000, 2, 1000, 3)
    assert store.daily() == {20251124: 1000}
    assert store.monthly() == {202511: 1000}


def test_a_duplicate_is_acknowledged_but_not_stored_or_counted_twice(store):
    store.feed([rd(seq=0), rd(seq=1, ml=100)])
    store.feed([rd(seq=1, ml=100), rd(seq=0)])
    assert store.last.duplicates == 2 and store.last.accepted == 0
    assert "m1" in {s.meter for s in store.last.acked.values()}  # re-acked so the meter frees them
    assert store.count() == 2 and store.meter()["total_ml"] == 100


def test_a_duplicate_inside_the_same_batch_is_caught(store):
    store.feed([rd(seq=0), rd(seq=1, ml=100), rd(seq=1, ml=100)])
    assert (store.last.accepted, store.last.duplicates) == (2, 1)
    assert store.count() == 2


def test_same_key_with_different_values_is_rejected(store):
    store.feed([rd(seq=0), rd(seq=1, ml=100)])
    store.feed([rd(seq=1, ml=999)])
    assert [r.reason for r in store.rejects] == ["conflicting_duplicate"]
    assert store.meter()["total_ml"] == 100


def test_register_going_backwards_within_a_boot_is_rejected_and_the_rest_keeps_flowing(store):
    store.feed([rd(seq=0, ml=500), rd(seq=1, ml=400), rd(seq=2, ml=700)])
    assert [(r.reason, r.field) for r in store.rejects] == [("register_backwards", "litres")]
    assert store.meter()["total_ml"] == 200
    store.feed([rd(seq=3, ml=800, pulses=1)])  # pulses backwards too
    assert store.rejects[-1].field == "pulses"


def test_reboot_with_a_continuing_register_loses_nothing(store):
    store.feed([rd(seq=0, ml=100), rd(seq=1, ml=300)])
    store.feed([rd(boot="bbbbbbbb", seq=0, ml=350), rd(boot="bbbbbbbb", seq=1, ml=400)])
    m = store.meter()
    assert (m["boot"], m["seq"], m["ml"], m["total_ml"]) == ("bbbbbbbb", 1, 400, 300)


def test_counter_reset_at_a_new_boot_starts_a_new_baseline(store):
    store.feed([rd(seq=0, ml=100), rd(seq=1, ml=300)])
    store.feed([rd(boot="bbbbbbbb", seq=0, ml=0), rd(boot="bbbbbbbb", seq=1, ml=40)])
    assert store.last.resets == 1
    m = store.meter()
    assert (m["ml"], m["total_ml"]) == (40, 240)


def test_a_late_reading_splits_consumption_between_days_without_changing_the_total(store):
    store.feed([rd(seq=0, ts=T0 - 600, ml=0), rd(seq=2, ts=T0 + 600, ml=1000)])
    assert store.daily() == {20251124: 1000}
    store.feed([rd(seq=1, ts=T0 - 60, ml=300)])  # arrives late; it was yesterday
    assert store.last.late == 1
    assert store.daily() == {20251123: 300, 20251124: 700}
    assert store.meter()["total_ml"] == 1000 and store.meter()["seq"] == 2


def test_a_late_reading_inconsistent_with_its_neighbours_is_rejected(store):
    store.feed([rd(seq=0, ml=0), rd(seq=2, ml=1000)])
    store.feed([rd(seq=1, ml=2000)])
    assert [r.reason for r in store.rejects] == ["register_backwards"]
    assert store.count() == 2


def test_days_follow_the_configured_time_zone(tmp_path):
    s = Store(tmp_path / "tz.db", tz="America/Sao_Paulo")  # UTC-3
    s.feed([rd(seq=0, ts=T0 + 3600, ml=0), rd(seq=1, ts=T0 + 2 * 3600, ml=10)])  # 01:00 and 02:00 UTC
    assert s.daily() == {20251123: 10}


# ---------------------------------------------------------------- property

@st.composite
def histories(draw):
    """A meter's true history (several boots, some with counter resets), then a delivery
    order with late readings and duplicates, cut into batches. The meter sends in order,
    so a boot's first reading is never overtaken by a later boot's readings."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    true = []
    ml, ts = rng.randrange(0, 10_000), T0 - DAY
    for b in range(draw(st.integers(1, 4))):
        boot = f"{b:08x}"
        if b and rng.random() < 0.3:
            ml = rng.randrange(0, 50)  # counter reset
        for seq in range(draw(st.integers(1, 25))):
            ml += rng.choice((0, 0, rng.randrange(1, 5000)))
            ts += rng.randrange(1, 4 * 3600)
            true.append(rd(boot=boot, seq=seq, ts=ts, ml=ml))
    first_of_boot = {r.boot: r for r in reversed(true)}
    delivery = []
    delayed = []
    for r in true:
        if first_of_boot[r.boot] is not r and rng.random() < 0.3:
            delayed.append(r)  # arrives later
        else:
            delivery.append(r)
        if delayed and rng.random() < 0.3:
            delivery.append(delayed.pop(rng.randrange(len(delayed))))
    delivery += delayed
    for _ in range(rng.randrange(0, 10)):  # a duplicate arrives after its original
        i = rng.randrange(len(delivery))
        delivery.insert(rng.randrange(i + 1, len(delivery) + 1), delivery[i])
    cuts = sorted(rng.sample(range(1, len(delivery)), min(len(delivery) - 1, rng.randrange(0, 6))))
    batches = [delivery[i:j] for i, j in zip([0] + cuts, cuts + [len(delivery)])]
    return true, batches


def expected(true: list[Reading]):
    cal = Calendar("UTC")
    daily, monthly, total = defaultdict(int), defaultdict(int), 0
    for prev, r in zip(true, true[1:]):
        seg = r.ml - prev.ml if r.ml >= prev.ml else 0
        d, m = cal.keys(r.ts)
        daily[d] += seg
        monthly[m] += seg
        total += seg
    return {k: v for k, v in daily.items() if v}, {k: v for k, v in monthly.items() if v}, total


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories())
def test_any_delivery_order_with_duplicates_gives_the_in_order_result(tmp_path_factory, h):
    true, batches = h
    s = Store(tmp_path_factory.mktemp("p") / "gw.db")
    try:
        for b in batches:
            s.feed(b)
        daily, monthly, total = expected(true)
        assert s.rejects == []
        assert s.count() == len(true)
        m = s.meter()
        assert (m["boot"], m["seq"], m["ml"]) == (true[-1].boot, true[-1].seq, true[-1].ml)
        assert m["total_ml"] == total
        assert s.daily() == daily
        assert s.monthly() == monthly
    finally:
        s.engine.dispose()
