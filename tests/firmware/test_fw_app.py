"""The Meter app driven step by step on a fake Board (no broker, no threads, explicit time)."""

from aquameter import VERSION
from aquameter import protocol as proto
from aquameter.app import Meter
from fakeboard import FakeBoard, ack_payload, make_cfg, run
from shared_cases import boot, synced  # one way to start a meter, on both interpreters

ACK = "aquafog/m0001/cmnd/ack"
VALVE = "aquafog/m0001/cmnd/valve"


def ack_all(meter, board):
    last = board.readings()[-1]
    board.deliver(ACK, ack_payload(last["boot"], last["seq"], last["pulses"], round(last["litres"] * 1000)))
    meter.step()


def test_start_drives_the_relay_and_takes_reading_zero_before_networking():
    files = {"state.json": '{"v":1,"pulses":90,"ml":200,"anchor_pulses":0,"anchor_ml":0,"ppm3":450000,"valve":"closed"}'}
    cfg = make_cfg()
    board = FakeBoard(cfg, files=files)
    meter = Meter(board, cfg)
    meter.start()
    assert board.events[0] == ("relay", True)  # restored "closed", before anything else
    assert not any(e[0].startswith(("wifi", "mqtt", "publish")) for e in board.events)
    assert meter.boot == "0badc0de" and meter.seq == 1 and len(meter.outbox) == 1
    e = meter.outbox.entries()[0]
    assert (e[0], e[1], e[3], e[4], e[6]) == ("0badc0de", 0, 90, 200, "closed")


def test_default_valve_when_nothing_saved():
    meter, board = boot(valve_default="closed")
    assert board.relay_closed is True and meter.valve.state == "closed"


def test_connect_subscribes_publishes_retained_birth_with_will():
    meter, board = boot()
    meter.step()
    assert meter.online
    assert board.will == ("aquafog/m0001/status", proto.encode_will("0badc0de"))
    assert board.subscribed == [("aquafog/m0001/cmnd/#", 1)]
    topic, payload, retain, qos = board.published[0]
    assert topic == "aquafog/m0001/status" and retain and qos == 1
    # conn numbers the connection (a boot starts from its boot id): the gateway's answer echoes it
    assert payload == '{"v":1,"online":true,"boot":"0badc0de","fw":"%s","valve":"open","conn":%d}' % (
        VERSION, int("badc0de", 16) + 1)


def test_readings_wait_for_the_birth_ack_then_go_out_at_qos1():
    meter, board = boot()
    meter.step()
    run(meter, board, 5_000)
    assert board.readings() == []  # held: no ack yet, reconcile window open
    board.deliver(ACK, ack_payload(None, None, 0, 0))
    meter.step()
    (reading,) = board.readings()
    assert reading["seq"] == 0 and reading["boot"] == "0badc0de"
    assert [(r, q) for (t, p, r, q) in board.published if t.endswith("/tele/reading")] == [(False, 1)]


def test_without_an_ack_readings_stay_held_and_the_birth_is_announced_again():
    meter, board = boot(reconcile_timeout_s=10)
    meter.step()

    def births():
        return [p for (t, p, r, q) in board.published if t.endswith("/status")]

    run(meter, board, 9_000)
    assert board.readings() == [] and len(births()) == 1
    run(meter, board, 1_500)
    assert board.readings() == [] and len(births()) == 2  # re-announced: its ack may have been lost
    run(meter, board, 15_000)
    assert len(births()) == 2  # the next one after 20 s: the interval doubles
    run(meter, board, 6_000)
    assert len(births()) == 3 and meter.stats["announces"] == 2
    assert board.readings() == []  # a gateway that may not be listening gets no readings
    # the answer to a birth reconciles the register, then the readings go
    board.deliver(ACK, ack_payload(None, None, 10_000, 50_000))
    meter.step()
    assert meter.register.pulses == 10_000 and meter.stats["reconciles"] == 1
    assert [(r["seq"], r["pulses"]) for r in board.readings()] == [(0, 10_000)]


def test_readings_sent_before_a_reconnect_go_again_only_after_the_new_birth_ack():
    meter, board = synced()
    board.pulses += 450
    run(meter, board, 60_000)
    sent = [r["seq"] for r in board.readings()]
    assert sent  # unacknowledged
    board.broker_up = False
    run(meter, board, 500)
    assert not meter.online
    board.broker_up = True
    run(meter, board, 5_000)
    assert meter.online and meter.stats["connects"] == 2
    n = len(board.readings())
    run(meter, board, 5_000)
    assert len(board.readings()) == n  # reconnected, but the gateway has not answered yet
    board.deliver(ACK, ack_payload(None, None, 0, 0))
    meter.step()
    assert [r["seq"] for r in board.readings()[n:]][:len(sent)] == sent  # all again, in order


def test_report_schedule_one_reading_per_interval():
    meter, board = synced(report_interval_s=60)
    board.pulses = 0
    for minute in range(1, 6):
        board.pulses += 450  # a litre a minute
        run(meter, board, 60_000)
        ack_all(meter, board)
    readings = board.readings()
    assert [r["seq"] for r in readings] == [0, 1, 2, 3, 4, 5]
    assert [r["litres"] for r in readings] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    first = readings[1]["ts"] - readings[0]["ts"]
    assert 30 <= first <= 60  # a random phase, then the interval
    assert [r["ts"] - readings[1]["ts"] for r in readings[1:]] == [0, 60, 120, 180, 240]
    assert len(meter.outbox) == 0


def test_meters_booted_together_spread_their_reports():
    phases = set()
    for i in range(8):
        cfg = make_cfg()
        board = FakeBoard(cfg, boot_ids=["%08x" % (0x1000 + 7919 * i)])
        meter = Meter(board, cfg)
        meter.start()
        board.broker_up = False
        run(meter, board, 61_000)
        phases.add(meter.outbox.entries()[1][2] - meter.outbox.entries()[0][2])
    assert len(phases) >= 4 and all(30 <= p <= 60 for p in phases)


def test_ticks_wrap_does_not_disturb_the_schedule():
    # FakeBoard starts 30 s before the 2**30 ms ticks wrap
    meter, board = synced(report_interval_s=20)
    run(meter, board, 100_000)
    readings = board.readings()
    assert [r["seq"] for r in readings] == list(range(len(readings))) and len(readings) in (5, 6)
    assert [b["ts"] - a["ts"] for a, b in zip(readings[1:], readings[2:])] == [20] * (len(readings) - 2)


def test_ack_frees_the_outbox_up_to_the_named_reading():
    meter, board = synced(report_interval_s=10)
    run(meter, board, 30_500)
    assert len(meter.outbox) == 4
    board.deliver(ACK, ack_payload("0badc0de", 1, 0, 0))
    meter.step()
    assert [e[1] for e in meter.outbox.entries()] == [2, 3]
    board.deliver(ACK, ack_payload("0badc0de", 3, 0, 0))
    meter.step()
    assert len(meter.outbox) == 0


def test_reconcile_adopts_the_gateway_register_before_the_first_send():
    files = {"state.json": '{"v":1,"pulses":450,"ml":1000,"anchor_pulses":0,"anchor_ml":0,"ppm3":450000,"valve":"open"}'}
    cfg = make_cfg()
    board = FakeBoard(cfg, files=files)
    meter = Meter(board, cfg)
    meter.start()
    meter.step()
    board.pulses = 45  # 100 ml since boot
    # the gateway persisted more than this meter's flash remembers
    board.deliver(ACK, ack_payload("aaaaaaaa", 17, 4500, 10_000))
    meter.step()
    first = board.readings()[0]
    assert (first["seq"], first["pulses"], first["litres"]) == (0, 4500, 10.0)
    assert meter.register.pulses == 4545 and meter.register.ml == 10_100
    assert board.state()["pulses"] == 4545
    assert meter.stats["reconciles"] == 1


def test_reconcile_keeps_the_local_register_when_it_is_ahead():
    files = {"state.json": '{"v":1,"pulses":4500,"ml":10000,"anchor_pulses":0,"anchor_ml":0,"ppm3":450000,"valve":"open"}'}
    cfg = make_cfg()
    board = FakeBoard(cfg, files=files)
    meter = Meter(board, cfg)
    meter.start()
    meter.step()
    board.deliver(ACK, ack_payload("aaaaaaaa", 17, 450, 1000))
    meter.step()
    assert board.readings()[0]["pulses"] == 4500 and meter.stats["reconciles"] == 0


def test_valve_command_flips_relay_replies_and_reports_at_once():
    meter, board = synced()
    ack_all(meter, board)
    n_before = len(board.readings())
    board.deliver(VALVE, '{"v":1,"id":"c-1","state":"closed"}')
    meter.step()
    assert board.relay_closed is True and meter.valve.state == "closed"
    assert board.on("/stat/valve") == ['{"v":1,"id":"c-1","state":"closed","ok":true}']
    readings = board.readings()
    assert len(readings) == n_before + 1 and readings[-1]["valve"] == "closed"
    assert board.state()["valve"] == "closed"


def test_duplicate_command_is_answered_again_without_reactuating():
    meter, board = synced()
    board.deliver(VALVE, '{"v":1,"id":"c-1","state":"closed"}')
    meter.step()
    board.deliver(VALVE, '{"v":1,"id":"c-2","state":"open"}')
    meter.step()
    relay_events = [e for e in board.events if e[0] == "relay"]
    board.deliver(VALVE, '{"v":1,"id":"c-1","state":"closed"}')  # redelivered old command
    meter.step()
    assert [e for e in board.events if e[0] == "relay"] == relay_events
    assert meter.valve.state == "open" and board.relay_closed is False
    assert board.on("/stat/valve")[-1] == '{"v":1,"id":"c-1","state":"closed","ok":true}'


def test_command_for_current_state_is_idempotent_and_answered():
    meter, board = synced()
    board.deliver(VALVE, '{"v":1,"id":"c-9","state":"open"}')
    meter.step()
    assert [e for e in board.events if e[0] == "relay"] == [("relay", False)]  # only the boot drive
    assert board.on("/stat/valve") == ['{"v":1,"id":"c-9","state":"open","ok":true}']


def test_invalid_gateway_messages_are_ignored(vectors):
    for case in vectors["invalid_gateway_messages"]:
        meter, board = synced()
        ack_all(meter, board)
        snapshot = (meter.valve.state, board.relay_closed, len(meter.outbox), meter.seq,
                    meter.register.pulses, list(board.published))
        board.deliver(case["topic"], case["payload"])
        meter.step()
        new = board.published[len(snapshot[5]):]
        assert (meter.valve.state, board.relay_closed, len(meter.outbox), meter.seq, meter.register.pulses) == \
            snapshot[:5], case["name"]
        if case["reply"] is None:
            assert new == [], case["name"]
        else:
            assert new == [("aquafog/m0001/stat/valve", case["reply"], False, 1)], case["name"]
        assert meter.online


def test_resend_after_reconnect():
    meter, board = synced(report_interval_s=10)
    run(meter, board, 20_500)
    assert [r["seq"] for r in board.readings()] == [0, 1, 2]
    board.deliver(ACK, ack_payload("0badc0de", 0, 0, 0))
    meter.step()
    board.broker_up = False  # the link dies with 1 and 2 unacknowledged
    run(meter, board, 10_000)
    assert not meter.online and meter.stats["disconnects"] == 1
    board.broker_up = True
    for _ in range(100):  # backoff, reconnect, birth
        run(meter, board, 500)
        if meter.online:
            break
    assert meter.online and meter.stats["connects"] == 2
    assert [r["seq"] for r in board.readings()] == [0, 1, 2]  # held until the birth's ack
    board.deliver(ACK, ack_payload("0badc0de", 0, 0, 0))  # the gateway has only 0
    meter.step()
    seqs = [r["seq"] for r in board.readings()]
    # 1 and 2 again, then those taken while offline, in order
    assert seqs == [0, 1, 2] + list(range(1, meter.seq))
    assert meter.seq >= 4


def test_resend_after_ack_timeout():
    meter, board = synced(report_interval_s=600, ack_timeout_s=120)
    assert [r["seq"] for r in board.readings()] == [0]
    run(meter, board, 119_000)
    assert [r["seq"] for r in board.readings()] == [0]
    run(meter, board, 2_000)
    assert [r["seq"] for r in board.readings()] == [0, 0] and meter.stats["resends"] == 1


def test_offline_readings_overflow_drops_oldest_and_counts():
    cfg_over = dict(report_interval_s=1, outbox_size=5, ring_size=0)  # RAM only: no flash ring
    meter, board = boot(**cfg_over)
    board.broker_up = False
    run(meter, board, 9_500)
    assert len(meter.outbox) == 5 and meter.outbox.dropped == 5
    assert [e[1] for e in meter.outbox.entries()] == [5, 6, 7, 8, 9]


def test_connect_backoff_grows_with_jitter_and_is_capped():
    meter, board = boot(report_interval_s=3600)
    board.broker_up = False
    run(meter, board, 30 * 60_000)
    gaps = [b - a for a, b in zip(board.connect_attempts, board.connect_attempts[1:])]
    assert gaps[0] >= 500 and gaps[1] >= gaps[0] // 2
    assert max(gaps) <= 60_000 + 100
    assert sum(1 for g in gaps if g >= 30_000) >= 10  # reached the cap
    assert len(board.connect_attempts) < 60  # not hammering the broker
    assert len(set(gaps[-10:])) > 1  # jitter


def test_no_mqtt_attempt_without_wifi():
    meter, board = boot()
    board.wifi_up = False
    run(meter, board, 60_000)
    assert board.connect_attempts == []
    assert 3 <= sum(1 for e in board.events if e == ("wifi_connect",)) <= 6  # restarted every 15 s
    board.wifi_up = True
    run(meter, board, 16_000)
    assert meter.online


def test_keepalive_ping_when_idle():
    meter, board = synced(report_interval_s=3600, mqtt_keepalive_s=60)
    ack_all(meter, board)
    run(meter, board, 125_000)
    assert board.pings >= 3


def test_step_wait_respects_poll_interval_and_next_report():
    meter, board = synced(report_interval_s=60)
    ack_all(meter, board)
    assert meter.step() == board.poll_ms
    board.poll_ms = 10 ** 9  # the emulator wakes meters on inbound messages instead
    wait = meter.step()
    assert 0 < wait <= 60_000


def test_shutdown_persists_says_offline_and_a_new_boot_continues():
    meter, board = synced(report_interval_s=60)
    board.pulses = 1000
    meter.shutdown()
    assert board.published[-1] == ("aquafog/m0001/status", '{"v":1,"online":false,"boot":"0badc0de"}', True, 1)
    assert ("mqtt_close", True) in board.events and not meter.online
    # power cycle: a new Meter on the same files, the hardware counter back at 0
    board.pulses = 0
    meter2 = Meter(board, board.cfg)
    meter2.start()
    assert meter2.boot == "00000002" and meter2.boot != meter.boot
    entries = meter2.outbox.entries()
    assert entries[0][0] == "0badc0de"  # the unacknowledged reading of the old boot waited in flash
    e = [x for x in entries if x[0] == meter2.boot][0]
    assert (e[1], e[3], e[4]) == (0, 1000, 1000 * 1_000_000 // 450_000)
    board.pulses = 450
    run(meter2, board, 60_000)
    assert meter2.register.pulses == 1450 and meter2.register.ml == 1450 * 1_000_000 // 450_000


def test_corrupt_state_file_starts_from_zero():
    cfg = make_cfg()
    board = FakeBoard(cfg, files={"state.json": "{garbage"})
    meter = Meter(board, cfg)
    meter.start()
    assert meter.register.pulses == 0 and meter.stats["restore_errors"] == 1


def test_inbound_flood_is_bounded():
    meter, board = synced()
    for i in range(40):
        meter._on_message(b"aquafog/m0001/cmnd/other", b"x")
    assert len(meter._inbox) == 16 and meter.stats["inbox_dropped"] == 24
    meter.step()
    assert meter._inbox == []
