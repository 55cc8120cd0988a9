"""Outbox: the bounded, in-order queue of readings not yet acknowledged as persisted.

A reading stays here until the gateway's cmnd/ack names it (or a later reading):
broker PUBACK is not persistence. Entries are kept in (boot, seq) order in a RAM ring;
a send cursor splits them into sent-but-unacknowledged and unsent. On overflow the
oldest entry is dropped and counted (readings are cumulative registers, so a dropped
reading costs resolution, never litres).

An entry is a list [boot, seq, ts, pulses, ml, flow_mlpm, valve]; the payload is
encoded when sent, so rebase() (reconcile) only shifts two integers.
"""

BOOT = 0
SEQ = 1
TS = 2
PULSES = 3
ML = 4
FLOW = 5
VALVE = 6


class Outbox:
    def __init__(self, size):
        if size < 1:
            raise ValueError("outbox size must be >= 1")
        self.size = size
        self._ring = [None] * size
        self._head = 0  # index of the oldest entry
        self._count = 0
        self._cursor = 0  # entries [0, cursor) from the head have been sent
        self.dropped = 0

    def __len__(self):
        return self._count

    def _at(self, i):
        return self._ring[(self._head + i) % self.size]

    def _pop_head(self):
        self._ring[self._head] = None
        self._head = (self._head + 1) % self.size
        self._count -= 1
        if self._cursor > 0:
            self._cursor -= 1

    def push(self, entry):
        if self._count == self.size:
            self._pop_head()
            self.dropped += 1
        self._ring[(self._head + self._count) % self.size] = entry
        self._count += 1

    def unsent(self):
        return self._count - self._cursor

    def unacked(self):
        """Entries sent but not yet acknowledged."""
        return self._cursor

    def peek_unsent(self):
        """The oldest entry not yet sent, or None."""
        if self._cursor >= self._count:
            return None
        return self._at(self._cursor)

    def mark_sent(self):
        if self._cursor < self._count:
            self._cursor += 1

    def rewind(self):
        """Send every unacknowledged entry again (after a reconnect or an ack timeout)."""
        self._cursor = 0

    def ack(self, boot, seq):
        """Free every entry up to and including (boot, seq); returns how many were freed.

        Entries are in order, so everything before the named reading goes too: earlier
        seqs of that boot and every entry of older boots. An ack naming a reading that
        is not queued (already freed, or of a boot never queued) frees nothing.
        """
        last = -1
        for i in range(self._count):
            e = self._at(i)
            if e[BOOT] == boot and e[SEQ] <= seq:
                last = i
        for _ in range(last + 1):
            self._pop_head()
        return last + 1

    def rebase(self, boot, dpulses, dml):
        """Shift the registers of the unsent entries of `boot` (reconcile before first send)."""
        for i in range(self._cursor, self._count):
            e = self._at(i)
            if e[BOOT] == boot:
                e[PULSES] += dpulses
                e[ML] += dml

    def entries(self):
        return [self._at(i) for i in range(self._count)]
