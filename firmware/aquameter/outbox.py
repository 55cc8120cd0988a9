"""Outbox: the readings not yet acknowledged as persisted, oldest first.

Two tiers in one order: the flash ring holds the older readings, RAM the newer ones.
A reading taken while the meter is offline goes to flash (spilling RAM there first, so
the order holds); one taken online stays in RAM, and RAM spills to flash when the link
drops or when it fills. Without a ring (ring_size 0) RAM is all there is, and a full
RAM drops its oldest reading. Dropped readings (the ring full, or unreadable) are
counted: registers are cumulative, so a gap costs resolution, never litres.

A reading stays until the gateway's cmnd/ack names it or a later one: broker PUBACK
is not persistence. `sent` splits the front (sent, unacknowledged) from the rest.
`runs` indexes the readings by boot ([boot, first seq, count], oldest first): within
one boot the seqs are consecutive (only the oldest end is ever dropped), so an ack
is resolved without reading flash.

An entry is a list [boot, seq, ts, pulses, ml, flow_mlpm, valve, up_s]; ts is 0
until the meter's clock is set (stamp() fills it in from up_s).
"""

BOOT = 0
SEQ = 1
TS = 2
PULSES = 3
ML = 4
FLOW = 5
VALVE = 6
UP = 7


class Outbox:
    def __init__(self, ram_size, ring=None):
        self.ram_size = ram_size
        self.ring = ring
        self.ram = []
        self.sent = 0
        self.runs = []
        self.dropped = 0

    def _nring(self):
        return len(self.ring) if self.ring is not None else 0

    def __len__(self):
        return self._nring() + len(self.ram)

    def load(self):
        """Index what a recovered ring holds; an unreadable record drops all before it."""
        r = self.ring
        i = r.tail
        while i < r.head:
            e = r.read(i)
            if e is None:
                self.drop(i + 1 - r.tail)
            else:
                self._index(e)
            i += 1

    def _index(self, e):
        runs = self.runs
        if runs and runs[-1][0] == e[BOOT] and runs[-1][1] + runs[-1][2] == e[SEQ]:
            runs[-1][2] += 1
        else:
            runs.append([e[BOOT], e[SEQ], 1])

    def _front(self, n):
        """Forget the n oldest entries (freed or dropped)."""
        k = min(n, self._nring())
        if k:
            self.ring.free(k)
        del self.ram[:n - k]
        self.sent = max(0, self.sent - n)
        runs = self.runs
        while n and runs:
            run = runs[0]
            k = min(n, run[2])
            run[1] += k
            run[2] -= k
            n -= k
            if not run[2]:
                runs.pop(0)

    def drop(self, n):
        self.dropped += n
        self._front(n)

    def _to_ring(self, e):
        if self.ring.append(e):  # the oldest was overwritten
            self.dropped += 1
            self.sent = max(0, self.sent - 1)
            run = self.runs[0]
            run[1] += 1
            run[2] -= 1
            if not run[2]:
                self.runs.pop(0)

    def push(self, e, durable):
        self._index(e)
        if durable and self.ring is not None:
            self.spill()
            self._to_ring(e)
            self.ring.flush()
            return
        self.ram.append(e)
        if len(self.ram) > self.ram_size:
            if self.ring is not None:
                self.spill()
            else:
                self.drop(1)

    def spill(self):
        """Move the RAM readings to flash (the link dropped, or RAM is full); all go again."""
        if self.ram and self.ring is not None:
            ram, self.ram = self.ram, []
            for e in ram:
                self._to_ring(e)
            self.ring.flush()
        self.sent = 0

    def peek(self):
        """(entry, from_flash) of the oldest reading not yet sent, or None."""
        i = self.sent
        n = self._nring()
        if i < n:
            e = self.ring.read(self.ring.tail + i)
            if e is None:  # unreadable: drop it and what is before it
                self.drop(i + 1)
                return self.peek()
            return e, True
        if i < n + len(self.ram):
            return self.ram[i - n], False
        return None

    def mark_sent(self):
        self.sent += 1

    def rewind(self):
        """Send every unacknowledged reading again (after a reconnect or an ack timeout)."""
        self.sent = 0

    def unsent(self):
        return len(self) - self.sent

    def ack(self, boot, seq):
        """Free every reading up to and including (boot, seq); returns how many."""
        pos = 0
        for b, first, n in self.runs:
            if b == boot:
                if seq < first:
                    return 0
                k = pos + min(seq - first + 1, n)
                self._front(k)
                return k
            pos += n
        return 0

    def _each(self, fn):
        """fn(entry) over every unsent reading; a flash record it changed is rewritten."""
        n = self._nring()
        ring = self.ring
        for i in range(self.sent, n + len(self.ram)):
            if i < n:
                e = ring.read(ring.tail + i)
                if e is not None and fn(e):
                    ring.write(ring.tail + i, e)
            else:
                fn(self.ram[i - n])
        if n:
            ring.flush()

    def rebase(self, boot, dpulses, ml_at):
        """Shift the unsent readings of `boot` by dpulses, their ml by the reconciled
        register's own function (reconcile before the first send)."""
        def fn(e):
            if e[BOOT] == boot:
                e[PULSES] += dpulses
                e[ML] = ml_at(e[PULSES])
                return True
        self._each(fn)

    def stamp(self, boot, epoch, up_s):
        """The clock is set: give this boot's readings taken before it their time."""
        def fn(e):
            if e[BOOT] == boot and not e[TS]:
                e[TS] = epoch - (up_s - e[UP])
                return True
        self._each(fn)

    def entries(self):
        n = self._nring()
        return [self.ring.read(self.ring.tail + i) for i in range(n)] + self.ram
