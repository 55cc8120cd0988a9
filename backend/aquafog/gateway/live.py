"""Live events for the dashboard: the writer thread publishes, server-sent-event
responses (api/live.py) subscribe.

- The writer calls `publish(meter, kind, data)` for a watched meter's new reading, its
  command ledger changes and its online/offline changes, and `consumption_changed()`
  after a commit that changed consumption (the live rankings re-read the store then).
  Neither ever blocks it: a meter nobody watches costs one dict lookup, and each client
  has a bounded queue that drops its *oldest* event when full and counts the drop; the
  client is then told (`missed`) and refetches.
- Event ids are `<epoch>-<n>`: `epoch` is this hub's start (hex ms), `n` grows by one per
  event. A client that reconnects with Last-Event-ID gets the events it missed replayed
  from the meter's recent events (kept while the meter is watched and RETAIN_S after),
  or, if they are gone (the gateway restarted, too many events, the meter was not
  watched meanwhile), one `missed` event telling it to refetch.
- At most `max_clients` subscriptions at once (each holds an HTTP server thread); beyond
  it `subscribe*` raises LiveFull.

Thread-safe: the writer thread publishes, each HTTP thread waits on its own subscription.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass

from ..api.serialize import command as serialize_command
from ..api.serialize import iso, iso_ms, litres

QUEUE_EVENTS = 256   # events a client may fall behind before the oldest are dropped
RING_EVENTS = 256    # recent events kept per watched meter, for reconnecting clients
RETAIN_S = 120.0     # how long a meter's recent events outlive its last viewer


def reading_event(r, rx_ms: int, late: bool, persisted: bool) -> dict:
    """A reading (protocol.Reading) as the `reading` event's data: `persisted` false when it is
    announced on arrival, before its batch is committed."""
    return {"meter": r.meter, "boot": r.boot, "seq": r.seq, "ts": iso(r.ts), "litres": litres(r.ml),
            "pulses": r.pulses, "flow_lpm": litres(r.flow_mlpm), "valve": r.valve, "received_at": iso_ms(rx_ms),
            "late": late, "persisted": persisted}


def status_event(st, s, now_ms: int) -> dict:
    """A meter's availability change (a birth, or a last will that applies)."""
    return {"meter": st.meter, "online": bool(s.online), "boot": s.boot, "fw": s.fw if s.online else None,
            "valve": s.valve if s.online else None, "at": iso_ms(now_ms)}


def command_event(row) -> dict:
    """A command ledger row (joined with its meter id), as GET /commands/<id> shows it."""
    return serialize_command(row)


class LiveFull(Exception):
    """Every live slot is taken (live_max_clients)."""


@dataclass(frozen=True)
class Event:
    n: int
    kind: str
    frame: bytes  # the whole SSE frame: id, event, data


def sse_frame(kind: str, data, event_id: str | None = None) -> bytes:
    """One server-sent event; data is JSON on a single line."""
    body = json.dumps(data, separators=(",", ":"))
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {body}\n\n".encode()


class Subscription:
    """One client's queue. `get` returns the SSE frames to send (a `missed` frame first
    when events were dropped), [] on timeout, None once closed."""

    def __init__(self, hub: "LiveHub", meter: str | None, maxlen: int = QUEUE_EVENTS):
        self.hub = hub
        self.meter = meter          # None: a ranking subscription
        self._q: deque = deque(maxlen=maxlen)
        self._cv = threading.Condition(threading.Lock())
        self._dropped = 0           # since the client was last told
        self._missed: dict | None = None  # a pending `missed` notice (reconnect gap, restart)
        self._changed = False       # ranking: consumption changed since the last get
        self.dropped_total = 0
        self.closed = False

    def offer(self, ev: Event) -> None:
        with self._cv:
            if len(self._q) == self._q.maxlen:
                self._dropped += 1
                self.dropped_total += 1
            self._q.append(ev)
            self._cv.notify()

    def poke(self) -> None:
        with self._cv:
            self._changed = True
            self._cv.notify()

    def miss(self, reason: str, **extra) -> None:
        with self._cv:
            self._missed = {"reason": reason, **extra}
            self._q.clear()
            self._cv.notify()

    def end(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify()

    def changed(self) -> bool:
        """Ranking: did consumption change since the last call? (clears the flag)"""
        with self._cv:
            c, self._changed = self._changed, False
            return c

    def get(self, timeout: float) -> list[bytes] | None:
        with self._cv:
            if not (self._q or self._dropped or self._missed or self._changed or self.closed):
                self._cv.wait(timeout)
            if self.closed:
                return None
            frames = []
            if self._missed is not None:
                frames.append(sse_frame("missed", self._missed))
                self._missed = None
            if self._dropped:
                frames.append(sse_frame("missed", {"reason": "overflow", "dropped": self._dropped}))
                self._dropped = 0
            frames.extend(ev.frame for ev in self._q)
            self._q.clear()
            return frames

    def close(self) -> None:
        """The client is gone: free the slot (idempotent)."""
        self.hub._unsubscribe(self)


class _Ring:
    __slots__ = ("events", "lost_upto", "subs", "idle_since")

    def __init__(self, n: int):
        self.events: deque = deque(maxlen=RING_EVENTS)
        self.lost_upto = n        # events of this meter numbered <= lost_upto may be unknown here
        self.subs: list[Subscription] = []
        self.idle_since = 0.0     # when its last viewer left (0: watched now)


class LiveHub:
    def __init__(self, max_clients: int = 16, clock=time.monotonic):
        self.max_clients = max_clients
        self.clock = clock
        self.epoch = format(int(time.time() * 1000), "x")
        self._lock = threading.Lock()
        self._n = 0
        self._rings: dict[str, _Ring] = {}      # read without the lock by the writer (dict lookups are atomic)
        self._ranking: list[Subscription] = []
        self._subs: set[Subscription] = set()
        self._cache: dict = {}
        self.generation = 0                       # commits that changed consumption
        self.closed = False
        self.refused = 0
        self._dropped_gone = 0                    # events dropped for clients that have left

    # --------------------------------------------------------------- writer side

    def watches(self, meter: str) -> bool:
        """Does anyone watch this meter now (or did within RETAIN_S)? Cheap; no lock."""
        return meter in self._rings

    def viewed(self, meter: str) -> bool:
        """Is a client watching this meter right now?"""
        ring = self._rings.get(meter)
        return ring is not None and bool(ring.subs)

    @property
    def watching(self) -> bool:
        return bool(self._rings)

    def publish(self, meter: str, kind: str, data: dict) -> None:
        if meter not in self._rings:
            return
        with self._lock:
            ring = self._rings.get(meter)
            if ring is None:
                return
            self._n += 1
            ev = Event(self._n, kind, sse_frame(kind, data, f"{self.epoch}-{self._n}"))
            if len(ring.events) == ring.events.maxlen:
                ring.lost_upto = ring.events[0].n
            ring.events.append(ev)
            subs = list(ring.subs)
        for s in subs:
            s.offer(ev)

    def consumption_changed(self) -> None:
        self.generation += 1
        if self._ranking:
            with self._lock:
                subs = list(self._ranking)
            for s in subs:
                s.poke()

    # --------------------------------------------------------------- client side

    def _add(self, sub: Subscription) -> None:
        if self.closed:
            raise LiveFull("the gateway is stopping")
        if len(self._subs) >= self.max_clients:
            self.refused += 1
            raise LiveFull(f"all {self.max_clients} live streams of this gateway are in use (live_max_clients)")
        self._subs.add(sub)

    def subscribe(self, meter: str, last_event_id: str | None = None) -> Subscription:
        """Watch a meter. With the id of the last event a client saw, replay what it
        missed, or tell it (`missed`) that it must refetch."""
        sub = Subscription(self, meter)
        now = self.clock()
        with self._lock:
            self._add(sub)
            self._prune(now)
            ring = self._rings.get(meter)
            if ring is None:
                ring = self._rings[meter] = _Ring(self._n)
            ring.subs.append(sub)
            ring.idle_since = 0.0
            if last_event_id:
                epoch, _, n = last_event_id.strip().partition("-")
                if epoch != self.epoch:
                    sub.miss("restart", detail="the gateway restarted since that event; refetch")
                elif not n.isdigit() or int(n) > self._n or int(n) < ring.lost_upto:
                    sub.miss("gap", detail="events since that one are no longer kept; refetch")
                else:
                    for ev in ring.events:
                        if ev.n > int(n):
                            sub.offer(ev)
        return sub

    def subscribe_ranking(self) -> Subscription:
        sub = Subscription(self, None, maxlen=1)
        with self._lock:
            self._add(sub)
            self._ranking.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub not in self._subs:
                return
            self._subs.discard(sub)
            self._dropped_gone += sub.dropped_total
            if sub.meter is None:
                self._ranking.remove(sub)
                return
            ring = self._rings.get(sub.meter)
            if ring is not None and sub in ring.subs:
                ring.subs.remove(sub)
                if not ring.subs:
                    ring.idle_since = self.clock()
            self._prune(self.clock())

    def _prune(self, now: float) -> None:
        for meter in [m for m, r in self._rings.items() if not r.subs and now - r.idle_since > RETAIN_S]:
            del self._rings[meter]

    def memo(self, key, compute):
        """compute() once per `key` and consumption generation, shared by the clients
        asking for the same thing (the live rankings)."""
        gen = self.generation
        hit = self._cache.get(key)
        if hit is not None and hit[0] == gen:
            return hit[1]
        value = compute()
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = (gen, value)
        return value

    def close(self) -> None:
        """The gateway stops: every stream ends."""
        with self._lock:
            self.closed = True
            subs = list(self._subs)
        for s in subs:
            s.end()

    def stats(self) -> dict:
        with self._lock:
            return {"clients": len(self._subs), "max_clients": self.max_clients, "refused": self.refused,
                    "meters_watched": sum(1 for r in self._rings.values() if r.subs),
                    "dropped": self._dropped_gone + sum(s.dropped_total for s in self._subs)}
