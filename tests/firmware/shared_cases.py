# Firmware logic cases that run unchanged on CPython (tests/firmware/test_fw_shared.py)
# and on real MicroPython 1.27 (mp_checks.py under Node): MicroPython syntax only,
# plain asserts, no pytest. Each case_* function is one test; VECTORS is
# tests/vectors/firmware_v1.json (the runner sets DATA to the folder holding it).
import io
import json

from aquameter import hal, protocol as proto
from aquameter.alarms import FlowAlarms
from aquameter.app import Meter, run as run_main
from aquameter.clock import Clock
from aquameter.outbox import Outbox
from aquameter.pulses import QuietFilter
from aquameter.ring import RECORD, FlashRing, pack, unpack
from fakeboard import FakeBoard, ack_payload, make_cfg, run
import fakemachine

DATA = "tests/vectors"
_MASK = (1 << 30) - 1
ACK = "aquafog/m0001/cmnd/ack"
VALVE = "aquafog/m0001/cmnd/valve"


def vectors(name):
    with open(DATA + "/" + name) as f:
        return json.load(f)


def ticks_diff(a, b):
    return ((a - b + (1 << 29)) & _MASK) - (1 << 29)


def entry(boot, seq, pulses=0, ml=0, ts=1763990000):
    return [boot, seq, ts + seq if ts else 0, pulses, ml, 0, "open", seq]


def ring_file(cap):
    return io.BytesIO(bytes(cap * RECORD))


def drain(ob):
    out = []
    while True:
        p = ob.peek()
        if p is None:
            return out
        out.append((p[0][0], p[0][1], p[1]))
        ob.mark_sent()


def boot(board=None, **over):
    cfg = make_cfg(**over)
    board = board or FakeBoard(cfg)
    board.cfg = cfg
    meter = Meter(board, cfg)
    meter.start()
    return meter, board


def synced(board=None, **over):
    meter, board = boot(board, **over)
    meter.step()
    board.deliver(ACK, ack_payload(None, None, 0, 0))
    meter.step()
    return meter, board


# --- pulses: the quiet-time filter (a truth table in the vectors) ------------------------
def case_edge_filter_vectors():
    for v in vectors("firmware_v1.json")["edge_filter"]:
        f = QuietFilter(v["gap_us"], ticks_diff)
        for t, level in v["edges"]:
            f.edge(t, level)
        assert f.count == v["count"], v["name"]


# --- ring: the on-flash record format is pinned byte for byte --------------------------------
def case_ring_record_vectors():
    for v in vectors("firmware_v1.json")["ring_records"]:
        rec = pack(v["rseq"], v["entry"])
        assert len(rec) == RECORD
        assert rec == bytes.fromhex(v["hex"]), v["entry"]
        assert unpack(rec) == (v["rseq"], v["entry"])
        torn = bytearray(rec)
        torn[20] ^= 1
        assert unpack(bytes(torn)) is None  # a flipped bit fails the CRC


def case_ring_recovers_after_reboot_and_a_torn_write():
    f = ring_file(8)
    r = FlashRing(f, 8)
    for s in range(5):
        r.append(entry("0a0b0c0d", s))
    f.seek(4 * RECORD + 10)
    f.write(b"\xff\xff")  # the power died while record 4 was written
    r2 = FlashRing(f, 8)
    r2.recover(1)  # record 0 was freed before the reboot
    assert (r2.tail, r2.head) == (1, 4)
    assert r2.read(3)[1] == 3 and r2.read(4) is None


def case_ring_overwrites_the_oldest_when_full():
    r = FlashRing(ring_file(3), 3)
    dropped = [r.append(entry("0a0b0c0d", s)) for s in range(5)]
    assert dropped == [False, False, False, True, True]
    assert (r.tail, r.head, len(r)) == (2, 5, 3)
    assert [r.read(i)[1] for i in range(2, 5)] == [2, 3, 4]
    r2 = FlashRing(r.f, 3)
    r2.recover(0)
    assert (r2.tail, r2.head) == (2, 5)


# --- outbox: RAM and flash in one order --------------------------------------------------------
def case_outbox_order_flash_then_ram_and_acks_by_boot_runs():
    ob = Outbox(4, FlashRing(ring_file(16), 16))
    for s in range(3):
        ob.push(entry("aaaaaaaa", s), True)  # offline: flash
    for s in range(3, 5):
        ob.push(entry("aaaaaaaa", s), False)  # online: RAM
    assert len(ob) == 5 and len(ob.ring) == 3 and len(ob.ram) == 2
    assert drain(ob) == [("aaaaaaaa", 0, True), ("aaaaaaaa", 1, True), ("aaaaaaaa", 2, True),
                         ("aaaaaaaa", 3, False), ("aaaaaaaa", 4, False)]
    assert ob.ack("aaaaaaaa", 3) == 4
    assert len(ob.ring) == 0 and [e[1] for e in ob.entries()] == [4] and ob.sent == 1
    assert ob.ack("aaaaaaaa", 3) == 0  # stale
    assert ob.ack("bbbbbbbb", 9) == 0  # a boot never queued


def case_outbox_ack_of_a_newer_boot_frees_older_boots():
    ob = Outbox(8, FlashRing(ring_file(16), 16))
    ob.push(entry("aaaaaaaa", 7), True)
    ob.push(entry("bbbbbbbb", 0), True)
    ob.push(entry("bbbbbbbb", 1), False)
    ob.push(entry("bbbbbbbb", 2), False)
    drain(ob)
    assert ob.ack("bbbbbbbb", 1) == 3 and [e[1] for e in ob.entries()] == [2]


def case_outbox_going_offline_spills_ram_to_flash_in_order():
    ob = Outbox(4, FlashRing(ring_file(16), 16))
    ob.push(entry("aaaaaaaa", 0), False)
    ob.push(entry("aaaaaaaa", 1), False)
    ob.mark_sent()
    ob.spill()  # the link dropped
    ob.push(entry("aaaaaaaa", 2), True)
    assert len(ob.ram) == 0 and len(ob.ring) == 3 and ob.sent == 0
    assert [x[1] for x in drain(ob)] == [0, 1, 2]


def case_outbox_full_ram_spills_and_full_ring_drops_the_oldest_counted():
    ob = Outbox(2, FlashRing(ring_file(4), 4))
    for s in range(10):
        ob.push(entry("aaaaaaaa", s), False)
    assert len(ob) == 4 + len(ob.ram) and ob.dropped == 10 - len(ob)
    seqs = [e[1] for e in ob.entries()]
    assert seqs == list(range(10 - len(ob), 10))
    assert ob.ack("aaaaaaaa", seqs[1]) == 2  # the run index followed the drops


def case_outbox_without_a_ring_drops_the_oldest_ram_reading():
    ob = Outbox(3)
    for s in range(5):
        ob.push(entry("aaaaaaaa", s), True)
    assert ob.dropped == 2 and [e[1] for e in ob.entries()] == [2, 3, 4]


def case_outbox_rebase_and_stamp_reach_unsent_flash_records():
    ob = Outbox(4, FlashRing(ring_file(8), 8))
    ob.push(entry("aaaaaaaa", 0, 10, 20, ts=0), True)
    ob.push(entry("aaaaaaaa", 1, 11, 22, ts=0), False)
    ob.rebase("aaaaaaaa", 100, lambda p: 2 * p + 800)
    ob.stamp("aaaaaaaa", 1763990100, 50)
    got = ob.entries()
    assert [(e[3], e[4]) for e in got] == [(110, 1020), (111, 1022)]
    assert [e[2] for e in got] == [1763990050, 1763990051]  # up_s 0 and 1, now 50 s up


# --- clock and flags -----------------------------------------------------------------------
def case_clock_runs_on_ticks_across_the_wrap_and_backs_off_ntp():
    c = Clock(ticks_diff, 3600)
    c.tick(_MASK - 500)
    assert c.now() is None and c.state() == "unset" and c.due()
    assert not c.set(946684800 + 5, False)  # an RTC at 2000 is not a time
    c.tick(499)  # 1000 ms later, across the wrap
    assert c.up_ms == 1000
    c.set(1763990000, True)
    c.tick(2499)
    assert c.now() == 1763990002 and c.state() == "ntp" and not c.due()
    c.failed()
    assert c.next_in() == 60000
    c.failed()
    assert c.next_in() == 120000


def case_alarm_vectors():
    for v in vectors("firmware_v1.json")["alarms"]:
        a = FlowAlarms(v["cfg"])
        for (up, pulses, flow), want in zip(v["samples"], v["flags"]):
            a.update(up, pulses, flow)
            assert [a.leak, a.burst] == want, (v["name"], up)


# --- the shared MQTT vectors, firmware side -------------------------------------------------------
def case_mqtt_vectors_encode_health_and_local_results():
    n = 0
    for c in vectors("mqtt_v1.json")["meter_to_gateway"]:
        f = c["fields"]
        if c["kind"] == "health":
            got = proto.encode_health(f["boot"], f["fw"], f["uptime_s"], f["reset"], f["rssi"], f["heap_free"],
                                      f["dropped"], f["buffer"], f["clock"], f["alarms"])
            assert proto.topic("aquafog", c["meter"], proto.HEALTH) == c["topic"]
        elif c["kind"] == "valve_result":
            got = proto.encode_valve_result(f["id"], f["state"], f["ok"], f["error"], f.get("cause"))
        else:
            continue
        assert got == c["payload"], c["name"]
        n += 1
    assert n >= 4


# --- the HAL on a fake machine module ------------------------------------------------------------
class Time:
    def __init__(self):
        self.us = 0

    def gmtime(self, s):
        return (2000, 1, 1, 0, 0, 0, 5, 1)

    def time(self):
        return 829000000

    def ticks_us(self):
        return self.us

    def ticks_ms(self):
        return self.us // 1000

    def ticks_diff(self, a, b):
        return ticks_diff(a, b)

    def ticks_add(self, a, b):
        return (a + b) & _MASK

    def sleep_ms(self, ms):
        self.us += ms * 1000


def case_hal_counts_with_the_hardware_counter():
    m = fakemachine.Machine()
    b = hal.Board(make_cfg(pulse_pin=13), machine=m, clock=Time())
    assert b.pulse_count() == 0
    m.counters[0].count = 42
    assert b.pulse_count() == 42 and m.counters[0].filter_ns > 0 and m.counters[0].src.id == 13


def case_hal_reed_contact_counts_in_a_hard_interrupt_through_the_filter():
    m = fakemachine.Machine()
    t = Time()
    b = hal.Board(make_cfg(pulse_min_gap_ms=20), machine=m, clock=t)
    assert b.pulse_count() == 0
    pin = m.pins[4]
    assert pin.hard and pin.trigger == m.Pin.IRQ_FALLING | m.Pin.IRQ_RISING
    for closure in range(3):  # three closures, each bouncing
        for dt, level in ((0, 0), (300, 1), (600, 0), (900, 1), (1200, 0), (60000, 1), (60400, 0), (60800, 1)):
            t.us = closure * 200000 + dt
            pin.fire(level)
    assert b.pulse_count() == 3


def case_edge_filter_ageing_keeps_an_edge_newer_than_the_main_loops_time():
    f = QuietFilter(20000, ticks_diff)
    f.edge(0, 0)  # closed: one pulse
    f.age(15000)
    assert f.last == 0  # quiet for less than the gap: kept
    f.edge(16000, 1)  # bounce, after the main loop read its time (15000) but before age()
    f.age(15000)
    assert f.last == 16000  # newer than the loop's time: kept, so the next bounce is chatter
    f.edge(16400, 0)
    assert f.count == 1 and f.chatter == 2
    f.age(16400 + 20000)
    assert f.last is None  # quiet for the gap: forgotten
    f.edge(1 << 29, 1)
    f.age(((1 << 29) + (1 << 29) + 100) & _MASK)  # 9 min later: the difference has wrapped
    assert f.last is None


def case_hal_reed_closure_a_whole_ticks_us_period_later_counts():
    # 17.9 min of quiet: without the main loop's ageing the closure would land 5 ms
    # "after" the last edge and look like chatter
    m = fakemachine.Machine()
    t = Time()
    b = hal.Board(make_cfg(pulse_min_gap_ms=20), machine=m, clock=t)
    b.pulse_count()
    pin = m.pins[4]
    pin.fire(0)
    t.us = 300
    pin.fire(1)  # chatter
    t.us = 1000
    assert b.pulse_count() == 1  # a step inside the gap: the last edge is kept...
    t.us = 1500
    pin.fire(0)
    assert b.pulse_count() == 1  # ...so this bounce is still chatter
    t.us = 2000
    pin.fire(1)
    for _ in range(107):  # steps 10 s apart, as run() makes them (1070 s)
        t.us = (t.us + 10000000) & _MASK
        b.pulse_count()
    assert m.irq_off == 0  # every disable_irq() was undone
    t.us = (2000 + (1 << 30) + 5000) & _MASK
    pin.fire(0)
    assert b.pulse_count() == 2


def case_hal_without_counter_falls_back_to_interrupt_counting():
    m = fakemachine.Machine(counter=False)
    b = hal.Board(make_cfg(), machine=m, clock=Time())
    b.pulse_count()
    for _ in range(5):
        m.pins[4].fire(0)
    assert b.pulse_count() == 5 and m.pins[4].trigger == m.Pin.IRQ_FALLING


def case_hal_relay_polarity_feedback_reset_cause_and_watchdog():
    m = fakemachine.Machine()
    b = hal.Board(make_cfg(relay_active_high=False, valve_feedback_pin=27), machine=m, clock=Time())
    b.set_valve(True)
    assert m.pins[26].level == 0
    b.valve_feedback()  # configures the input
    m.pins[27].level = 0
    assert b.valve_feedback() is True  # the limit switch pulls the line low when closed
    m.pins[27].level = 1
    assert b.valve_feedback() is False
    assert hal.Board(make_cfg(), machine=m, clock=Time()).valve_feedback() is None
    m.cause = m.WDT_RESET
    assert b.reset_cause() == "watchdog"
    b.watchdog_start(30000)
    b.watchdog_feed()
    assert m.wdt.timeout == 30000 and m.wdt.feeds == 1
    b.watchdog_hold(5000)
    for _ in range(3):
        m.timer.callback(m.timer)
    assert m.wdt.feeds == 4  # fed by the timer during maintenance


class FakeSsl:
    """The ssl module as the HAL uses it (MicroPython >= 1.23 and CPython alike)."""
    PROTOCOL_TLS_CLIENT = 16
    CERT_REQUIRED = 2

    def __init__(self):
        self.contexts = []

    def SSLContext(self, protocol):
        c = FakeSslContext(protocol)
        self.contexts.append(c)
        return c


class FakeSslContext:
    def __init__(self, protocol):
        self.protocol = protocol
        self.verify_mode = 0
        self.calls = []

    def load_verify_locations(self, cafile=None, cadata=None):
        if cafile.endswith("missing.crt"):
            raise OSError(2)
        self.calls.append(("ca", cafile))

    def load_cert_chain(self, certfile, keyfile):
        self.calls.append(("chain", certfile, keyfile))

    def wrap_socket(self, sock, server_hostname=None):
        self.calls.append(("wrap", sock, server_hostname))
        return sock


class Umqtt:
    """umqtt.simple's constructor and connect: it wraps its socket with `ssl` (server_hostname=server)."""
    last = None

    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0, ssl=None):
        self.server = server
        self.ssl = ssl
        Umqtt.last = self

    def set_callback(self, cb):
        pass

    def set_last_will(self, topic, msg, retain=False, qos=0):
        pass

    def connect(self, clean_session=True):
        if self.ssl:
            self.ssl.wrap_socket("socket", server_hostname=self.server)


def case_hal_builds_the_tls_context_from_the_files_next_to_config_json():
    fake = FakeSsl()
    b = hal.Board(make_cfg(), machine=fakemachine.Machine(), clock=Time(), mqtt_client=Umqtt, ssl=fake)
    b.mqtt_connect("t", "w", None)
    assert Umqtt.last.ssl is None and fake.contexts == []  # plain MQTT never touches ssl
    cfg = make_cfg(mqtt_tls=True, broker_host="10.0.0.2", mqtt_tls_hostname="fog1.lan",
                   mqtt_certfile="client.crt", mqtt_keyfile="client.key")
    b = hal.Board(cfg, machine=fakemachine.Machine(), clock=Time(), mqtt_client=Umqtt, ssl=fake, fs_root="/flash")
    b.mqtt_connect("t", "w", None)
    b.mqtt_connect("t", "w", None)
    assert len(fake.contexts) == 1  # built once, used for every connect
    c = fake.contexts[0]
    assert c.protocol == FakeSsl.PROTOCOL_TLS_CLIENT and c.verify_mode == FakeSsl.CERT_REQUIRED
    assert c.calls == [("ca", "/flash/ca.crt"), ("chain", "/flash/client.crt", "/flash/client.key"),
                       ("wrap", "socket", "fog1.lan"), ("wrap", "socket", "fog1.lan")]
    b = hal.Board(make_cfg(mqtt_tls=True, mqtt_cafile="missing.crt"), machine=fakemachine.Machine(), clock=Time(),
                  mqtt_client=Umqtt, ssl=fake)
    try:
        b.mqtt_connect("t", "w", None)
        raise AssertionError("connected without its CA")
    except OSError as e:
        assert "mqtt_cafile missing.crt" in str(e), str(e)
    assert not b.mqtt_connected()


# --- the app on a fake board ------------------------------------------------------------------------
def case_offline_readings_go_to_flash_and_replay_in_order_throttled():
    meter, board = boot(report_interval_s=10, replay_per_s=2)
    board.broker_up = False
    board.pulses = 450
    run(meter, board, 60000)
    n = len(meter.outbox)
    assert n >= 6 and len(meter.outbox.ring) == n  # all on flash
    board.broker_up = True
    for _ in range(200):
        run(meter, board, 500)
        if meter.online:
            break
    board.deliver(ACK, ack_payload(None, None, 0, 0))
    t0 = board.elapsed_ms
    run(meter, board, 1000)
    sent = len(board.readings())
    assert 2 <= sent <= 4  # 2 per second, with at most 1 s of credit
    run(meter, board, 10000)
    seqs = [r["seq"] for r in board.readings()]
    assert seqs[:n] == list(range(n)) and board.elapsed_ms - t0 >= 1000


def case_power_cut_restores_the_register_from_flash():
    cfg = make_cfg(report_interval_s=10)
    files = {}
    board = FakeBoard(cfg, files=files)
    board.broker_up = False
    meter, board = boot(board, report_interval_s=10)
    board.pulses = 4500  # 10 litres while offline
    run(meter, board, 25000)
    # power cut: a new board on the same flash, the counter starts at 0 again
    b2 = FakeBoard(cfg, files=files, boot_ids=["00000002"])
    m2, b2 = boot(b2, report_interval_s=10)
    assert m2.register.pulses == 4500 and m2.register.ml == 10000
    assert [e[1] for e in m2.outbox.entries()][:3] == [0, 1, 2]  # the old boot's readings survived


def case_register_is_saved_when_save_litres_are_at_risk_not_every_reading():
    meter, board = synced(report_interval_s=10, save_litres=5, save_min_interval_s=10)
    saves0 = meter.stats["saves"]
    board.pulses = 450  # 1 litre
    run(meter, board, 30000)
    assert meter.stats["saves"] == saves0  # 3 readings, nothing at risk worth a write
    board.pulses = 450 * 7
    run(meter, board, 1000)
    assert meter.stats["saves"] == saves0 + 1 and board.state()["pulses"] == 450 * 7


def case_untimed_readings_wait_for_ntp_then_get_their_time():
    cfg = make_cfg()
    board = FakeBoard(cfg, rtc_valid=False)
    board.ntp_up = False
    meter, board = boot(board)
    meter.step()
    board.deliver(ACK, ack_payload(None, None, 0, 0))
    run(meter, board, 5000)
    assert meter.online and board.readings() == [] and meter.clock.state() == "unset"
    board.ntp_up = True
    run(meter, board, 130000)
    r = board.readings()[0]
    assert r["seq"] == 0 and r["ts"] == board.epoch0 and meter.clock.state() == "ntp"


def case_tls_meter_connects_only_once_the_clock_is_set_and_keeps_its_readings_meanwhile():
    cfg = make_cfg(mqtt_tls=True, report_interval_s=10)
    board = FakeBoard(cfg, rtc_valid=False)  # a cold power-on: the RTC says 2000
    board.ntp_up = False
    meter, board = boot(board, mqtt_tls=True, report_interval_s=10)
    run(meter, board, 500000)  # NTP tried at 0, 60, 180 and 420 s, failing
    assert board.connect_attempts == [] and board.ntp_calls == 4
    assert meter.clock_wait and meter.stats["clock_waits"] == 1 and meter.clock.state() == "unset"
    n = len(meter.outbox)
    assert n >= 45 and len(meter.outbox.ring) == n  # every reading waits on flash
    board.ntp_up = True
    run(meter, board, 330000)  # the next NTP attempt: 720 s, the backoff is capped at 5 min while unset
    assert len(board.connect_attempts) == 1 and 700000 <= board.connect_attempts[0] <= 730000
    assert not meter.clock_wait and meter.online and meter.clock.state() == "ntp"
    board.deliver(ACK, ack_payload(None, None, 0, 0))
    run(meter, board, 30000)
    rs = board.readings()
    assert [r["seq"] for r in rs[:n]] == list(range(n))
    assert rs[0]["ts"] == board.epoch0 and all(r["ts"] > board.epoch0 for r in rs[1:])
    assert json.loads(board.on("/tele/health")[0])["clock"] == "ntp"


def case_tls_meter_with_a_clock_kept_across_a_reset_connects_without_ntp():
    cfg = make_cfg(mqtt_tls=True)
    board = FakeBoard(cfg, rtc_valid=True)  # a watchdog reset: the RTC kept its time
    board.ntp_up = False
    meter, board = boot(board, mqtt_tls=True)
    run(meter, board, 1000)
    assert meter.online and len(board.connect_attempts) == 1 and meter.stats["clock_waits"] == 0
    assert meter.clock.state() == "stale"
    plain = FakeBoard(make_cfg(), rtc_valid=False)  # plain MQTT does not wait for the clock
    plain.ntp_up = False
    m2, plain = boot(plain)
    run(m2, plain, 1000)
    assert m2.online and m2.clock.state() == "unset"


def case_burst_closes_the_valve_and_reports_it_before_the_birth():
    meter, board = boot(burst_lpm=20, burst_minutes=1, burst_close=True, report_interval_s=10)
    board.broker_up = False
    for _ in range(100):  # 45 L/min for 100 s
        board.pulses += 450 * 45 // 60
        run(meter, board, 1000)
    assert meter.valve.state == "closed" and board.relay_closed and "burst" in meter.alarm_list()
    assert board.state()["local"][0][0].startswith("local-0badc0de-")
    board.broker_up = True
    for _ in range(200):
        run(meter, board, 500)
        if meter.online:
            break
    topics = [t.split("/")[-1] for (t, p, r, q) in board.published]
    assert topics[:2] == ["valve", "status"]  # the local change goes before the birth
    first = json.loads(board.published[0][1])
    assert first["cause"] == "burst" and first["state"] == "closed" and first["ok"] is True
    assert board.state()["local"] == []
    assert not meter.alarms.burst  # the closed valve stopped the flow


def case_valve_with_feedback_answers_when_it_arrives_or_fails():
    meter, board = synced(valve_feedback_pin=27, valve_travel_s=5)
    board.feedback = False
    board.deliver(VALVE, '{"v":1,"id":"c-1","state":"closed"}')
    run(meter, board, 2000)
    assert board.relay_closed and board.on("/stat/valve") == []  # still travelling
    board.feedback = True
    run(meter, board, 500)
    assert board.on("/stat/valve") == ['{"v":1,"id":"c-1","state":"closed","ok":true}']
    board.deliver(VALVE, '{"v":1,"id":"c-2","state":"open"}')
    run(meter, board, 6000)  # the valve never opens
    res = json.loads(board.on("/stat/valve")[-1])
    assert res["ok"] is False and "valve_feedback" in res["error"] and "valve_fault" in meter.alarm_list()


def case_health_reports_what_an_operator_needs():
    meter, board = synced()
    h = json.loads(board.on("/tele/health")[0])
    assert h["boot"] == "0badc0de" and h["reset"] == "power_on" and h["rssi"] == -61
    assert h["heap_free"] == 90112 and h["clock"] == "ntp" and board.ntp_calls == 1 and h["alarms"] == [] and h["buffer"] >= 0


def case_main_loop_feeds_the_watchdog_only_after_a_step_and_holds_it_for_maintenance():
    meter, board = synced(watchdog_s=20)
    calls = []

    def sleep(ms):
        calls.append(ms)
        if len(calls) == 3:
            raise KeyboardInterrupt()
        board.advance(ms)
    board.sleep_ms = sleep
    run_main(meter, board, meter.cfg)
    assert board.watchdog[0] == ("start", 20000) and board.watchdog.count("feed") == 3
    assert max(calls) <= 5000  # sleeps are cut so the watchdog is fed in time
    assert board.watchdog[-1] == ("hold", 1800000) and not meter.online


def _birth_conn(board):
    return json.loads(board.on("/status")[-1])["conn"]


def _reconnect(meter, board):
    board.broker_up = False
    run(meter, board, 500)
    assert not meter.online
    board.broker_up = True
    for _ in range(200):  # backoff, reconnect, birth
        run(meter, board, 500)
        if meter.online:
            return
    raise AssertionError("no reconnect")


def case_only_the_answer_to_this_connections_birth_syncs_the_meter():
    # The broker restarted: the gateway's late answer to the previous connection's birth can
    # reach the meter before the gateway is subscribed again; readings sent then are discarded
    # by the broker, and the ack of a later one would free them. Only the echo of this
    # connection's conn syncs.
    meter, board = boot(report_interval_s=10)
    meter.step()
    c1 = _birth_conn(board)
    board.deliver(ACK, ack_payload(None, None, 0, 0, c1))
    meter.step()
    assert [r["seq"] for r in board.readings()] == [0]
    board.pulses += 450
    run(meter, board, 12000)
    assert [r["seq"] for r in board.readings()] == [0, 1]  # 1 is not acknowledged
    _reconnect(meter, board)
    c2 = _birth_conn(board)
    assert c2 != c1
    n = len(board.readings())
    board.deliver(ACK, ack_payload("0badc0de", 0, 0, 0, c1))  # late: it answers the earlier birth
    run(meter, board, 2000)
    assert len(board.readings()) == n  # held: the gateway may not be listening yet
    assert [e[1] for e in meter.outbox.entries()][0] == 1  # but what it acknowledges is freed
    board.deliver(ACK, ack_payload("0badc0de", 0, 0, 0))  # a reading's ack (no conn) does not sync either
    run(meter, board, 2000)
    assert len(board.readings()) == n
    board.deliver(ACK, ack_payload("0badc0de", 0, 0, 0, c2))  # the answer to this birth
    meter.step()
    assert [r["seq"] for r in board.readings()[n:]] == list(range(1, meter.seq))


def case_a_gateway_that_does_not_echo_conn_syncs_the_meter_with_any_ack():
    # a gateway older than conn: every ack answers the birth, as before conn (no deadlock)
    meter, board = synced(report_interval_s=10)  # synced() answers without conn
    assert [r["seq"] for r in board.readings()] == [0]
    _reconnect(meter, board)
    n = len(board.readings())
    board.deliver(ACK, ack_payload("0badc0de", 0, 0, 0))
    meter.step()
    assert [r["seq"] for r in board.readings()[n:]] == list(range(1, meter.seq))


def case_each_connect_and_each_boot_numbers_the_birth_anew():
    meter, board = boot()
    meter.step()
    c1 = _birth_conn(board)
    _reconnect(meter, board)
    assert _birth_conn(board) == c1 + 1
    meter.shutdown()
    m2, b2 = boot(FakeBoard(make_cfg(), files=board.files, boot_ids=["9e3779b9"]))
    m2.step()
    assert abs(_birth_conn(b2) - c1) > 1000  # a late answer to the last boot's birth does not match


def all_cases():
    return sorted([n for n in globals() if n.startswith("case_")])
