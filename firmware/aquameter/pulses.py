"""Pulse edge filter for bouncing reed contacts (the interrupt counting path).

A reed contact chatters for 1-5 ms when it closes and again when it opens. The ESP32
PCNT glitch filter stops at about 12.8 us, so it cannot remove that; this filter can.
It sees every edge (both directions) and counts a falling edge only when the line was
quiet, with no edge at all, for at least min_gap_us before it:

    edge     level   quiet before it     counted   why
    falling  0       >= gap              yes       the contact closed: one pulse
    falling  0       <  gap              no        chatter while closing or opening
    rising   1       any                 no        the contact opened
    any      any     (first edge)        falling   nothing to compare with

The handler runs in a hard interrupt: no allocation, small integers only.
With min_gap_us == 0 every falling edge counts (the level is not read: a short pulse
may already be over when the handler runs).

ticks_us wraps every 2**30 us (17.9 min), so ticks_diff is right only within +-9 min:
a household is quiet longer than that all the time. Two guards: a negative difference
is a long quiet spell, and the main loop calls age() every step (steps are seconds
apart), which forgets the last edge once the line has been quiet for the gap, before
the difference can wrap.
"""


class QuietFilter:
    def __init__(self, min_gap_us, ticks_diff):
        self.gap = min_gap_us
        self._diff = ticks_diff
        self.last = None  # ticks_us of the previous edge
        self.count = 0  # pulses counted since boot
        self.chatter = 0  # edges ignored

    def edge(self, t_us, level):
        if self.gap == 0:
            self.count += 1
            return
        last = self.last
        self.last = t_us
        if level == 0 and (last is None or not 0 <= self._diff(t_us, last) < self.gap):
            self.count += 1
        else:
            self.chatter += 1

    def age(self, now_us):
        """Main loop, with interrupts off, now_us read just before: forget the last edge
        once the line was quiet for the gap (then the next closing counts whatever
        ticks_us did meanwhile). An edge newer than now_us (it came between the read and
        the masking) is kept; one more than the gap "newer" is a wrapped difference."""
        last = self.last
        if last is not None:
            d = self._diff(now_us, last)
            if d >= self.gap or d < -self.gap:
                self.last = None
