"""The meter application: a steppable state machine, no loops, no hardware imports.

    meter = Meter(board, cfg)
    meter.start()
    run(meter, board, cfg)        # main.py: step, feed the watchdog, sleep what step asked

step() does one bounded slice of work and returns the milliseconds until it wants to
run again. Time comes only from the board (ticks_ms/ticks_diff/ticks_add, epoch, NTP).

What one step does, in order:
  1. sample the pulse register; update the leak/burst flags and the valve feedback
     (a burst may close the valve, when burst_close says so);
  2. take a reading when one is due (every report_interval_s, the first one after a
     random 1/2..1 of it so that meters booted together spread out; right after a valve
     command; when request_reading() asked). Offline it goes to the flash ring;
  3. persist the register when save_litres are at risk (at most every save_min_interval_s);
  4. online: poll inbound MQTT (the callback only queues), handle valve commands and
     acks, resend after ack_timeout_s without progress, publish valve results, then the
     readings in (boot, seq) order at QoS 1 (those from flash at replay_per_s), health
     telemetry when due, ping when idle;
  5. offline: join Wi-Fi (non-blocking), set the clock by NTP, then connect MQTT with a
     retained last will, subscribe <root>/<id>/cmnd/#, report valve changes the meter made
     on its own, publish the retained birth; failures back off exponentially with jitter.
     With mqtt_tls the meter connects only once its clock is set (NTP, or an RTC that kept
     its time across a reset): certificate dates are checked, and a clock at 2000 would fail
     every handshake. Until then readings wait in the flash ring and NTP is retried.

After each connect the meter holds its readings until the gateway's ack to the birth
arrives; without one it announces the birth again after reconcile_timeout_s (doubling,
at most every 5 min). That ack proves the gateway is subscribed: a reading sent before
it could be lost while a later one arrives, and the gateway's cumulative ack of the
later one would free it. The ack also frees what the gateway already has and, right
after boot, carries the register the meter reconciles with before its first reading
of the new boot goes out.

Only the answer to THIS connection's birth proves it: the birth carries a connection
number (conn, +1 on every connect; a boot starts it from its boot id, so two boots'
numbers differ) and the gateway's answer echoes it. A late answer to an earlier
connection's birth (the broker restarted, the gateway's publisher came back before its
subscriber) names another conn: it frees what it acknowledges but does not sync. An ack
without conn is a reading's ack, or the answer of a gateway that does not echo conn
(older than conn): it syncs only until this boot has seen an ack with a conn.
"""

try:
    import json
except ImportError:
    import ujson as json

from aquameter import const

from aquameter import VERSION
from aquameter import protocol as proto
from aquameter.alarms import FlowAlarms
from aquameter.clock import Clock
from aquameter.outbox import Outbox, BOOT, TS, PULSES, ML
from aquameter.register import Register
from aquameter.ring import RECORD, FlashRing
from aquameter.valve import Valve, CLOSED, STATES

STATE_FILE = "state.json"
RING_FILE = "ring.bin"
_INBOX_MAX = const(16)  # inbound messages queued between two polls
_RESULTS_MAX = const(8)  # valve results waiting for the link
_SEND_BUDGET = const(8)  # readings published per step
_POLL_BUDGET = const(8)  # inbound packets processed per step
_WIFI_TIMEOUT_MS = const(15000)  # restart joining after this long
_WIFI_POLL_MS = const(500)
_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_MOVING_POLL_MS = const(200)  # how often a travelling valve's feedback is read
_IDLE_MS = const(3600000)
_ANNOUNCE_MAX_MS = const(300000)  # the slowest birth re-announce while no ack comes


def _is_count(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class Meter:
    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        self.id = cfg["meter_id"]
        root = cfg["topic_root"]
        t = proto.topic
        self._t_reading = t(root, self.id, proto.READING)
        self._t_status = t(root, self.id, proto.STATUS)
        self._t_result = t(root, self.id, proto.VALVE_RESULT)
        self._t_health = t(root, self.id, proto.HEALTH)
        self._t_cmnd = t(root, self.id, proto.COMMANDS)
        self._b_valve = t(root, self.id, proto.VALVE_COMMAND).encode()
        self._b_ack = t(root, self.id, proto.ACK).encode()
        self._interval_ms = cfg["report_interval_s"] * 1000
        self._ack_timeout_ms = cfg["ack_timeout_s"] * 1000
        self._announce_first_ms = cfg["reconcile_timeout_s"] * 1000  # then doubling
        self._keepalive_ms = cfg["mqtt_keepalive_s"] * 1000
        self._replay_ms = 1000 // cfg["replay_per_s"]
        self.register = Register(cfg["pulses_per_m3"], cfg["flow_timeout_s"] * 1000, board.ticks_diff)
        self.valve = Valve(cfg["valve_default"])
        self.clock = Clock(board.ticks_diff, cfg["ntp_interval_s"], bool(cfg["ntp_host"]))
        self.alarms = FlowAlarms(cfg)
        self.outbox = None  # made in start(), with the flash ring
        self.boot = None
        self.seq = 0
        self.online = False
        self.reconciled = False  # the boot's reconcile window is closed
        self.valve_fault = False
        self._sent_this_boot = False
        self._synced = False  # the answer to this connection's birth arrived
        self._conn = 0  # this connection's number, in the birth; the answer echoes it
        self._echoes = False  # an ack echoed a conn this boot: the gateway answers births with it
        self._announced_at = 0
        self._announce_ms = 0
        self._waiting_since = 0  # last ack progress while readings are unacknowledged
        self._last_out = 0
        self._next_report = 0
        self.reading_requested = False
        self._retry_at = 0
        self._wifi_started = None
        self._backoff_ms = 0
        self._tls = cfg["mqtt_tls"]
        self.clock_wait = False  # mqtt_tls: not connecting until the clock is set
        self._rng = 1
        self._inbox = []
        self._results = []  # [id, state, ok, error, cause] to publish on stat/valve
        self._local = []  # the meter's own valve changes not yet reported (persisted)
        self._nlocal = 0
        self._moving = None  # (command id, state, deadline up_ms) while the valve travels
        self._safe_ml = 0  # register known to survive a power cut (saved, in flash, or acked)
        self._saved_at = 0  # up_ms of the last save
        self._freed = 0  # ring tail as last saved
        self._dropped0 = 0
        self._replay_at = -1000000  # replay credit starts full
        self._health_at = 0
        self._send_wait = 0
        self.stats = {
            "connects": 0, "connect_failures": 0, "disconnects": 0, "resends": 0,
            "bad_messages": 0, "inbox_dropped": 0, "commands": 0, "reconciles": 0,
            "restore_errors": 0, "save_errors": 0, "flash_errors": 0, "ntp_failures": 0, "saves": 0,
            "announces": 0, "clock_waits": 0,
        }

    # --- lifecycle ---------------------------------------------------------------------
    def start(self):
        """New boot: restore, drive the relay, find the flash ring, take reading seq 0;
        all before networking."""
        b = self.board
        self.boot = b.boot_id()
        self._rng = int(self.boot, 16) | 1
        self._conn = int(self.boot[1:], 16)  # < 2**28: a small int; differs from boot to boot
        self._restore()
        b.set_valve(self.valve.state == CLOSED)  # a blocked meter stays blocked, from the first moment
        now = b.ticks_ms()
        self.clock.tick(now)
        self.clock.set(b.epoch(), False)  # an RTC that kept time across a soft or watchdog reset
        self._open_ring()
        self.register.start(0, now)  # the counter starts at 0 at boot: every pulse it saw is water
        self._safe_ml = self.register.ml
        self._retry_at = now
        self._take_reading(now)
        # the first regular reading comes after a random part of the interval: meters that
        # boot together (a neighbourhood's power returns) must not report in lockstep forever
        half = self._interval_ms // 2
        self._next_report = b.ticks_add(now, self._interval_ms - half + self._rand() % (half + 1))

    def shutdown(self):
        """Graceful stop (before a reboot): persist, say offline, disconnect."""
        b = self.board
        self.register.sample(b.pulse_count(), b.ticks_ms())
        try:
            self.outbox.spill()  # what the gateway has not acknowledged survives the reboot
        except OSError:
            self.stats["flash_errors"] += 1
        self._save()
        if self.online:
            try:
                b.mqtt_publish(self._t_status, proto.encode_will(self.boot), True, 1)
            except OSError:
                pass
            b.mqtt_close(True)
            self.online = False

    def request_reading(self):
        """Take a reading at the next step (besides the regular schedule)."""
        self.reading_requested = True

    def step(self):
        b = self.board
        now = b.ticks_ms()
        self.clock.tick(now)
        self.register.sample(b.pulse_count(), now)
        self._check_flags()
        self._check_valve()
        if self.reading_requested or b.ticks_diff(now, self._next_report) >= 0:
            self.reading_requested = False
            self._take_reading(now)
            if b.ticks_diff(now, self._next_report) >= 0:
                self._next_report = b.ticks_add(self._next_report, self._interval_ms)
                if b.ticks_diff(now, self._next_report) >= 0:  # fell behind: skip, don't burst
                    self._next_report = b.ticks_add(now, self._interval_ms)
        self._maybe_save()
        if self.online:
            try:
                self._poll()
                self._handle_inbox(now)
                self._check_ack_timeout(now)
                self._send_wait = self._send(now)
                self._send_health()
                self._keepalive(now)
            except OSError:
                self._lost(now)
        if not self.online:
            self._connect(now)
        elif self.clock.due():
            self._sync_time()
        return self._wait(b.ticks_ms())

    # --- readings and persistence ---------------------------------------------------------------
    def _take_reading(self, now):
        b = self.board
        r = self.register
        r.sample(b.pulse_count(), now)
        e = [self.boot, self.seq, self.clock.now() or 0, r.pulses, r.ml, r.flow_mlpm, self.valve.state,
             self.clock.up_ms // 1000]
        self.seq += 1
        ob = self.outbox
        if not self.online and ob.ring is not None:  # offline: straight to flash, which also keeps the register
            try:
                ob.push(e, True)
                self._safe_ml = max(self._safe_ml, e[ML])
                return
            except OSError:
                self.stats["flash_errors"] += 1
        ob.push(e, False)

    def _maybe_save(self):
        """Persist the register once save_litres are at risk, at most every save_min_interval_s:
        this bounds both the water a power cut can cost and the flash wear."""
        cfg = self.cfg
        if (self.register.ml - self._safe_ml >= cfg["save_litres"] * 1000
                and self.clock.up_ms - self._saved_at >= cfg["save_min_interval_s"] * 1000):
            self._save()

    def _save(self):
        r = self.register
        ob = self.outbox
        ring = ob.ring if ob is not None else None
        freed = ring.tail if ring is not None else self._freed
        local = ",".join(['["%s","%s","%s"]' % (x[0], x[1], x[4]) for x in self._local])
        data = ('{"v":1,"pulses":%d,"ml":%d,"anchor_pulses":%d,"anchor_ml":%d,"ppm3":%d,"valve":"%s",'
                '"dropped":%d,"freed":%d,"local":[%s]}') % (
            r.pulses, r.ml, r.anchor_pulses, r.anchor_ml, r.ppm3, self.valve.state,
            ob.dropped if ob is not None else self._dropped0, freed, local)
        self._saved_at = self.clock.up_ms
        try:
            self.board.save(STATE_FILE, data)
        except OSError:
            self.stats["save_errors"] += 1
            return
        self.stats["saves"] += 1
        self._safe_ml = r.ml
        self._freed = freed

    def _restore(self):
        text = self.board.load(STATE_FILE)
        if text is None:
            return
        try:
            st = json.loads(text)
            vals = (st["pulses"], st["ml"], st["anchor_pulses"], st["anchor_ml"], st["ppm3"])
            for v in vals:
                if not _is_count(v):
                    raise ValueError("bad register")
            if st["valve"] not in STATES:
                raise ValueError("bad valve")
            extra = (st.get("dropped", 0), st.get("freed", 0))
            for v in extra:
                if not _is_count(v):
                    raise ValueError("bad counter")
            local = [[x[0], x[1], True, None, x[2]] for x in st.get("local", ())]
        except Exception:  # a corrupt file: start from zero, the gateway's ack reconciles
            self.stats["restore_errors"] += 1
            return
        self.register.restore(vals[0], vals[1], vals[2], vals[3], vals[4])
        self.valve.state = st["valve"]
        self._dropped0, self._freed = extra
        self._local = local
        self._results = list(local)

    def _open_ring(self):
        cap = self.cfg["ring_size"]
        ring = None
        if cap:
            try:
                f, fresh = self.board.open_ring(RING_FILE, cap * RECORD)
                ring = FlashRing(f, cap)
                if fresh:
                    ring.head = ring.tail = self._freed
                else:
                    ring.recover(self._freed)
            except OSError:
                self.stats["flash_errors"] += 1
                ring = None
        ob = Outbox(self.cfg["outbox_size"], ring)
        ob.dropped = self._dropped0
        self.outbox = ob
        if ring is not None:
            ob.load()
            # readings taken offline persist the register too: the newest may be ahead of state.json
            e = ring.read(ring.head - 1) if ring.head else None
            r = self.register
            if e is not None and e[PULSES] > r.pulses and e[ML] >= r.ml:
                r.restore(e[PULSES], e[ML], r.anchor_pulses, r.anchor_ml, r.ppm3)

    # --- flags and the valve --------------------------------------------------------------------
    def _check_flags(self):
        r = self.register
        if self.alarms.update(self.clock.up_ms, r.pulses, r.flow_mlpm):
            self._health_at = 0  # report the change now
            if self.alarms.burst and self.cfg["burst_close"] and self.valve.state != CLOSED:
                self._local_change(CLOSED, "burst")

    def _local_change(self, state, cause):
        """The meter moves its own valve: report it like a command result, with its cause,
        so the gateway takes it as the new desired state instead of undoing it."""
        self._nlocal += 1
        cid = "local-%s-%d" % (self.boot, self._nlocal)
        self.valve.apply(state, cid)
        self.board.set_valve(state == CLOSED)
        item = [cid, state, True, None, cause]
        self._local.append(item)
        self._queue_result(item)
        self._save()
        self.request_reading()

    def _check_valve(self):
        fb = self.board.valve_feedback()
        if fb is None:
            return
        m = self._moving
        if m is not None:
            if fb == (m[1] == CLOSED):
                self._moving = None
                self.request_reading()
                self._queue_result([m[0], m[1], True, None, None])
            elif self.clock.up_ms >= m[2]:
                self._moving = None
                self.valve_fault = True
                self._health_at = 0
                self._queue_result([m[0], m[1], False, "valve_feedback: valve not %s after %d s" % (
                    m[1], self.cfg["valve_travel_s"]), None])
            return
        fault = fb != (self.valve.state == CLOSED)
        if fault != self.valve_fault:
            self.valve_fault = fault
            self._health_at = 0

    def alarm_list(self):
        out = []
        if self.alarms.leak:
            out.append("leak")
        if self.alarms.burst:
            out.append("burst")
        if self.valve_fault:
            out.append("valve_fault")
        return out

    # --- connectivity ---------------------------------------------------------------------------
    def _rand(self):
        x = self._rng
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._rng = x
        return x

    def _next_backoff(self):
        """Capped exponential backoff with equal jitter: [b/2, b]."""
        b = self._backoff_ms * 2
        if b < _BACKOFF_MIN_MS:
            b = _BACKOFF_MIN_MS
        if b > _BACKOFF_MAX_MS:
            b = _BACKOFF_MAX_MS
        self._backoff_ms = b
        half = b // 2
        return half + self._rand() % (half + 1)

    def _sync_time(self):
        b = self.board
        try:
            t = b.ntp_time(self.cfg["ntp_host"])
        except OSError:
            self.stats["ntp_failures"] += 1
            self.clock.failed()
            return
        first = self.clock.now() is None
        if self.clock.set(t, True) and first:
            try:
                self.outbox.stamp(self.boot, t, self.clock.up_ms // 1000)
            except OSError:
                self.stats["flash_errors"] += 1

    def _connect(self, now):
        b = self.board
        if b.ticks_diff(now, self._retry_at) < 0:
            return
        if not b.wifi_connected():
            if self._wifi_started is None or b.ticks_diff(now, self._wifi_started) >= _WIFI_TIMEOUT_MS:
                self._wifi_started = now
                try:
                    b.wifi_connect()
                except OSError:
                    pass
            if not b.wifi_connected():
                self._retry_at = b.ticks_add(now, _WIFI_POLL_MS)
                return
        self._wifi_started = None
        if self.clock.due():
            self._sync_time()
        if self._tls and self.clock.now() is None:
            self._wait_for_clock(now)
            return
        if self.clock_wait:
            self.clock_wait = False
            print("aquameter: clock set, connecting over TLS")
        self._conn = (self._conn + 1) & 0x3FFFFFFF
        try:
            b.mqtt_connect(self._t_status, proto.encode_will(self.boot), self._on_message)
            b.mqtt_subscribe(self._t_cmnd, 1)
            self._publish_results()  # before the birth: the gateway must not undo a local change
            self._announce(now)
        except OSError:
            b.mqtt_close(False)
            self.stats["connect_failures"] += 1
            self._retry_at = b.ticks_add(now, self._next_backoff())
            return
        self.online = True
        self.stats["connects"] += 1
        self._backoff_ms = 0
        self._announce_ms = self._announce_first_ms
        self._synced = False
        self._last_out = now
        self._waiting_since = now
        self._health_at = 0
        self.outbox.rewind()  # whatever was unacknowledged goes again (the gateway dedupes)

    def _wait_for_clock(self, now):
        """TLS without a clock: a handshake would fail on the certificate dates. Wait for NTP
        (its backoff: 1 min doubling to 5 min while unset); readings go to the flash ring."""
        if not self.clock_wait:
            self.clock_wait = True
            self.stats["clock_waits"] += 1
            print("aquameter: mqtt_tls: not connecting until NTP (%s) sets the clock" % self.cfg["ntp_host"])
        self._retry_at = self.board.ticks_add(now, max(self.clock.next_in(), _WIFI_POLL_MS))

    def _lost(self, now):
        self.board.mqtt_close(False)
        self.online = False
        self.stats["disconnects"] += 1
        self._retry_at = self.board.ticks_add(now, self._next_backoff())
        try:
            self.outbox.spill()  # unacknowledged readings wait in flash
        except OSError:
            self.stats["flash_errors"] += 1

    def _keepalive(self, now):
        if self._keepalive_ms and self.board.ticks_diff(now, self._last_out) >= self._keepalive_ms // 2:
            self.board.mqtt_ping()
            self._last_out = now

    # --- inbound ------------------------------------------------------------------------------
    def _on_message(self, topic, msg):
        """MQTT callback: only queue (it may run inside a publish waiting for PUBACK)."""
        if len(self._inbox) >= _INBOX_MAX:
            self._inbox.pop(0)
            self.stats["inbox_dropped"] += 1
        self._inbox.append((topic, msg))

    def _poll(self):
        for _ in range(_POLL_BUDGET):
            if self.board.mqtt_check_msg() is None:
                break

    def _handle_inbox(self, now):
        while self._inbox:
            topic, msg = self._inbox.pop(0)
            if isinstance(topic, str):
                topic = topic.encode()
            if topic == self._b_ack:
                self._handle_ack(msg, now)
            elif topic == self._b_valve:
                self._handle_command(msg, now)
            else:
                self.stats["bad_messages"] += 1

    def _handle_command(self, msg, now):
        cmd_id, state, err = proto.decode_valve_command(msg)
        if cmd_id is None:
            self.stats["bad_messages"] += 1
            return
        self.stats["commands"] += 1
        if err:
            self._queue_result([cmd_id, self.valve.state, False, err, None])
            return
        if self._moving is not None and self._moving[0] == cmd_id:
            return  # the answer comes when the valve gets there
        known = self.valve.seen(cmd_id)
        if known is not None:  # a duplicate: answer as before, never re-actuate
            self._queue_result([cmd_id, known, True, None, None])
            return
        before = self.valve.state
        after = self.valve.apply(state, cmd_id)
        if after != before:
            self.board.set_valve(after == CLOSED)
            self._save()  # a blocked meter stays blocked across a power cut
        if self.board.valve_feedback() is not None:
            self._moving = (cmd_id, after, self.clock.up_ms + self.cfg["valve_travel_s"] * 1000)
            return
        self._queue_result([cmd_id, after, True, None, None])
        self._take_reading(now)  # reports the new valve state right behind the answer

    def _handle_ack(self, msg, now):
        fields, err = proto.decode_ack(msg)
        if err:
            self.stats["bad_messages"] += 1
            return
        if not self.reconciled and not self._sent_this_boot:
            dp, dml = self.register.reconcile(fields["pulses"], fields["ml"])
            if dp or dml:
                try:
                    self.outbox.rebase(self.boot, dp, self.register.ml_at)
                except OSError:
                    self.stats["flash_errors"] += 1
                self.stats["reconciles"] += 1
                self._save()
            self.reconciled = True
        conn = fields["conn"]
        if conn is not None:  # the answer to a birth: to this connection's, or a late one
            self._echoes = True
            if conn == self._conn:
                self._synced = True
        elif not self._echoes:  # a gateway that does not echo conn: any ack answers the birth
            self._synced = True
        boot = fields["boot"]
        if boot is not None:
            if self.outbox.ack(boot, fields["seq"]):
                self._waiting_since = now
            if boot == self.boot and fields["ml"] > self._safe_ml:
                self._safe_ml = fields["ml"]  # the gateway holds it: a power cut cannot lose it
        ring = self.outbox.ring
        if ring is not None and not len(ring) and ring.tail != self._freed:
            self._save()  # the ring drained: don't replay it all after the next reboot

    # --- outbound -----------------------------------------------------------------------------
    def _queue_result(self, item):
        if len(self._results) >= _RESULTS_MAX:
            self._results.pop(0)
        self._results.append(item)

    def _publish_results(self):
        while self._results:
            x = self._results[0]
            self.board.mqtt_publish(self._t_result, proto.encode_valve_result(x[0], x[1], x[2], x[3], x[4]),
                                    False, 1)
            self._results.pop(0)
            if x in self._local:
                self._local.remove(x)
                self._save()
            self._last_out = self.board.ticks_ms()

    def _announce(self, now):
        """The retained birth; the gateway answers every birth with an ack."""
        self.board.mqtt_publish(self._t_status, proto.encode_birth(self.boot, VERSION, self.valve.state, self._conn),
                                True, 1)
        self._announced_at = now
        self._last_out = now

    def _send(self, now):
        """Publish results, then readings in order; returns ms until it can go on."""
        self._publish_results()
        if not self._synced:  # no answer to this connection's birth yet: the gateway may not be listening
            left = self._announce_ms - self.board.ticks_diff(now, self._announced_at)
            if left > 0:
                return left
            self._announce(now)  # its ack (QoS 0) was lost, or the gateway was away
            self.stats["announces"] += 1
            self._announce_ms = min(self._announce_ms * 2, _ANNOUNCE_MAX_MS)
            return self._announce_ms
        ob = self.outbox
        up = self.clock.up_ms
        for _ in range(_SEND_BUDGET):
            p = ob.peek()
            if p is None:
                return _IDLE_MS
            e, flash = p
            if not e[TS]:  # taken before the clock was set
                if e[BOOT] == self.boot:
                    return self.clock.next_in()  # hold until NTP answers
                if ob.sent:
                    return _IDLE_MS  # an earlier boot's: dropped once the acks make it the oldest
                ob.drop(1)
                continue
            if flash:  # replay from flash at replay_per_s, with at most 1 s of credit
                t = max(self._replay_at, up - 1000) + self._replay_ms
                if t > up:
                    return t - up
                self._replay_at = t
            if ob.sent == 0:
                self._waiting_since = now
            self.board.mqtt_publish(self._t_reading, proto.encode_reading(
                e[0], e[1], e[2], e[3], e[4], e[5], e[6]), False, 1)
            ob.mark_sent()
            self._last_out = now
            if e[BOOT] == self.boot:
                self._sent_this_boot = True
                self.reconciled = True
        return 0

    def _send_health(self):
        up = self.clock.up_ms
        if up < self._health_at:
            return
        b = self.board
        b.mqtt_publish(self._t_health, proto.encode_health(
            self.boot, VERSION, up // 1000, b.reset_cause(), b.rssi(), b.heap_free(), self.outbox.dropped,
            len(self.outbox), self.clock.state(), self.alarm_list()), False, 0)
        self._health_at = up + self.cfg["health_interval_s"] * 1000

    def _check_ack_timeout(self, now):
        if self.outbox.sent and self.board.ticks_diff(now, self._waiting_since) >= self._ack_timeout_ms:
            self.outbox.rewind()
            self.stats["resends"] += 1
            self._waiting_since = now

    def _wait(self, now):
        b = self.board
        if self._inbox or self.reading_requested:
            return 0
        w = b.ticks_diff(self._next_report, now)
        if self._moving is not None:
            w = min(w, _MOVING_POLL_MS)
        if self.online:
            up = self.clock.up_ms
            w = min(w, b.poll_ms, self._health_at - up, self.clock.next_in())
            ob = self.outbox
            if self._results:
                return 0
            w = min(w, self._send_wait)
            if ob.sent:
                w = min(w, self._ack_timeout_ms - b.ticks_diff(now, self._waiting_since))
            if self._keepalive_ms:
                w = min(w, self._keepalive_ms // 2 - b.ticks_diff(now, self._last_out))
        else:
            w = min(w, b.ticks_diff(self._retry_at, now))
        return w if w > 0 else 0


def run(meter, board, cfg):
    """The device's main loop. Only a step that returned feeds the watchdog: a network call
    that hangs starves it and the chip resets (the register and the ring are on flash)."""
    wdt_ms = cfg["watchdog_s"] * 1000
    board.watchdog_start(wdt_ms)
    nap = wdt_ms // 4 if wdt_ms else 60000
    try:
        while True:
            wait = meter.step()
            board.watchdog_feed()
            board.sleep_ms(min(wait, nap))
    except KeyboardInterrupt:  # Ctrl-C at the REPL (mpremote): maintenance
        board.watchdog_hold(cfg["maintenance_s"] * 1000)
        meter.shutdown()
        print("aquameter stopped; the watchdog resets the board in %d s" % cfg["maintenance_s"])
    except Exception as e:  # a bug: keep the register, then start over
        print("fatal:", repr(e))
        try:
            meter.shutdown()
        finally:
            board.reset()
