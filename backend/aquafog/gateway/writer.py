"""The core of the gateway: the single writer of the store.

One thread owns the database connection and all per-meter state. Everything that
changes the store reaches it through one queue: message batches from the receiver
process, broker PUBACKs of published commands, calls from the HTTP API. A batch is
committed when it holds `batch_max_rows` messages or its oldest message has waited
`batch_max_delay_ms`; then, and only then, the messages are PUBACKed to the broker
and every meter concerned gets a persistence ack.

A batch that fails to commit for an operational reason (disk full, I/O error) is kept
and retried with backoff while the broker holds back further messages (it only lets
`ReceiveMaximum` unacknowledged messages through). A batch that fails for any other
reason is replayed message by message, so one poisonous message is rejected as
`internal_error` instead of stopping ingest.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import defaultdict, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from ..config import GatewayConfig
from ..periods import Calendar
from ..protocol import Health, Reading, Reject, Status, Topics, decode, encode_ack
from ..store.schema import commands, ingest_counters, ingest_rejects, meters
from .accounting import H_BOOT, H_ML, H_PULSES, H_SEQ, Accounting, MeterState
from .commands import CommandLedger, Publish, UnknownMeter
from .health import HealthBatch
from .live import LiveHub, command_event, reading_event, status_event
from .publisher import Publisher

log = logging.getLogger("aquafog.writer")

SWEEP_EVERY_S = 1.0
UNKNOWN_METER_CACHE_S = 5.0
REJECTS_KEPT = 1000
LOG_REJECTS_PER_MINUTE = 10
OUTCOMES = ("accepted", "duplicate", "late", "register_reset")
URGENT_SUFFIX = "/stat/valve"
URGENT_DELAY_S = 0.005


@dataclass
class IngestStats:
    """Live figures for /health (written by the writer thread, read by the API)."""

    rx_state: str = "starting"
    rx_generation: int = 0
    last_commit_ms: int | None = None
    last_batch_rows: int = 0
    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    resets: int = 0
    rejected: int = 0
    store_error: str | None = None
    # messages taken into the open batch: received, not yet on disk, so not acknowledged
    uncommitted: int = 0
    uncommitted_since_ms: int | None = None  # when the oldest of them arrived
    batch_latency_ms: deque = field(default_factory=lambda: deque(maxlen=200))


class Writer(threading.Thread):
    def __init__(self, cfg: GatewayConfig, engine: Engine, events: queue.Queue, publisher: Publisher,
                 ack_pipe=None, live: LiveHub | None = None):
        super().__init__(name="writer", daemon=True)
        self.cfg = cfg
        self.engine = engine
        self.events = events
        self.publisher = publisher
        self.ack_pipe = ack_pipe
        self.topics = Topics(cfg.topic_root)
        self.limits = cfg.limits
        self.calendar = Calendar(cfg.timezone)
        self.acc = Accounting(self.calendar, engine.dialect)
        self.ledger = CommandLedger(self.topics, cfg.command_ttl_s, cfg.command_resend_s)
        self.stats = IngestStats()
        self.stopped = threading.Event()
        self.alive_at = time.monotonic()  # each turn of the loop: the service's watchdog checks it
        self.fatal: str | None = None
        self._unknown: dict[str, float] = {}
        self._mid_to_command: dict[int, str] = {}
        self._sent_marks: list[str] = []
        self._log_budget: dict[str, list] = {}
        self._retry_at = 0.0
        self._retry_delay = 0.5
        self._ack_interval = cfg.ack_interval_ms / 1000
        self._last_ack: dict[str, float] = {}      # meter -> when it was last acked (monotonic)
        self._ack_pending: dict[str, MeterState] = {}
        self._ack_flush_at = 0.0
        self.live = live
        self._live_events: list = []  # (meter, kind, data) of the open transaction, sent once it commits
        self._live_last: dict[str, tuple] = {}  # watched meter -> (boot, seq, ml, pulses) last announced

    # ------------------------------------------------------------ API side

    def call(self, fn, timeout: float = 10.0):
        """Run fn(conn) -> (result, publishes) in a transaction on the writer thread."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self.events.put(("call", fn, fut))
        return fut.result(timeout)

    def submit_valve(self, meter: str, state: str, reason: str | None, command_id: str | None,
                     origin: str = "api"):
        def fn(conn):
            st = self._meter(conn, meter)
            if st is None:
                raise UnknownMeter(
                    f"meter {meter!r} is not registered at this gateway; list meters with GET /api/v1/meters "
                    f"or register it with `aquafog meter add {meter}`", None)
            row, created, pubs = self.ledger.submit(conn, st, state, reason, command_id, origin, _now_ms())
            return (row, created), pubs
        return self.call(fn)

    def deliver(self, item) -> None:
        """Queue an item from the receiver for the writer. The new readings of watched meters
        among its messages are announced first (live.py), on the caller's thread: the writer
        takes messages only between commits, and a large commit would hold them back (make bench,
        live, 3000 readings/s of 3000 meters: p99 31-159 ms this way, 141-590 ms from the writer)."""
        if item[0] == "msgs" and self.live is not None and self.live.watching:
            self._announce_arrivals(item[1])
        self.events.put(item)

    def stop(self, timeout: float = 10.0) -> None:
        self.events.put(("stop",))
        self.stopped.wait(timeout)

    # ------------------------------------------------------------ loop

    def run(self) -> None:
        batch: list = []
        deadline = 0.0
        next_sweep = time.monotonic() + SWEEP_EVERY_S
        max_rows = self.cfg.batch_max_rows
        max_delay = self.cfg.batch_max_delay_ms / 1000
        self.conn = self.engine.connect()
        try:
            while True:
                now = self.alive_at = time.monotonic()
                wake = min(next_sweep, deadline if batch else next_sweep)
                if self._retry_at:
                    wake = min(wake, self._retry_at)
                if self._ack_pending:
                    wake = min(wake, self._ack_flush_at)
                try:
                    item = self.events.get(timeout=max(0.0, wake - now))
                except queue.Empty:
                    item = None
                if item is not None:
                    kind = item[0]
                    if kind == "msgs":
                        if not batch:
                            deadline = time.monotonic() + max_delay
                            self.stats.uncommitted_since_ms = item[1][0][5] if item[1] else None
                        batch.extend(item[1])
                        self.stats.uncommitted = len(batch)
                        if any(m[3].endswith(URGENT_SUFFIX) for m in item[1]):
                            # an operator is waiting for this valve's answer: commit soon
                            deadline = min(deadline, time.monotonic() + URGENT_DELAY_S)
                    elif kind == "stop":
                        if batch:
                            self._commit(batch)
                        self._send_acks([], time.monotonic() + self._ack_interval)  # nothing held back
                        break
                    else:
                        self._event(item)
                now = time.monotonic()
                if batch and (len(batch) >= max_rows or now >= deadline) and now >= self._retry_at:
                    if self._commit(batch):
                        batch = []
                        self.stats.uncommitted, self.stats.uncommitted_since_ms = 0, None
                if self._ack_pending and now >= self._ack_flush_at:
                    self._send_acks([], now)
                if now >= next_sweep:
                    next_sweep = now + SWEEP_EVERY_S
                    self._sweep()
        except Exception:  # pragma: no cover - a bug here must not hang the process silently
            log.exception("writer thread failed")
            self.fatal = "writer thread failed; see the log"
        finally:
            self.conn.close()
            self.stopped.set()

    def _event(self, item) -> None:
        kind = item[0]
        if kind == "call":
            _, fn, fut = item
            try:
                with self._txn():
                    result, pubs = fn(self.conn)
            except Exception as exc:
                fut.set_exception(exc)
                return
            self._live_flush()
            fut.set_result(result)
            self._publish_all(pubs)
        elif kind == "published":
            cid = self._mid_to_command.pop(item[1], None)
            if cid:
                self._sent_marks.append(cid)
                self._flush_sent_marks()
        elif kind == "rx":
            self.stats.rx_state = item[1]
            if item[1] == "connected":
                self.stats.rx_generation = item[2]
            elif item[1] == "dead":
                self.fatal = "the MQTT receiver process exited"
                self.events.put(("stop",))
        elif kind == "tx":
            if item[1] == "disconnected":
                self._mid_to_command.clear()

    # ------------------------------------------------------------ batches

    def _commit(self, msgs: list) -> bool:
        """Decode, account and commit a batch; then PUBACK it and ack the meters."""
        t0 = time.monotonic()
        s = self.stats
        counted = s.accepted + s.late + s.resets
        try:
            try:
                (answered, acked), publishes = self._apply(msgs)
            except OperationalError:
                raise
            except Exception:
                log.exception("batch of %d messages failed; replaying them one by one", len(msgs))
                (answered, acked), publishes = self._replay_one_by_one(msgs)
        except OperationalError as exc:
            self.acc.states.clear()  # in-memory state ran ahead of the rolled-back store
            self.stats.store_error = store_problem(exc, self.cfg.db_path)
            log.error("%s; keeping %d messages unacknowledged (the broker and the meters hold them too) and "
                      "retrying in %.1f s", self.stats.store_error, len(msgs), self._retry_delay)
            self._retry_at = time.monotonic() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, 10.0)
            return False
        self._retry_at = 0.0
        self._retry_delay = 0.5
        self.stats.store_error = None
        self._live_flush(s.accepted + s.late + s.resets > counted)
        self._puback(msgs)
        for st in acked.values():
            self._ack_pending[st.meter] = st
        self._send_acks(answered.values(), time.monotonic())
        self._publish_all(publishes)
        now_ms = _now_ms()
        self.stats.last_commit_ms = now_ms
        self.stats.last_batch_rows = len(msgs)
        self.stats.batches += 1
        self.stats.batch_latency_ms.append(now_ms - min(m[5] for m in msgs))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("committed %d messages in %.1f ms", len(msgs), (time.monotonic() - t0) * 1000)
        return True

    def _send_acks(self, answer_now, now: float) -> None:
        """Persistence acks: births are answered at once, echoing the birth's conn (answer_now:
        (state, conn) pairs); otherwise a meter gets at most one ack per ack_interval_ms (an ack
        is cumulative, so the last one says it all)."""
        due = list(answer_now)
        for st, _ in due:
            self._ack_pending.pop(st.meter, None)
        next_at = None
        for meter, st in list(self._ack_pending.items()):
            at = self._last_ack.get(meter, 0.0) + self._ack_interval
            if at <= now:
                due.append((st, None))
                del self._ack_pending[meter]
            elif next_at is None or at < next_at:
                next_at = at
        self._ack_flush_at = next_at or 0.0
        for st, conn in due:
            self._last_ack[st.meter] = now
            h = st.head
            if h is None:
                payload = encode_ack(None, None, 0, 0, conn)
            else:
                payload = encode_ack(h[H_BOOT], h[H_SEQ], h[H_PULSES], h[H_ML], conn)
            # QoS 0: an ack is cumulative, so a lost one is made good by the next one, or by
            # the answer to the birth when the meter reconnects; it saves two packets a meter.
            self.publisher.publish(self.topics.ack(st.meter), payload, qos=0)
        if len(self._last_ack) > 4 * len(self.acc.states) + 10_000:
            self._last_ack = {m: t for m, t in self._last_ack.items() if now - t < self._ack_interval}

    def _replay_one_by_one(self, msgs: list):
        """Isolate the message that breaks a batch: it is rejected, the rest is stored."""
        self.acc.states.clear()
        answered, acked, publishes = {}, {}, []
        for m in msgs:
            try:
                (b, a), p = self._apply([m])
            except OperationalError:
                raise
            except Exception as exc:
                log.exception("message on %s rejected as internal_error", m[3][:120])
                self.acc.states.clear()
                self._commit_reject(m, Reject("internal_error", None, f"gateway error: {exc!r}"))
                continue
            answered.update(b)
            acked.update(a)
            publishes.extend(p)
        return (answered, acked), publishes

    def _apply(self, msgs: list):
        now = time.time()
        now_ms = int(now * 1000)
        decoded = []
        rejects: list = []
        for m in msgs:
            d = decode(self.topics, m[3], m[4], now, self.limits)
            if d is None:
                continue
            if type(d) is Reject:
                rejects.append((m, d))
            else:
                decoded.append((d, m))
        conn = self.conn
        publishes: list[Publish] = []
        live = self.live if self.live is not None and self.live.watching else None
        with self._txn():
            wanted = {d.meter for d, _ in decoded if d.meter not in self.acc.states}
            if wanted:
                fresh = {m for m in wanted if self._unknown.get(m, 0) < now}
                self.acc.load(conn, fresh)
                if len(self._unknown) > 10_000:  # a flood of made-up ids must not grow memory
                    self._unknown.clear()
                for m in fresh:
                    if m not in self.acc.states:
                        self._unknown[m] = now + UNKNOWN_METER_CACHE_S
            batch = self.acc.begin_batch()
            health = HealthBatch()
            superseded: set[str] = set()
            # in arrival order: a meter reports a change it made on its own before its birth
            for d, m in decoded:
                st = self.acc.states.get(d.meter)
                if st is None:
                    rejects.append((m, Reject(
                        "unknown_meter", None,
                        f"meter {d.meter!r} is not registered here; register it with `aquafog meter add {d.meter}`")))
                    continue
                t = type(d)
                if t is Reading:
                    stored = st.readings
                    rej = batch.reading(conn, st, d, m[5])
                    if live is not None and st.readings > stored and live.watches(st.meter) and \
                            (st.head[H_SEQ] != d.seq or st.head[H_BOOT] != d.boot):
                        # a late reading: announced once stored (a new one was when it arrived)
                        self._live_events.append((st.meter, "reading", reading_event(d, m[5], True, True)))
                elif t is Health:
                    rej = None
                    health.add(st, d, m[5])
                elif t is Status:
                    rej = None
                    was = (st.online, st.status_boot, st.status_ms)
                    publishes.extend(self._status(conn, batch, st, d, now_ms))
                    if live is not None and (st.online, st.status_boot, st.status_ms) != was \
                            and live.watches(st.meter):
                        self._live_events.append((st.meter, "status", status_event(st, d, now_ms)))
                else:
                    rej = self.ledger.on_result(conn, st, d, now_ms, superseded)
                    batch.touched[st.pk] = st
                if rej is not None:
                    rejects.append((m, rej))
            batch.write(conn)
            health.write(conn)
            counts: dict = defaultdict(int)
            for outcome, n in zip(OUTCOMES, (batch.accepted, batch.duplicates, batch.late, batch.resets)):
                if n:
                    counts[(outcome, "")] += n
            for _, rej in rejects:
                counts[(rej.reason, rej.field or "")] += 1
            self._write_counters(conn, counts, rejects, now_ms)
        s = self.stats
        s.accepted += batch.accepted
        s.duplicates += batch.duplicates
        s.late += batch.late
        s.resets += batch.resets
        s.rejected += len(rejects)
        for m, rej in rejects:
            self._log_reject(m[3], rej)
        health.log_changes(self.live)  # and its alerts' live events
        if superseded:  # e.g. a birth's re-delivery that a later result in this batch overrode
            publishes = [p for p in publishes if p.command_id not in superseded]
        return (batch.answered, batch.acked), publishes

    def _status(self, conn, batch, st: MeterState, s: Status, now_ms: int) -> list[Publish]:
        if s.online:
            st.online, st.status_boot, st.status_ms, st.fw = True, s.boot, now_ms, s.fw
            st.valve_reported, st.valve_told_ms = s.valve, now_ms
            batch.touched[st.pk] = st
            # every birth is answered at once with the persisted register, echoing its conn: the
            # meter syncs only on the answer to its current connection's birth (a late answer to
            # an earlier one may reach it before this gateway is subscribed on its broker)
            batch.answered[st.pk] = (st, s.conn)
            return self.ledger.on_birth(conn, st, s, now_ms)
        if s.boot is None or st.status_boot is None or s.boot == st.status_boot:
            st.online, st.status_ms = False, now_ms
            batch.touched[st.pk] = st
        return []

    def _write_counters(self, conn, counts: dict, rejects: list, now_ms: int) -> None:
        if counts:
            stmt = sqlite_insert(ingest_counters)
            stmt = stmt.on_conflict_do_update(
                index_elements=[ingest_counters.c.reason, ingest_counters.c.field],
                set_={"count": ingest_counters.c.count + stmt.excluded.count, "last_ms": stmt.excluded.last_ms},
            )
            conn.execute(stmt, [{"reason": r, "field": f, "count": n, "last_ms": now_ms}
                                for (r, f), n in counts.items()])
        if rejects:
            conn.execute(ingest_rejects.insert(), [{
                "rx_ms": m[5], "topic": m[3][:200], "reason": rej.reason, "field": rej.field,
                "message": rej.message[:500], "payload": repr(bytes(m[4][:200]))[2:-1],
            } for m, rej in rejects[:100]])
            if self.stats.batches % 50 == 0:
                top = conn.execute(select(func.max(ingest_rejects.c.id))).scalar() or 0
                conn.execute(delete(ingest_rejects).where(ingest_rejects.c.id <= top - REJECTS_KEPT))

    def _commit_reject(self, m, rej: Reject) -> None:
        with self.conn.begin():
            self._write_counters(self.conn, {(rej.reason, ""): 1}, [(m, rej)], _now_ms())
        self.stats.rejected += 1
        self._log_reject(m[3], rej)

    def _log_reject(self, topic: str, rej: Reject) -> None:
        now = time.monotonic()
        window = self._log_budget.setdefault(rej.reason, [now, 0])
        if now - window[0] > 60:
            window[0], window[1] = now, 0
        window[1] += 1
        if window[1] <= LOG_REJECTS_PER_MINUTE:
            log.warning("rejected %s: %s%s: %s", topic[:120], rej.reason,
                        f" ({rej.field})" if rej.field else "", rej.message)
        elif window[1] == LOG_REJECTS_PER_MINUTE + 1:
            log.warning("more %s rejections this minute are counted but not logged", rej.reason)

    def _puback(self, msgs: list) -> None:
        if self.ack_pipe is None:
            return
        by_gen: dict[int, list[int]] = defaultdict(list)
        for m in msgs:
            if m[2] > 0:
                by_gen[m[0]].append(m[1])
        for gen, mids in by_gen.items():
            self.ack_pipe.send(("ack", gen, mids))

    # ------------------------------------------------------------ commands

    def _meter(self, conn, meter: str) -> MeterState | None:
        self.acc.load(conn, [meter])
        st = self.acc.states.get(meter)
        if st is not None:
            self._unknown.pop(meter, None)
        return st

    def _publish_all(self, pubs: list[Publish]) -> None:
        for p in pubs:
            mid = self.publisher.publish(p.topic, p.payload)
            if mid is not None and p.command_id:
                self._mid_to_command[mid] = p.command_id

    def _flush_sent_marks(self) -> None:
        marks, self._sent_marks = self._sent_marks, []
        now_ms = _now_ms()
        try:
            with self._txn():
                for cid in marks:
                    self.ledger.mark_sent(self.conn, cid, now_ms)
        except OperationalError as exc:
            log.error("could not record sent commands: %s", exc)
            self._sent_marks = marks + self._sent_marks
            return
        self._live_flush()

    def _sweep(self) -> None:
        try:
            with self._txn():
                pubs = self.ledger.sweep(self.conn, _now_ms())
        except OperationalError as exc:
            log.error("command sweep failed: %s", exc)
            return
        self._live_flush()
        self._publish_all(pubs)

    # ------------------------------------------------------------ live events (live.py)

    @contextmanager
    def _txn(self):
        """A transaction of the writer: the live events it produced are dropped if it rolls back."""
        marks = len(self._live_events), len(self.ledger.changed)
        try:
            with self.conn.begin():
                yield
        except BaseException:
            del self._live_events[marks[0]:]
            del self.ledger.changed[marks[1]:]
            raise

    def _live_flush(self, consumption_changed: bool = False) -> None:
        """After a commit: the watched meters' readings, status and command changes go out."""
        events, self._live_events = self._live_events, []
        changed, self.ledger.changed = self.ledger.changed, []
        live = self.live
        if live is None:
            return
        for meter, kind, data in events:
            live.publish(meter, kind, data)
        if changed and live.watching:
            ids = list(dict.fromkeys(changed))
            try:
                with self.conn.begin():
                    rows = [r for i in range(0, len(ids), 500) for r in self.conn.execute(
                        select(commands, meters.c.meter).join(meters, meters.c.pk == commands.c.meter_pk)
                        .where(commands.c.id.in_(ids[i:i + 500]))).mappings()]
            except OperationalError as exc:
                log.error("live events of %d command changes are lost: %s", len(ids), exc)
                rows = []
            for c in rows:
                if live.watches(c["meter"]):
                    live.publish(c["meter"], "command", command_event(c))
        if consumption_changed:
            live.consumption_changed()

    def _announce_arrivals(self, msgs: list) -> None:
        """A watched meter's new reading is announced on arrival, before its batch is committed
        (make bench, live: p99 6-16 ms this way, 56-150 ms committing such readings at once, 257 ms
        after the usual batch delay). Until the commit the broker still holds it, so a crash
        loses nothing: it is delivered again. What is not clearly new (a duplicate, a late or a
        backwards reading) waits for the commit, which announces a late one.
        Runs on deliver()'s thread (one: the pipe reader) and reads the writer's per-meter
        state without a lock: single dict lookups and a head tuple replaced whole; a stale view
        can only let a duplicate through, which clients drop by (boot, seq)."""
        live, cut, now = self.live, len(self.topics.root) + 1, None
        for m in msgs:
            topic = m[3]
            if not topic.endswith("/tele/reading"):
                continue
            meter = topic[cut:].partition("/")[0]
            if not live.watches(meter):
                continue
            now = now or time.time()
            d = decode(self.topics, topic, m[4], now, self.limits)
            if type(d) is not Reading:
                continue
            last = self._live_last.get(meter)
            st = self.acc.states.get(meter)
            if last is None and st is not None and st.head is not None:
                h = st.head
                last = (h[H_BOOT], h[H_SEQ], h[H_ML], h[H_PULSES])
            if last is not None:
                if d.boot == last[0]:
                    if d.seq <= last[1] or d.ml < last[2] or d.pulses < last[3]:
                        continue
                elif st is not None and d.boot in st.boots:
                    continue  # an earlier boot's reading: late
            self._live_last[meter] = (d.boot, d.seq, d.ml, d.pulses)
            live.publish(meter, "reading", reading_event(d, m[5], False, False))
        if len(self._live_last) > 1000:
            self._live_last = {k: v for k, v in self._live_last.items() if live.watches(k)}


def store_problem(exc: OperationalError, db_path: str, running: bool = True) -> str:
    """What a failed store write means for the operator: what went wrong, where, what to do
    (running False: the store could not even be opened at start)."""
    err = str(exc.orig or exc)
    low = err.lower()
    where = Path(db_path).expanduser().resolve()
    if "full" in low:
        hint = (f"the disk holding {where} is full: free space on it (df -h {where.parent}); "
                "ingest resumes by itself once there is room")
    elif "i/o" in low:
        hint = f"the disk holding {where} failed a read or write: check it (dmesg, its free space, its health)"
    elif "readonly" in low or "read-only" in low:
        hint = f"{where} (or its directory) is read-only for the gateway's user: make it writable"
    elif "locked" in low or "busy" in low:
        hint = f"another process holds {where} locked: stop it (only one gateway may use a store)"
    else:
        hint = f"check {where} and the disk holding it"
    if not running:
        return f"cannot open the store ({err}): {hint}, then start the gateway again"
    return f"store write failed ({err}): {hint}. Nothing is acknowledged meanwhile: no reading is lost"


def _now_ms() -> int:
    return int(time.time() * 1000)
