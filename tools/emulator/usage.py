"""Household water use, reproducible from a seed: the emulator's ground truth.

Each meter has a profile (household size, a heavy-use multiplier, a leak rate). Every
simulated day gets its own seeded list of flow events (showers, toilet refills, taps,
washing machine, garden), denser in the morning and evening peaks. The cumulative
volume V(t) is piecewise linear; the sensor's pulse count is floor(V(t) * k), the
same integer for the same t on every run. Pure: no threads, no I/O, no clock.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

DAY = 86400

# kind: (duration seconds lo, hi), (flow ml/s lo, hi)
EVENT_KINDS = {
    "shower": ((300, 600), (120.0, 160.0)),
    "toilet": ((40, 70), (90.0, 120.0)),
    "tap": ((10, 120), (80.0, 130.0)),
    "washing_machine": ((180, 300), (100.0, 140.0)),
    "garden": ((600, 1800), (150.0, 250.0)),
}

# (hour from, hour to, share of the day's events)
WINDOWS = ((6, 9, 0.35), (9, 17, 0.20), (17, 23, 0.40), (23, 30, 0.05))  # 23-30 = until 06:00

# events per person per day
PER_PERSON = {"shower": 0.8, "toilet": 5.0, "tap": 9.0}
PER_HOUSEHOLD = {"washing_machine": 0.6, "garden": 0.1}


@dataclass(frozen=True)
class Profile:
    persons: int = 2
    multiplier: float = 1.0  # heavy users: 3 to 5
    leak_ml_per_s: float = 0.0  # a constant small flow (a dripping cistern)

    @property
    def kind(self) -> str:
        if self.leak_ml_per_s > 0:
            return "leak"
        return "heavy" if self.multiplier > 1 else "household"


def assign_profiles(meter_ids: list[str], seed: int) -> dict[str, Profile]:
    """Most meters are households; a few (about 5 %, at least one of 3+) heavy users; one leaks."""
    rng = random.Random("profiles:%d:%d" % (seed, len(meter_ids)))
    n = len(meter_ids)
    order = list(meter_ids)
    rng.shuffle(order)
    leaking = order[0] if n else None
    heavy = set(order[1:1 + (max(1, n // 20) if n >= 3 else 0)])
    profiles = {}
    for mid in meter_ids:
        persons = rng.randint(1, 5)
        if mid == leaking:
            profiles[mid] = Profile(persons, 1.0, leak_ml_per_s=round(rng.uniform(1.0, 3.0), 2))
        elif mid in heavy:
            profiles[mid] = Profile(persons, round(rng.uniform(3.0, 5.0), 2))
        else:
            profiles[mid] = Profile(persons)
    return profiles


class _Day:
    """One day's flow as breakpoints: volume(t) is piecewise linear in between."""

    __slots__ = ("start", "times", "cum", "rates", "total")

    def __init__(self, start: int, events: list[tuple[float, float, float]]):
        self.start = start
        changes: dict[float, float] = {}
        end_of_day = start + DAY
        for t0, dur, rate in events:
            t1 = min(t0 + dur, end_of_day)
            if t1 <= t0:
                continue
            changes[t0] = changes.get(t0, 0.0) + rate
            changes[t1] = changes.get(t1, 0.0) - rate
        times = [float(start)]
        cum = [0.0]
        rates = [0.0]
        rate = 0.0
        for t in sorted(changes):
            cum.append(cum[-1] + rate * (t - times[-1]))
            times.append(t)
            rate = max(0.0, rate + changes[t])
            rates.append(rate)
        self.times, self.cum, self.rates = times, cum, rates
        self.total = cum[-1] + rate * (end_of_day - times[-1])

    def volume(self, t: float) -> float:
        """Millilitres from the start of the day to t (start <= t <= start + DAY)."""
        i = bisect.bisect_right(self.times, t) - 1
        return self.cum[i] + self.rates[i] * (t - self.times[i])


class MeterUsage:
    """Cumulative volume of one meter since `origin` (Unix seconds)."""

    def __init__(self, meter_id: str, seed: int, profile: Profile, origin: float):
        self.meter_id = meter_id
        self.seed = seed
        self.profile = profile
        self.origin = float(origin)
        self._days: dict[int, _Day] = {}
        self._first_day = int(self.origin // DAY)
        self._prefix = [0.0]  # volume from origin to the start of day first_day + i

    def _day(self, d: int) -> _Day:
        day = self._days.get(d)
        if day is None:
            day = self._days[d] = _Day(d * DAY, self._events(d))
        return day

    def _events(self, d: int) -> list[tuple[float, float, float]]:
        rng = random.Random("usage:%d:%s:%d" % (self.seed, self.meter_id, d))
        p = self.profile
        counts = {k: v * p.persons for k, v in PER_PERSON.items()}
        counts.update(PER_HOUSEHOLD)
        events = []
        for kind, mean in counts.items():
            (dlo, dhi), (rlo, rhi) = EVENT_KINDS[kind]
            n = _poisson(rng, mean * p.multiplier)
            for _ in range(n):
                h0, h1, _share = _pick_window(rng)
                start = d * DAY + (h0 * 3600 + rng.random() * (h1 - h0) * 3600) % DAY
                events.append((start, rng.uniform(dlo, dhi), rng.uniform(rlo, rhi)))
        return events

    def _start_of(self, d: int) -> float:
        """Volume from origin to the start of day d (d >= first day)."""
        while len(self._prefix) <= d - self._first_day:
            k = self._first_day + len(self._prefix) - 1
            self._prefix.append(self._prefix[-1] + self._day(k).total)
        return self._prefix[d - self._first_day] - self._day(self._first_day).volume(self.origin)

    def volume_ml(self, t: float) -> float:
        if t <= self.origin:
            return 0.0
        d = int(t // DAY)
        v = self._start_of(d) + self._day(d).volume(t)
        if self.profile.leak_ml_per_s:
            v += self.profile.leak_ml_per_s * (t - self.origin)
        return max(0.0, v)

    def pulses(self, t: float, pulses_per_m3: int) -> int:
        """What the sensor has emitted by t: floor(V(t) * k)."""
        return math.floor(self.volume_ml(t) * pulses_per_m3 / 1_000_000)


def _pick_window(rng: random.Random):
    x = rng.random()
    acc = 0.0
    for w in WINDOWS:
        acc += w[2]
        if x < acc:
            return w
    return WINDOWS[-1]


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:  # normal approximation, plenty for event counts
        return max(0, int(round(rng.gauss(mean, math.sqrt(mean)))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
