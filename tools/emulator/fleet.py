"""A fleet of emulated meters: the real firmware on CPython against a real broker.

Each EmulatedMeter runs the unmodified `aquameter` package (Board + Meter) with its own
stand-ins for machine, network and umqtt.simple. A Scheduler runs every meter's step()
when it asked to run again (a heap of deadlines served by a few worker threads); an
inbound MQTT message or a lost link wakes its meter at once, so a valve command is
applied within milliseconds. Idle workers sleep on a condition variable.

The water a meter's sensor sees comes from usage.MeterUsage (seeded, reproducible), cut
by the meter's own valve (a closed valve delivers nothing) and by power (pulses while
the meter is off are never counted). The ground truth is what the sensor emitted while
powered: exact integers, with ml = pulses * 1_000_000 // pulses_per_m3, the firmware's
own integer rule.

Two ways the sensor reaches the firmware, whichever the firmware's HAL sets up: the
hardware counter (machine.Counter reads the line's count), or, when the firmware hooks
an interrupt on the pulse pin (a reed contact, pulse_min_gap_ms > 0), edges: each pulse
is a contact closure that bounces, stays closed, and bounces again as it opens
(ReedContact, seeded), delivered to the handler before every step.

Each meter also has an RTC (lost at power-on, kept across resets) that its `ntptime`
stand-in sets from the simulated clock, and reports the reset cause of its boot.

Meters are invented (ids and common settings) or provisioned: Fleet.from_meters_dir runs
each `<id>/config.json` of a folder with its own settings (meters_dir.py reads them).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import shutil
import tempfile
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Callable

from aquameter import config as fw_config
from aquameter.app import Meter
from aquameter.hal import Board

from .clock import MicroTime, Rtc, SimClock
from .meters_dir import load as meters_dir_load
from .netloop import NetLoop
from .standins import Machine, MachineReset, MQTTClient, MQTTHooks, Network, Ntp
from .usage import MeterUsage, Profile, assign_profiles

log = logging.getLogger("aquafog.emulator")

EMULATOR_POLL_MS = 3_600_000  # inbound messages wake a meter; no need to poll
REPORT_HOLD_MS = 86_400_000  # a quiesced meter's next regular reading: a simulated day later


class WaterLine:
    """The pipe through one meter: demand from the usage model, cut by valve and power.

    All reads happen under one lock with a non-decreasing time, so the counter the
    firmware reads and the ground truth are the same monotonic integer sequence.
    """

    def __init__(self, usage: MeterUsage, pulses_per_m3: int):
        self.usage = usage
        self.ppm3 = pulses_per_m3
        self.lock = threading.Lock()
        self.last_t = usage.origin
        self._last_demand = 0
        self.stop_t: float | None = None
        self._blocked = 0  # demand pulses not delivered while the valve was closed
        self._closed_at: int | None = None  # demand when the valve closed
        self._unpowered = 0  # delivered pulses while the meter was off
        self._off_at: int | None = 0  # delivered pulses at power-off (off until the first power-on)
        self.boot_base = 0  # delivered pulses when the current boot's counter started

    def _demand(self, t: float) -> int:
        t = max(t, self.last_t)
        if self.stop_t is not None:
            t = min(t, self.stop_t)
        self.last_t = max(self.last_t, t)
        p = max(self._last_demand, self.usage.pulses(t, self.ppm3))
        self._last_demand = p
        return p

    def _delivered(self, t: float) -> int:
        p = self._demand(t)
        if self._closed_at is not None:
            p = self._closed_at
        return p - self._blocked

    def counted(self, t: float) -> int:
        """Pulses a meter powered all along would have counted minus those it could not."""
        with self.lock:
            d = self._delivered(t) if self._off_at is None else self._off_at
            return d - self._unpowered

    def counter(self, t: float) -> int:
        """The hardware counter of the current boot."""
        with self.lock:
            return self._delivered(t) - self.boot_base

    def set_closed(self, closed: bool, t: float) -> None:
        with self.lock:
            if closed and self._closed_at is None:
                self._closed_at = self._demand(t)
            elif not closed and self._closed_at is not None:
                self._blocked += self._demand(t) - self._closed_at
                self._closed_at = None

    def power_off(self, t: float, delivered: int | None = None) -> None:
        """`delivered`: the value the last counter read saw (graceful: the chip resets
        right after the firmware saved it)."""
        with self.lock:
            if self._off_at is None:
                self._off_at = self._delivered(t) if delivered is None else delivered

    def power_on(self, t: float) -> None:
        with self.lock:
            d = self._delivered(t)
            if self._off_at is not None:
                self._unpowered += d - self._off_at
                self._off_at = None
            self.boot_base = d

    def stop(self, t: float) -> None:
        with self.lock:
            self.stop_t = max(t, self.last_t)

    def pulse_times(self, first: int, last: int, lo: float) -> list[float]:
        """When the current boot's counter reached first+1 .. last (values it already
        returned): where the usage curve crossed those pulses, none before `lo`.

        Counter value c is demand pulse c + boot_base + blocked: the valve changes only in
        a firmware step, after the edges before it were delivered, so `blocked` is the
        same for every pulse delivered since (closing freezes it, opening adds to it
        before any new pulse comes)."""
        out = []
        with self.lock:  # the usage model fills its caches lazily: one reader at a time
            offset = self.boot_base + self._blocked
            hi = max(self.last_t, lo)  # the counter was read at last_t: every counted pulse is before it
            for c in range(first + 1, last + 1):
                target = c + offset
                a, b = lo, hi
                if self.usage.pulses(a, self.ppm3) < target:
                    while True:  # smallest b with pulses(b) >= target, to float resolution
                        m = (a + b) / 2
                        if not a < m < b:
                            break
                        if self.usage.pulses(m, self.ppm3) >= target:
                            b = m
                        else:
                            a = m
                else:
                    b = a
                out.append(b)
                lo = b
        return out


@dataclass(frozen=True)
class ReedContact:
    """A reed switch that closes once per pulse (idle high on the pull-up, closed = 0).

    Per pulse: the closing edge, then `bounces` (a seeded count in that range) open/close
    pairs within `bounce_ms`; the contact stays closed for `closed_ms`; it opens with as
    many pairs of chatter again. Chatter shorter than pulse_min_gap_ms and a pulse period
    longer than closed_ms + 2 * bounce_ms + the gap are what the firmware's filter needs
    (a reed household meter: 1 pulse per litre, a pulse every few seconds at most).
    """

    bounces: tuple[int, int] = (2, 6)
    bounce_ms: float = 4.0
    closed_ms: float = 50.0

    def __post_init__(self):
        lo, hi = self.bounces
        if not 0 <= lo <= hi or 2 * hi > self.bounce_ms * 1000:
            raise ValueError("bounces: need 0 <= lo <= hi and 2 * hi distinct microseconds within bounce_ms")
        if not 0 < self.bounce_ms < self.closed_ms:
            raise ValueError("bounce_ms: must be > 0 and < closed_ms (the chatter ends before the contact opens)")

    def edges(self, t0_us: int, rng: random.Random) -> list[tuple[int, int]]:
        """(elapsed_us, level) of one pulse whose contact closes at t0_us."""
        span = int(self.bounce_ms * 1000)
        out = [(t0_us, 0)]
        for i, dt in enumerate(sorted(rng.sample(range(1, span + 1), 2 * rng.randint(*self.bounces)))):
            out.append((t0_us + dt, 1 - i % 2))  # 1, 0, 1, 0 ... ends closed
        t1 = t0_us + int(self.closed_ms * 1000)
        out.append((t1, 1))
        for i, dt in enumerate(sorted(rng.sample(range(1, span + 1), 2 * rng.randint(*self.bounces)))):
            out.append((t1 + dt, i % 2))  # 0, 1, 0, 1 ... ends open
        return out


class EmulatedMeter:
    def __init__(self, fleet: "Fleet", meter_id: str, cfg: dict, usage: MeterUsage, fs_dir: Path):
        self.fleet = fleet
        self.id = meter_id
        self.cfg = cfg
        self.usage = usage
        self.profile: Profile = usage.profile
        self.fs_dir = fs_dir
        self.line = WaterLine(usage, cfg["pulses_per_m3"])
        # every reading published (resends included); "taken": the simulated time of the step
        # that took it, the time its "ts" should say
        self.sent: list[dict] = []
        # injected copies of readings (Fleet duplicate_prob), {"boot", "seq"} each: not in `sent`
        self.copies: list[dict] = []
        self._taken: dict[tuple[str, int], float] = {}
        self._step: tuple[str, int, float] | None = None  # (boot, seq, simulated time) at the running step's start
        self.boots: list[str] = []
        self.errors: list[str] = []
        self.powered = False
        self.link_up = True
        self.ntp_fails = False  # True: this meter's NTP requests time out
        self.rtc = Rtc(fleet.clock)
        self.edges_delivered = 0  # contact edges the pulse pin's interrupt handler ran for (all boots)
        self.app: Meter | None = None
        self.board: Board | None = None
        self.client: MQTTClient | None = None
        self.step_lock = threading.RLock()
        self._rng = random.Random("dup:%d:%s" % (fleet.seed, meter_id))
        self._reed_rng = random.Random("reed:%d:%s" % (fleet.seed, meter_id))
        self._last_counter = 0
        self._relay_energised = False
        self._time: MicroTime | None = None
        # edge delivery (the interrupt path), per boot
        self._irq_pin = None
        self._edges: deque = deque()  # (elapsed_us, level, closes): pending, in time order
        self._pulses_made = 0  # counter values turned into edges
        self._last_pulse_t = 0.0
        self._edges_end = 0  # elapsed_us of the last edge made
        # scheduler bookkeeping (guarded by the scheduler's lock)
        self.due: float | None = None
        self.running = False
        self.wake_pending = False

    # --- what tests read --------------------------------------------------------------
    @property
    def relay_closed(self) -> bool:
        """The valve as the relay drives it (a powered-off relay is released: open)."""
        return self.powered and self._relay_energised

    @property
    def valve(self) -> str | None:
        return self.app.valve.state if (self.app and self.powered) else None

    @property
    def outbox_depth(self) -> int:
        return len(self.app.outbox) if (self.app and self.powered) else 0

    @property
    def online(self) -> bool:
        return bool(self.powered and self.app and self.app.online and self.client and self.client.connected)

    @property
    def boot(self) -> str | None:
        return self.app.boot if self.app else None

    # --- stand-in wiring ------------------------------------------------------------------
    def _read_counter(self) -> int:
        v = self.line.counter(self.fleet.clock.now())
        self._last_counter = v
        return v

    def _irq_set(self, pin) -> None:
        if pin.id == self.cfg["pulse_pin"]:
            self._irq_pin = pin if pin.irq_handler is not None else None

    def _deliver_edges(self, until_us: int | None = None) -> None:
        """Run the pulse pin's interrupt handler for every contact edge up to now (or up
        to `until_us`, simulated microseconds from the start), in time order, with
        ticks_us reading each edge's own time. Only on the interrupt path (the firmware
        hooked the pin); the counter path reads the line directly. Called before every
        step and whenever the main loop reads ticks_us (a chip runs the handlers as the
        edges come, so the main loop never sees a time before an unhandled edge)."""
        pin = self._irq_pin
        if pin is None:
            return
        clock = self.fleet.clock
        now = clock.now() if until_us is None else clock.start_epoch + until_us / 1_000_000
        c = self.line.counter(now)
        if c > self._pulses_made:
            for t in self.line.pulse_times(self._pulses_made, c, self._last_pulse_t):
                t0 = max(clock.elapsed_us(t), self._edges_end + 1)  # it cannot close before it opened
                edges = self.fleet.reed.edges(t0, self._reed_rng)
                self._edges.extend((e, level, i == 0) for i, (e, level) in enumerate(edges))
                self._edges_end = edges[-1][0]
                self._last_pulse_t = t
            self._pulses_made = c
        now_us = clock.elapsed_us(now) if until_us is None else until_us
        while self._edges and self._edges[0][0] <= now_us:
            t_us, level, closes = self._edges.popleft()
            if closes:
                self._last_counter += 1  # pulses of this boot the firmware has seen
            if pin.drive(level):
                self._time.irq_us = t_us
                try:
                    pin.irq_handler(pin)
                finally:
                    self._time.irq_us = None
                self.edges_delivered += 1

    def _pin_changed(self, pin) -> None:
        if pin.id != self.cfg["relay_pin"]:
            return
        energised = (pin.value() == 1) == self.cfg["relay_active_high"]
        self._relay_energised = energised
        self.line.set_closed(energised, self.fleet.clock.now())

    def _mqtt_factory(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        hooks = MQTTHooks(wake=self._wake, on_publish=self._on_publish, link_up=lambda: self.link_up,
                          duplicate=self._duplicate, on_duplicate=self._on_duplicate, net=self.fleet.net)
        self.client = MQTTClient(client_id, server, port, user, password, keepalive, ssl, hooks=hooks)
        return self.client

    def _duplicate(self) -> bool:
        p = self.fleet.duplicate_prob
        return p > 0 and self._rng.random() < p

    def _on_duplicate(self, topic: str, payload: bytes) -> None:
        if topic.endswith("/tele/reading"):
            r = json.loads(payload)
            self.copies.append({"boot": r["boot"], "seq": r["seq"]})

    def _wake(self) -> None:
        self.fleet.scheduler.wake(self)

    def _on_publish(self, topic: str, payload: bytes) -> None:
        if not topic.endswith("/tele/reading"):
            return
        r = json.loads(payload, parse_float=Decimal)
        self.sent.append({"boot": r["boot"], "seq": r["seq"], "ts": r["ts"], "pulses": r["pulses"],
                          "ml": int(r["litres"] * 1000), "flow_mlpm": int(r["flow"] * 1000), "valve": r["valve"],
                          "taken": self._taken_at(r["boot"], r["seq"])})

    # --- lifecycle (each under the step lock, so never in the middle of a step) ---------------------
    def power_on(self) -> None:
        self._boot(Machine.PWRON_RESET)

    def _boot(self, cause: int) -> None:
        """Start a boot. `cause`: PWRON_RESET after power was off (the RTC starts over at
        2000-01-01); HARD_RESET after machine.reset() or main.py's reset after a crash (the
        ESP32 port's ESP_RST_SW; the RTC keeps its time)."""
        with self.step_lock:
            if self.powered:
                return
            now = self.fleet.clock.now()
            self.line.power_on(now)
            if cause == Machine.PWRON_RESET:
                self.rtc.power_on()
            self._last_counter = 0
            self._relay_energised = False
            self._irq_pin = None
            self._edges.clear()
            self._pulses_made = 0
            self._last_pulse_t = now
            self._edges_end = self.fleet.clock.elapsed_us(now)
            self._time = MicroTime(self.fleet.clock, self.rtc)
            self._time.edges_until = self._deliver_edges
            machine = Machine(self._read_counter, self._pin_changed, self.id.encode()[:6].ljust(6, b"\0"),
                              reset_cause=cause, irq_set=self._irq_set)
            ntp = Ntp(lambda: self.rtc.set(self.fleet.clock.now()), lambda: self.link_up and not self.ntp_fails,
                      self._time.sleep_ms)
            self.board = Board(self.cfg, machine=machine, network=Network(lambda: self.link_up),
                               mqtt_client=self._mqtt_factory, clock=self._time,
                               fs_root=str(self.fs_dir), poll_ms=EMULATOR_POLL_MS, ntp=ntp)
            self.app = Meter(self.board, self.cfg)
            self.powered = True
            self.app.start()
            self.boots.append(self.app.boot)
            self._note_taken(0, now)
        self.fleet.scheduler.wake(self)

    def power_off(self) -> None:
        """Abrupt: the link drops (the broker publishes the will), RAM is lost."""
        with self.step_lock:
            if not self.powered:
                return
            self.powered = False
            if self.client is not None:
                self.client.cut()
            self.board.close()
            self.line.power_off(self.fleet.clock.now())
            self._relay_energised = False
            self.line.set_closed(False, self.fleet.clock.now())

    def reboot(self) -> None:
        """Graceful: the firmware's shutdown() (persist, offline status, disconnect), then
        machine.reset() (as main.py after a crash): a new boot."""
        with self.step_lock:
            if not self.powered:
                return
            self._deliver_edges()
            self.app.shutdown()
            self.powered = False
            if self.client is not None:
                self.client.cut()  # no-op after a clean disconnect
            self.board.close()
            # the chip resets right after shutdown() saved what it last read
            self.line.power_off(self.fleet.clock.now(), delivered=self.line.boot_base + self._last_counter)
            self._relay_energised = False
            self.line.set_closed(False, self.fleet.clock.now())
            self._boot(Machine.HARD_RESET)

    def net_down(self) -> None:
        """The meter's network disappears: Wi-Fi drops, the broker sees the link die."""
        with self.step_lock:
            self.link_up = False
            if self.client is not None:
                self.client.cut()
        self._wake()

    def net_up(self) -> None:
        self.link_up = True
        self._wake()

    def hold_reports(self, hold: bool = True) -> None:
        """Postpone the firmware's regular readings (a day of simulated time), or bring them
        back. A quiesce needs it: a meter reporting as often as the gateway acknowledges (or
        more often) always holds its newest reading, so its outbox would never be seen empty."""
        with self.step_lock:
            app = self.app
            if not (self.powered and app):
                return
            b = app.board
            app._next_report = b.ticks_add(b.ticks_ms(), REPORT_HOLD_MS if hold else app._interval_ms)
        self._wake()

    def halt(self) -> None:
        """Fleet stop: a graceful shutdown without a reboot."""
        with self.step_lock:
            if self.powered:
                try:
                    self._deliver_edges()
                    self.app.shutdown()
                finally:
                    self.powered = False
                    if self.client is not None:
                        self.client.cut()
                    self.board.close()

    def run_step(self) -> int | None:
        """One firmware step; returns the simulated ms it wants to sleep (None: don't schedule)."""
        with self.step_lock:
            if not self.powered:
                return None
            try:
                self._deliver_edges()
                self._step = (self.app.boot, self.app.seq, self.fleet.clock.now())
                wait = self.app.step()
                self._note_taken(self._step[1], self._step[2])
                return wait
            except MachineReset:
                self._hard_reset()
                return 0
            except Exception:  # a firmware bug: main.py would shut down and reset
                self.errors.append(traceback.format_exc())
                log.exception("meter %s: step failed; rebooting", self.id)
                self.fleet.errors.append((self.id, self.errors[-1]))
                try:
                    self.reboot()
                except Exception:
                    self.errors.append(traceback.format_exc())
                return 0

    def _note_taken(self, seq: int, t: float) -> None:
        """Readings seq .. app.seq - 1 were taken at simulated time t."""
        for s in range(seq, self.app.seq):
            self._taken[(self.app.boot, s)] = t

    def _taken_at(self, boot: str, seq: int) -> float | None:
        t = self._taken.get((boot, seq))
        step = self._step
        if t is None and step is not None and boot == step[0] and seq >= step[1]:
            t = step[2]  # taken by the step that is publishing it
        return t

    def _hard_reset(self) -> None:
        self.power_off()
        self._boot(Machine.HARD_RESET)


class Scheduler:
    """Runs each meter's step() at the simulated time it asked for."""

    def __init__(self, clock: SimClock, workers: int = 4, on_step: Callable[[], None] | None = None):
        self.clock = clock
        self.n_workers = workers
        self.on_step = on_step or (lambda: None)
        self._cond = threading.Condition()
        self._heap: list = []
        self._counter = itertools.count()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._paused = False
        self._active = 0  # steps running now
        self.steps = 0
        self.max_lag_s = 0.0  # how late a step ran versus its deadline (real seconds)

    def start(self) -> None:
        self._running = True
        for i in range(self.n_workers):
            t = threading.Thread(target=self._work, name="emulator-%d" % i, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=30)
        self._threads = []

    def pause(self) -> None:
        """No step starts after this returns, and none is running (the fleet is frozen)."""
        with self._cond:
            self._paused = True
            while self._active:
                self._cond.wait()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def _push(self, meter: EmulatedMeter, due: float) -> None:
        meter.due = due
        heapq.heappush(self._heap, (due, next(self._counter), meter))
        self._cond.notify()

    def wake(self, meter: EmulatedMeter) -> None:
        with self._cond:
            if meter.running:
                meter.wake_pending = True
            elif meter.due is None or meter.due > time.monotonic():
                self._push(meter, time.monotonic())

    def _work(self) -> None:
        while True:
            with self._cond:
                meter = None
                while self._running:
                    if self._paused or not self._heap:
                        self._cond.wait()
                        continue
                    due, _, m = self._heap[0]
                    if m.due != due or m.running:
                        heapq.heappop(self._heap)  # stale entry
                        continue
                    delay = due - time.monotonic()
                    if delay > 0:
                        self._cond.wait(delay)
                        continue
                    heapq.heappop(self._heap)
                    self._active += 1
                    m.running = True
                    m.due = None
                    m.wake_pending = False
                    self.max_lag_s = max(self.max_lag_s, -delay)
                    meter = m
                    break
                if meter is None:
                    return
            wait_ms = meter.run_step()
            with self._cond:
                meter.running = False
                self._active -= 1
                self.steps += 1
                if self._paused:
                    self._cond.notify_all()
                if meter.wake_pending or wait_ms == 0:
                    meter.wake_pending = False
                    self._push(meter, time.monotonic())
                elif wait_ms is not None:
                    self._push(meter, time.monotonic() + self.clock.delay_s(wait_ms))
            self.on_step()


def meter_ids(n: int, prefix: str = "m") -> list[str]:
    width = max(4, len(str(n)))
    return ["%s%0*d" % (prefix, width, i) for i in range(1, n + 1)]


# config.json keys the emulator sets for every meter, provisioned or invented
EMULATOR_CONFIG = {
    "mqtt_keepalive_s": 0,  # the stand-in keeps the TCP link alive on real time
}
# Fleet settings that describe invented meters; a provisioned meter's config.json has its own
INVENTED_ONLY = ("report_interval_s", "k_factor", "topic_root", "mqtt_password")


class Fleet:
    def __init__(self, host: str | None = None, port: int | None = None, meter_ids: list[str] | None = None,
                 seed: int = 1, speed: float = 300.0,
                 start_epoch: float | None = None, report_interval_s: int = 60, duplicate_prob: float = 0.0,
                 k_factor: float = 450, topic_root: str = "aquafog", fs_root: str | Path | None = None,
                 mqtt_password: str | Callable[[str], str] = "", workers: int = 4,
                 config_overrides: dict | None = None, horizon_s: float = 600.0,
                 reed: ReedContact | None = None, profiles: dict[str, Profile] | None = None,
                 board_files: dict | Callable[[str], dict] | None = None, configs: dict[str, dict] | None = None):
        """`start_epoch` defaults to a time that the simulated clock reaches real now only
        after `horizon_s` real seconds; from then on it runs at real time (never ahead of
        real now: the gateway rejects readings from the future). `reed`: how the contacts
        of meters that count by interrupt (pulse_min_gap_ms > 0) bounce. `profiles`: meters whose
        household is given (a steady leak makes water flow at once), the rest as assign_profiles.
        `board_files`: files put next to each meter's config.json before it first boots, as
        `make flash` copies them (a TLS meter's CA, its certificate and key): {name: bytes or a
        path}, or callable(meter_id) -> such a dict.

        `configs`: {meter_id: its config.json (a dict)}: those meters run with their own
        settings (password, TLS, k_factor, pins ...); `meter_ids` defaults to its keys. `host`
        and `port`, when given, replace their broker_host and broker_port (the meter as if
        provisioned for that broker: a mqtt_tls_hostname its file does not set follows
        broker_host). report_interval_s, k_factor, topic_root and mqtt_password describe the
        meters not in `configs`, which are invented as before. Every meter gets EMULATOR_CONFIG,
        then `config_overrides`. See also from_meters_dir()."""
        configs = configs or {}
        if meter_ids is None:
            meter_ids = list(configs)
        invented = [m for m in meter_ids if m not in configs]
        if invented and (host is None or port is None):
            raise ValueError("host and port: needed for the meters without a config (%s)" % ", ".join(invented[:5]))
        if start_epoch is None:
            start_epoch = int(time.time() - (speed - 1.0) * horizon_s - 5)
        self.host, self.port = host, port
        self.seed = seed
        self.duplicate_prob = duplicate_prob
        self.reed = reed or ReedContact()
        self.clock = SimClock(start_epoch, speed)
        self.errors: list[tuple[str, str]] = []
        self._own_fs = fs_root is None
        self.fs_root = Path(tempfile.mkdtemp(prefix="aquafog-emu-")) if fs_root is None else Path(fs_root)
        self._progress = threading.Condition()
        self.scheduler = Scheduler(self.clock, workers=workers, on_step=self._stepped)
        self.net = NetLoop()  # every meter's MQTT socket on one epoll thread (netloop.py)
        self.profiles = {**assign_profiles(list(meter_ids), seed), **(profiles or {})}
        self._meters: dict[str, EmulatedMeter] = {}
        for mid in meter_ids:
            if mid in configs:
                raw = dict(configs[mid])
                if raw.get("meter_id") != mid:
                    raise ValueError("meter %s: its config's meter_id is %r" % (mid, raw.get("meter_id")))
                if host is not None:
                    raw["broker_host"] = host
                if port is not None:
                    raw["broker_port"] = port
            else:
                raw = {
                    "meter_id": mid, "wifi_ssid": "emulated", "wifi_password": "", "broker_host": host,
                    "broker_port": port,
                    "mqtt_password": mqtt_password(mid) if callable(mqtt_password) else mqtt_password,
                    "topic_root": topic_root, "k_factor": k_factor, "report_interval_s": report_interval_s,
                }
            raw.update(EMULATOR_CONFIG)
            raw.update(config_overrides or {})
            cfg, errors = fw_config.validate(raw)
            if errors:
                raise ValueError("meter %s: %s" % (mid, "; ".join(errors)))
            fs_dir = self.fs_root / mid
            fs_dir.mkdir(parents=True, exist_ok=True)
            files = board_files(mid) if callable(board_files) else (board_files or {})
            for name, data in files.items():
                (fs_dir / name).write_bytes(data if isinstance(data, bytes) else Path(data).read_bytes())
            usage = MeterUsage(mid, seed, self.profiles[mid], start_epoch)
            self._meters[mid] = EmulatedMeter(self, mid, cfg, usage, fs_dir)
        self._started = False

    @classmethod
    def from_meters_dir(cls, meters_dir: str | Path, ids: list[str] | None = None,
                        broker: tuple[str, int] | None = None, **kw) -> "Fleet":
        """The provisioned meters under `meters_dir` (each `<id>/config.json`; all of them,
        or `ids`), each with its own config.json and, on its emulated flash, the TLS files
        that names (as `make flash` copies them; `board_files` given here go on top).
        `broker` (host, port) replaces every meter's broker address. The other keywords are
        the constructor's. MetersDirError (a ValueError) names every meter and file that
        keeps them from running."""
        bad = [k for k in INVENTED_ONLY if k in kw]
        if bad:
            raise TypeError("from_meters_dir: %s: each meter's config.json sets it (config_overrides "
                            "replaces a key for every meter)" % ", ".join(bad))
        meters = {m.id: m for m in meters_dir_load(meters_dir, ids)}
        extra = kw.pop("board_files", None)

        def files(mid: str) -> dict:
            return {**meters[mid].files, **((extra(mid) if callable(extra) else extra) or {})}

        host, port = broker if broker is not None else (None, None)
        return cls(host, port, configs={mid: m.config for mid, m in meters.items()}, board_files=files, **kw)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Fleet":
        self.clock.start()
        self.net.start()
        self.scheduler.start()
        for m in self._meters.values():
            m.power_on()
        self._started = True
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self.scheduler.stop()
        for m in self._meters.values():
            try:
                m.halt()
            except Exception:
                log.exception("meter %s: halt failed", m.id)
        self.net.stop()  # after the meters' graceful disconnects went out
        if self._own_fs:
            shutil.rmtree(self.fs_root, ignore_errors=True)

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- queries --------------------------------------------------------------------------------
    @property
    def meters(self) -> list[EmulatedMeter]:
        return list(self._meters.values())

    def meter(self, meter_id: str) -> EmulatedMeter:
        return self._meters[meter_id]

    def ground_truth(self) -> dict[str, dict[str, int]]:
        now = self.clock.now()
        out = {}
        for mid, m in self._meters.items():
            pulses = m.line.counted(now)
            out[mid] = {"pulses": pulses, "ml": pulses * 1_000_000 // m.line.ppm3}
        return out

    # --- waiting --------------------------------------------------------------------------------
    def _stepped(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def wait_until(self, sim_epoch: float, timeout: float) -> None:
        """Block until the simulated clock passes `sim_epoch` (TimeoutError after `timeout` real s)."""
        delay = self.clock.real_at(sim_epoch) - time.monotonic()
        if delay > timeout:
            raise TimeoutError("simulated time %.0f is %.1f real s away (timeout %.1f s)" % (sim_epoch, delay, timeout))
        if delay > 0:
            time.sleep(delay)
        while self.clock.now() < sim_epoch:
            time.sleep(0.001)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        """Block until predicate() holds, re-checked after every meter step."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("%s not reached within %.1f s" % (what, timeout))
                self._progress.wait(min(left, 0.5))

    def quiesce(self, timeout: float, freeze: bool = False) -> None:
        """Stop all water now, make every powered meter take a final reading (and no regular
        one meanwhile), and wait until every powered meter's outbox is empty (all
        acknowledged by the gateway); then the regular readings go on.

        With freeze=True the meters are also stopped stepping once that holds (no further
        readings), so a test can compare the gateway with `sent` and `ground_truth()`
        while nothing moves; `resume()` lets them run again, regular readings included."""
        t = self.clock.now()
        for m in self._meters.values():
            m.line.stop(t)
        for m in self._meters.values():
            with m.step_lock:
                if m.powered:
                    m.app.request_reading()
                    m.hold_reports()
            self.scheduler.wake(m)

        def holding() -> list[str]:
            out = []
            for m in self._meters.values():
                with m.step_lock:  # never look at a meter halfway through its step
                    if m.powered and (m.app.reading_requested or len(m.app.outbox)):
                        out.append(m.id)
            return out

        deadline = time.monotonic() + timeout
        try:
            while True:
                self.wait_for(lambda: not holding(), max(0.0, deadline - time.monotonic()), "quiesce")
                if not freeze:
                    for m in self._meters.values():  # the regular readings go on
                        m.hold_reports(False)
                    return
                self.scheduler.pause()
                if not holding():  # nothing can change it any more
                    return
                self.scheduler.resume()
        except TimeoutError:
            left = holding()
            raise TimeoutError("quiesce: %d meter(s) still hold data after %.1f s: %s"
                               % (len(left), timeout, ", ".join(left[:20]))) from None

    def resume(self) -> None:
        """Let quiesced (frozen) meters run again, on their regular schedule."""
        self.scheduler.resume()
        for m in self._meters.values():
            m.hold_reports(False)

    def stats(self) -> dict:
        ms = self.meters
        return {
            "sim_time": self.clock.now(),
            "meters": len(ms),
            "powered": sum(m.powered for m in ms),
            "online": sum(m.online for m in ms),
            "readings_sent": sum(len(m.sent) for m in ms),
            "outbox": sum(m.outbox_depth for m in ms),
            "steps": self.scheduler.steps,
            "max_lag_s": round(self.scheduler.max_lag_s, 3),
            "errors": len(self.errors),
        }
