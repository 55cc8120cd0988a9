"""Simulated time shared by every emulated meter.

    sim_epoch = start_epoch + (real seconds since start()) * speed, capped at real now

MicroTime is the `time` module the firmware sees (ticks_ms & co. as in MicroPython:
ticks wrap at 2**30 ms, and start two minutes before the wrap so every run crosses it;
ticks_us wraps at 2**30 us, about every 18 minutes, as on the ESP32). Rtc is a meter's
real-time clock: what `time.time()` reads, set by NTP, lost at power-on.
"""

from __future__ import annotations

import time
from typing import Callable

TICKS_PERIOD = 1 << 30
TICKS_MASK = TICKS_PERIOD - 1
TICKS_HALF = TICKS_PERIOD // 2
EPOCH_2000 = 946684800  # 2000-01-01 00:00:00 UTC: where an ESP32's RTC starts at power-on


class SimClock:
    """Simulated Unix time: `speed` times faster than real time from `start_epoch`.

    With `realtime_cap` (the default) it never runs ahead of the real wall clock: once
    it catches up with real now it goes on at real time (the gateway rejects readings
    from the future). A start in the past thus replays history fast, then runs live.
    """

    def __init__(self, start_epoch: float, speed: float, ticks_base: int = TICKS_PERIOD - 120_000,
                 realtime_cap: bool = True):
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.start_epoch = float(start_epoch)
        self.speed = float(speed)
        self.ticks_base = ticks_base
        self.realtime_cap = realtime_cap
        self._real0: float | None = None
        self._wall0 = 0.0

    def start(self) -> None:
        if self._real0 is None:
            self._real0 = time.monotonic()
            self._wall0 = time.time()

    def _at(self, real: float) -> float:
        e = real - self._real0
        sim = self.start_epoch + e * self.speed
        if self.realtime_cap:
            sim = min(sim, max(self.start_epoch, self._wall0 + e))
        return sim

    def now(self) -> float:
        """Simulated Unix seconds."""
        if self._real0 is None:
            return self.start_epoch
        return self._at(time.monotonic())

    def real_at(self, sim_epoch: float) -> float:
        """time.monotonic() value at which the simulated clock reaches `sim_epoch`."""
        if self._real0 is None:
            return time.monotonic() + (sim_epoch - self.start_epoch) / self.speed
        fast = self._real0 + (sim_epoch - self.start_epoch) / self.speed
        if not self.realtime_cap:
            return fast
        live = self._real0 + (sim_epoch - self._wall0)  # at 1x once caught up with real now
        return max(fast, live)

    def delay_s(self, sim_ms: float) -> float:
        """Real seconds from now until `sim_ms` simulated milliseconds have passed."""
        return max(0.0, self.real_at(self.now() + sim_ms / 1000.0) - time.monotonic())

    @property
    def live(self) -> bool:
        """True once the clock has caught up with real time (and so runs at 1x)."""
        if not self.realtime_cap or self._real0 is None:
            return False
        e = time.monotonic() - self._real0
        return self.start_epoch + e * self.speed >= self._wall0 + e

    def ticks_ms(self) -> int:
        return (int((self.now() - self.start_epoch) * 1000) + self.ticks_base) & TICKS_MASK

    def elapsed_us(self, sim_epoch: float | None = None) -> int:
        """Integer simulated microseconds from start_epoch to `sim_epoch` (default: now)."""
        t = self.now() if sim_epoch is None else sim_epoch
        return int((t - self.start_epoch) * 1_000_000)

    def ticks_us(self, elapsed_us: int | None = None) -> int:
        """ticks_us now, or at `elapsed_us` (the same counter as ticks_ms, in microseconds)."""
        e = self.elapsed_us() if elapsed_us is None else elapsed_us
        return (e + self.ticks_base * 1000) & TICKS_MASK


class Rtc:
    """One meter's real-time clock: simulated time plus an offset.

    As on the ESP32 (ESP-IDF keeps the system time in the RTC timer across every reset
    except a power-on reset): power_on() starts it at 2000-01-01 00:00:00, a reset keeps
    it, set() (NTP) puts it right.
    """

    def __init__(self, clock: SimClock):
        self._clock = clock
        self._offset = 0.0

    def power_on(self) -> None:
        self.set(EPOCH_2000)

    def set(self, epoch: float) -> None:
        self._offset = epoch - self._clock.now()

    def now(self) -> float:
        return self._clock.now() + self._offset


class MicroTime:
    """MicroPython's `time` module on the simulated clock; time() reads `rtc` when given
    (else the simulated time itself)."""

    def __init__(self, clock: SimClock, rtc: Rtc | None = None):
        self._clock = clock
        self._rtc = rtc
        self.irq_us: int | None = None  # elapsed_us of the edge whose interrupt handler is running
        # called with elapsed_us before the main loop reads ticks_us: the emulator runs the
        # interrupt handlers of the edges up to then, as the chip would have already
        self.edges_until: Callable[[int], None] | None = None

    def ticks_ms(self) -> int:
        return self._clock.ticks_ms()

    def ticks_us(self) -> int:
        """In an interrupt handler: the time of its edge (the emulator delivers edges late,
        before the next step; the handler must see when each happened)."""
        if self.irq_us is not None:
            return self._clock.ticks_us(self.irq_us)
        e = self._clock.elapsed_us()
        if self.edges_until is not None:
            self.edges_until(e)
        return self._clock.ticks_us(e)

    @staticmethod
    def ticks_diff(a: int, b: int) -> int:
        return ((a - b + TICKS_HALF) & TICKS_MASK) - TICKS_HALF

    @staticmethod
    def ticks_add(t: int, delta: int) -> int:
        return (t + delta) & TICKS_MASK

    def time(self) -> int:
        return int(self._rtc.now() if self._rtc is not None else self._clock.now())

    @staticmethod
    def gmtime(secs: float | None = None):
        return time.gmtime(secs)

    def sleep_ms(self, ms: int) -> None:
        time.sleep(self._clock.delay_s(ms))

    def sleep(self, s: float) -> None:
        time.sleep(self._clock.delay_s(s * 1000.0))
