"""The meter application: a steppable state machine, no loops, no hardware imports.

    meter = Meter(board, cfg)
    meter.start()
    while True:
        board.sleep_ms(meter.step())

step() does one bounded slice of work and returns the milliseconds until it wants to
run again. Time comes only from the board (ticks_ms/ticks_diff/ticks_add, epoch).

What one step does, in order:
  1. sample the pulse register; queue a reading when one is due (every
     report_interval_s, the first one after a random 1/2..1 of it so that meters booted
     together spread out; right after a valve command; when request_reading() asked);
  2. online: poll inbound MQTT (the callback only queues), handle valve commands
     and acks, resend after ack_timeout_s without progress, send unsent readings in
     (boot, seq) order at QoS 1, ping when idle;
  3. offline: join Wi-Fi (non-blocking), then connect MQTT with a retained last
     will, subscribe <root>/<id>/cmnd/#, publish the retained birth; failures back
     off exponentially (capped) with jitter.

After each connect the meter holds its readings until the gateway's ack to the birth
arrives (or reconcile_timeout_s passes): that ack frees what the gateway already has,
and, right after boot, carries the register the meter reconciles with before its
first reading of the new boot goes out.
"""

try:
    import json
except ImportError:
    import ujson as json

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

from aquameter import VERSION
from aquameter import protocol as proto
from aquameter.outbox import Outbox, BOOT
from aquameter.register import Register
from aquameter.valve import Valve, CLOSED, STATES

STATE_FILE = "state.json"
_INBOX_MAX = const(16)  # inbound messages queued between two polls
_SEND_BUDGET = const(8)  # readings published per step
_POLL_BUDGET = const(8)  # inbound packets processed per step
_WIFI_TIMEOUT_MS = const(15000)  # restart joining after this long
_WIFI_POLL_MS = const(500)
_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)


def _is_count(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class Meter:
    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        self.id = cfg["meter_id"]
        root = cfg["topic_root"]
        self._t_reading = proto.reading_topic(root, self.id)
        self._t_status = proto.status_topic(root, self.id)
        self._t_result = proto.valve_result_topic(root, self.id)
        self._t_cmnd = proto.command_filter(root, self.id)
        self._b_valve = proto.valve_command_topic(root, self.id).encode()
        self._b_ack = proto.ack_topic(root, self.id).encode()
        self._interval_ms = cfg["report_interval_s"] * 1000
        self._ack_timeout_ms = cfg["ack_timeout_s"] * 1000
        self._hold_ms = cfg["reconcile_timeout_s"] * 1000
        self._keepalive_ms = cfg["mqtt_keepalive_s"] * 1000
        self.register = Register(cfg["pulses_per_m3"], cfg["flow_timeout_s"] * 1000, board.ticks_diff)
        self.valve = Valve(cfg["valve_default"])
        self.outbox = Outbox(cfg["outbox_size"])
        self.boot = None
        self.seq = 0
        self.online = False
        self.reconciled = False  # the boot's reconcile window is closed
        self._sent_this_boot = False
        self._synced = False  # an ack arrived since the last connect
        self._connected_at = 0
        self._waiting_since = 0  # last ack progress while readings are unacknowledged
        self._last_out = 0
        self._next_report = 0
        self.reading_requested = False
        self._retry_at = 0
        self._wifi_started = None
        self._backoff_ms = 0
        self._rng = 1
        self._inbox = []
        self.stats = {
            "connects": 0, "connect_failures": 0, "disconnects": 0, "resends": 0,
            "bad_messages": 0, "inbox_dropped": 0, "commands": 0, "reconciles": 0,
            "restore_errors": 0, "save_errors": 0,
        }

    # --- lifecycle ---------------------------------------------------------------------
    def start(self):
        """New boot: restore, drive the relay, take reading seq 0; all before networking."""
        b = self.board
        self.boot = b.boot_id()
        self._rng = int(self.boot, 16) | 1
        self._restore()
        b.set_valve(self.valve.state == CLOSED)
        now = b.ticks_ms()
        self.register.start(0, now)  # the counter starts at 0 at boot: every pulse it saw is water
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
        self.register.sample(b.pulse_count(), now)
        if self.reading_requested or b.ticks_diff(now, self._next_report) >= 0:
            self.reading_requested = False
            self._take_reading(now)
            if b.ticks_diff(now, self._next_report) >= 0:
                self._next_report = b.ticks_add(self._next_report, self._interval_ms)
                if b.ticks_diff(now, self._next_report) >= 0:  # fell behind: skip, don't burst
                    self._next_report = b.ticks_add(now, self._interval_ms)
        if self.online:
            try:
                self._poll()
                self._handle_inbox(now)
                self._check_ack_timeout(now)
                self._send(now)
                self._keepalive(now)
            except OSError:
                self._lost(now)
        if not self.online:
            self._connect(now)
        return self._wait(b.ticks_ms())

    # --- readings and persistence ---------------------------------------------------------------
    def _take_reading(self, now):
        b = self.board
        r = self.register
        r.sample(b.pulse_count(), now)
        self.outbox.push([self.boot, self.seq, b.epoch(), r.pulses, r.ml, r.flow_mlpm, self.valve.state])
        self.seq += 1
        self._save()

    def _save(self):
        r = self.register
        data = '{"v":1,"pulses":%d,"ml":%d,"anchor_pulses":%d,"anchor_ml":%d,"ppm3":%d,"valve":"%s"}' % (
            r.pulses, r.ml, r.anchor_pulses, r.anchor_ml, r.ppm3, self.valve.state)
        try:
            self.board.save(STATE_FILE, data)
        except OSError:
            self.stats["save_errors"] += 1

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
        except Exception:  # a corrupt file: start from zero, the gateway's ack reconciles
            self.stats["restore_errors"] += 1
            return
        self.register.restore(vals[0], vals[1], vals[2], vals[3], vals[4])
        self.valve.state = st["valve"]

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
        try:
            b.mqtt_connect(self._t_status, proto.encode_will(self.boot), self._on_message)
            b.mqtt_subscribe(self._t_cmnd, 1)
            b.mqtt_publish(self._t_status, proto.encode_birth(self.boot, VERSION, self.valve.state), True, 1)
        except OSError:
            b.mqtt_close(False)
            self.stats["connect_failures"] += 1
            self._retry_at = b.ticks_add(now, self._next_backoff())
            return
        self.online = True
        self.stats["connects"] += 1
        self._backoff_ms = 0
        self._connected_at = now
        self._synced = False
        self._last_out = now
        self._waiting_since = now
        self.outbox.rewind()  # whatever was unacknowledged goes again (the gateway dedupes)

    def _lost(self, now):
        self.board.mqtt_close(False)
        self.online = False
        self.stats["disconnects"] += 1
        self._retry_at = self.board.ticks_add(now, self._next_backoff())

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
        b = self.board
        self.stats["commands"] += 1
        if err:
            self._publish_result(cmd_id, self.valve.state, False, err)
            return
        known = self.valve.seen(cmd_id)
        if known is not None:  # a duplicate: answer as before, never re-actuate
            self._publish_result(cmd_id, known, True, None)
            return
        before = self.valve.state
        after = self.valve.apply(state, cmd_id)
        if after != before:
            b.set_valve(after == CLOSED)
        self._take_reading(now)  # persists the new valve state and reports it
        self._publish_result(cmd_id, after, True, None)

    def _publish_result(self, cmd_id, state, ok, err):
        self.board.mqtt_publish(self._t_result, proto.encode_valve_result(cmd_id, state, ok, err), False, 1)
        self._last_out = self.board.ticks_ms()

    def _handle_ack(self, msg, now):
        fields, err = proto.decode_ack(msg)
        if err:
            self.stats["bad_messages"] += 1
            return
        if not self.reconciled and not self._sent_this_boot:
            dp, dml = self.register.reconcile(fields["pulses"], fields["ml"])
            if dp or dml:
                self.outbox.rebase(self.boot, dp, dml)
                self.stats["reconciles"] += 1
                self._save()
            self.reconciled = True
        self._synced = True
        if fields["boot"] is not None and self.outbox.ack(fields["boot"], fields["seq"]):
            self._waiting_since = now

    # --- outbound -----------------------------------------------------------------------------
    def _may_send(self, now):
        return self._synced or self.board.ticks_diff(now, self._connected_at) >= self._hold_ms

    def _send(self, now):
        if not self._may_send(now):
            return
        ob = self.outbox
        for _ in range(_SEND_BUDGET):
            e = ob.peek_unsent()
            if e is None:
                return
            if ob.unacked() == 0:
                self._waiting_since = now
            self.board.mqtt_publish(self._t_reading, proto.encode_reading(
                e[0], e[1], e[2], e[3], e[4], e[5], e[6]), False, 1)
            ob.mark_sent()
            self._last_out = now
            if e[BOOT] == self.boot:
                self._sent_this_boot = True
                self.reconciled = True

    def _check_ack_timeout(self, now):
        if self.outbox.unacked() and self.board.ticks_diff(now, self._waiting_since) >= self._ack_timeout_ms:
            self.outbox.rewind()
            self.stats["resends"] += 1
            self._waiting_since = now

    def _wait(self, now):
        b = self.board
        if self._inbox or self.reading_requested:
            return 0
        w = b.ticks_diff(self._next_report, now)
        if self.online:
            w = min(w, b.poll_ms)
            ob = self.outbox
            if ob.unsent():
                if self._may_send(now):
                    return 0
                w = min(w, self._hold_ms - b.ticks_diff(now, self._connected_at))
            if ob.unacked():
                w = min(w, self._ack_timeout_ms - b.ticks_diff(now, self._waiting_since))
            if self._keepalive_ms:
                w = min(w, self._keepalive_ms // 2 - b.ticks_diff(now, self._last_out))
        else:
            w = min(w, b.ticks_diff(self._retry_at, now))
        return w if w > 0 else 0
