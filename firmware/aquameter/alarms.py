"""On-device flags from the pulse register: continuous-flow leak and burst.

leak:  water has moved with no quiet period (no pulse for leak_quiet_s) for leak_hours.
       A dripping cistern never lets the register rest; a household does, at night.
       Cleared by the next quiet period. leak_hours = 0 turns it off.
burst: the flow stayed above burst_lpm for burst_minutes (a broken pipe). Cleared when
       the flow drops below. burst_lpm = 0 turns it off.

update() takes samples (time since boot, pulse register, flow) at the meter's step
rate. Water that moved between two samples counts as moving all along: a quiet
period is seen only by a sample that finds the register still.
"""


class FlowAlarms:
    def __init__(self, cfg):
        self.leak_ms = cfg["leak_hours"] * 3600000
        self.quiet_ms = cfg["leak_quiet_s"] * 1000
        self.burst_mlpm = cfg["burst_mlpm"]
        self.burst_ms = cfg["burst_minutes"] * 60000
        self.leak = False
        self.burst = False
        self._pulses = None
        self._moved = None  # up_ms of the last sample where the register moved
        self._wet = None  # up_ms when the current run without a quiet period began
        self._over = None  # up_ms since when the flow is above the burst threshold

    def update(self, up_ms, pulses, flow_mlpm):
        """Returns True when a flag changed."""
        if self._pulses is not None and pulses > self._pulses:
            if self._wet is None:  # water moves again after a quiet period (or at boot)
                self._wet = up_ms
            self._moved = up_ms
        elif self._moved is not None and up_ms - self._moved >= self.quiet_ms:
            self._wet = None
        self._pulses = pulses
        leak = bool(self.leak_ms) and self._wet is not None and up_ms - self._wet >= self.leak_ms
        if self.burst_mlpm and flow_mlpm > self.burst_mlpm:
            if self._over is None:
                self._over = up_ms
        else:
            self._over = None
        burst = self._over is not None and up_ms - self._over >= self.burst_ms
        changed = leak != self.leak or burst != self.burst
        self.leak = leak
        self.burst = burst
        return changed
