"""The simulated clock: fast replay, capped at real now, MicroPython tick arithmetic."""

import time

from emulator import MicroTime, SimClock
from emulator.clock import TICKS_PERIOD


def test_runs_speed_times_faster_than_real_time():
    c = SimClock(time.time() - 10 * 86400, speed=1000)
    c.start()
    s0, r0 = c.now(), time.monotonic()
    time.sleep(0.05)
    s1, r1 = c.now(), time.monotonic()
    assert 0.9 * 1000 * (r1 - r0) <= s1 - s0 <= 1.1 * 1000 * (r1 - r0) + 1


def test_never_runs_ahead_of_real_now_then_goes_on_at_real_time():
    c = SimClock(time.time() - 20, speed=1000)  # catches up after 20 ms
    c.start()
    deadline = c.real_at(time.time() + 0.0)
    assert deadline - time.monotonic() < 0.1
    time.sleep(0.1)
    assert c.live
    for _ in range(3):
        assert abs(c.now() - time.time()) < 0.05
        time.sleep(0.02)
    # once live, a simulated second takes a real second
    assert 0.95 <= c.delay_s(1000) <= 1.05


def test_uncapped_clock_runs_into_the_future():
    c = SimClock(time.time() - 1, speed=1000, realtime_cap=False)
    c.start()
    time.sleep(0.02)
    assert c.now() > time.time() + 10


def test_ticks_wrap_like_micropython():
    c = SimClock(1_700_000_000, speed=1)
    t = MicroTime(c)
    a = t.ticks_ms()
    assert TICKS_PERIOD - 130_000 < a < TICKS_PERIOD  # starts shortly before the wrap
    b = t.ticks_add(a, 200_000)
    assert b < a  # wrapped
    assert t.ticks_diff(b, a) == 200_000 and t.ticks_diff(a, b) == -200_000
    assert t.time() == 1_700_000_000 and t.gmtime(0)[0] == 1970
