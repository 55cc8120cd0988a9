"""Wall time for readings: NTP, carried forward on the monotonic tick counter.

up_ms is the time since boot, summed from ticks_diff at every step, so it never wraps.
After a sync (NTP, or at boot an RTC that kept time across a soft reset) the epoch is
anchor + elapsed up_ms: an RTC that jumps changes nothing until the next sync. NTP is
retried with backoff (1 min doubling to ntp_interval; to 5 min while the clock is unset);
between syncs the time runs on.

state(): "ntp" (synced within 2 x ntp_interval), "stale" (synced earlier, or only
from the RTC), "unset" (no time since boot: readings wait for it).
"""

MIN_EPOCH = 1577836800  # 2020-01-01: an earlier RTC was never set
_RETRY_MS = 60000
_UNSET_RETRY_MAX_MS = 300000  # while there is no time at all (readings, and a TLS connect, wait for it)


class Clock:
    def __init__(self, ticks_diff, interval_s, enabled=True):
        self._diff = ticks_diff
        self.interval_ms = interval_s * 1000
        self.enabled = enabled
        self.up_ms = 0
        self._last = None
        self._anchor = None  # (epoch seconds, up_ms) at the last sync
        self._synced = None  # up_ms of the last NTP sync
        self._next = 0  # up_ms of the next NTP attempt
        self._retry = _RETRY_MS

    def tick(self, now):
        if self._last is not None:
            d = self._diff(now, self._last)
            if d > 0:
                self.up_ms += d
        self._last = now

    def set(self, epoch, ntp):
        if epoch < MIN_EPOCH:
            return False
        self._anchor = (epoch, self.up_ms)
        if ntp:
            self._synced = self.up_ms
            self._next = self.up_ms + self.interval_ms
            self._retry = _RETRY_MS
        return True

    def failed(self):
        self._next = self.up_ms + self._retry
        cap = self.interval_ms if self._anchor is not None else min(self.interval_ms, _UNSET_RETRY_MAX_MS)
        self._retry = min(self._retry * 2, cap)

    def due(self):
        return self.enabled and self.up_ms >= self._next

    def next_in(self):
        return self._next - self.up_ms if self.enabled else 86400000

    def now(self):
        a = self._anchor
        if a is None:
            return None
        return a[0] + (self.up_ms - a[1]) // 1000

    def state(self):
        if self._anchor is None:
            return "unset"
        if self._synced is not None and self.up_ms - self._synced <= 2 * self.interval_ms:
            return "ntp"
        return "stale"
