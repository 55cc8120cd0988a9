"""Flash ring: readings kept on flash while the gateway cannot take them.

One file of `capacity` fixed-size records; record r (a ring sequence number that only
grows) lives in slot r % capacity, so appending is one in-place write of 48 bytes
and nothing is ever moved. Each record carries its own number and a CRC-32, so after
a power cut the ring is found again by scanning: head = newest valid record + 1. A
write torn by the power cut fails its CRC and is simply not there.

What the gateway acknowledged is freed by moving `tail` (in RAM); the owner persists
tail now and then (state.json). After a reboot the records between the persisted
tail and the real one are sent again, and the gateway dedupes them.

Record: <I rseq, 4s boot, I seq, I ts, I up_s, Q pulses, Q ml, I flow_mlpm, B valve,
B 0, H 0> then <I crc32 of those 44 bytes>.
"""

import struct
from binascii import crc32, hexlify, unhexlify

from aquameter import const

RECORD = const(48)
_BODY = const(44)
_FMT = "<I4sIIIQQIBBH"


def pack(rseq, e):
    """Record bytes of outbox entry e = [boot, seq, ts, pulses, ml, flow, valve, up_s]."""
    body = struct.pack(_FMT, rseq, unhexlify(e[0]), e[1], e[2], e[7], e[3], e[4], e[5],
                       1 if e[6] == "closed" else 0, 0, 0)
    return body + struct.pack("<I", crc32(body) & 0xFFFFFFFF)


def unpack(buf):
    """(rseq, entry) of a record, or None when its CRC does not match (torn or never written)."""
    if struct.unpack("<I", buf[_BODY:RECORD])[0] != crc32(buf[:_BODY]) & 0xFFFFFFFF:
        return None
    r, boot, seq, ts, up, p, ml, flow, valve, _, _ = struct.unpack(_FMT, buf[:_BODY])
    return r, [hexlify(boot).decode(), seq, ts, p, ml, flow, "closed" if valve else "open", up]


class FlashRing:
    def __init__(self, f, capacity):
        self.f = f  # a binary file of capacity * RECORD bytes, opened for update
        self.cap = capacity
        self.head = 0  # rseq of the next record
        self.tail = 0  # rseq of the oldest record kept

    def __len__(self):
        return self.head - self.tail

    def _slot(self, rseq):
        self.f.seek((rseq % self.cap) * RECORD)

    def recover(self, freed):
        """Scan the file after a boot; `freed` is the tail persisted before it."""
        newest = -1
        f = self.f
        f.seek(0)
        for _ in range(self.cap):
            rec = unpack(f.read(RECORD))
            if rec is not None and rec[0] > newest:
                newest = rec[0]
        self.head = max(newest + 1, freed)
        self.tail = max(freed, self.head - self.cap)

    def read(self, rseq):
        """The entry of record rseq, or None if it is unreadable."""
        self._slot(rseq)
        rec = unpack(self.f.read(RECORD))
        if rec is None or rec[0] != rseq:
            return None
        return rec[1]

    def write(self, rseq, e):
        self._slot(rseq)
        self.f.write(pack(rseq, e))

    def append(self, e):
        """Write e as the newest record; returns True when the oldest was overwritten."""
        full = len(self) >= self.cap
        if full:
            self.tail += 1
        self.write(self.head, e)
        self.head += 1
        return full

    def flush(self):
        self.f.flush()

    def free(self, n):
        self.tail = min(self.tail + n, self.head)
