"""Emulated meters (the real firmware) against a real Mosquitto and an acknowledging stand-in gateway."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aquameter import VERSION
from emulator import meter_ids

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def assert_in_order_and_complete(readings):
    """Per boot, seqs arrive strictly in order from 0 with no gap; boots never interleave."""
    boots = []
    for r in readings:
        if not boots or boots[-1][0] != r["boot"]:
            assert r["boot"] not in [b for b, _ in boots], "boot %s came back" % r["boot"]
            boots.append((r["boot"], []))
        boots[-1][1].append(r["seq"])
    for boot, seqs in boots:
        assert seqs == list(range(len(seqs))), (boot, seqs)
    return boots


def test_twenty_meters_for_thirty_simulated_minutes(make_fleet, gateway):
    ids = meter_ids(20)
    fleet = make_fleet(ids, speed=300.0, report_interval_s=60)
    t0 = fleet.clock.start_epoch
    fleet.start()
    fleet.wait_until(t0 + 30 * 60, timeout=30)
    t_quiesce = fleet.clock.now()
    fleet.quiesce(timeout=30)
    truth = fleet.ground_truth()
    assert fleet.errors == []
    slack = 10 + math.ceil(fleet.scheduler.max_lag_s * 300.0)  # simulated seconds
    for mid in ids:
        readings = gateway.readings[mid]
        boots = assert_in_order_and_complete(readings)
        assert len(boots) == 1
        assert len(readings) >= 30, (mid, len(readings))  # seq 0, one a minute, the final one
        last = readings[-1]
        assert (last["pulses"], last["ml"]) == (truth[mid]["pulses"], truth[mid]["ml"]), mid
        m = fleet.meter(mid)
        assert m.outbox_depth == 0 and m.online
        assert [(s["boot"], s["seq"]) for s in m.sent] == [(r["boot"], r["seq"]) for r in readings]
        # after a random first phase, one reading a minute until the final one
        scheduled = [r for r in readings[1:] if r["ts"] < t_quiesce - 60]
        gaps = [b["ts"] - a["ts"] for a, b in zip(scheduled, scheduled[1:])]
        # a step may start late when the host is busy (the scheduler measures by how much);
        # the schedule itself does not drift
        assert len(scheduled) >= 27 and all(60 - slack <= g <= 60 + slack for g in gaps), (mid, gaps, slack)
        assert abs(sum(gaps) - 60 * len(gaps)) <= slack, (mid, gaps, slack)
        assert 25 <= readings[1]["ts"] - readings[0]["ts"] <= 70 + slack
        assert readings[0]["ts"] >= int(t0) and readings[-1]["ts"] <= int(fleet.clock.now())
    # the model feeds through the firmware: water flows, and the leaking meter never stops
    assert sum(truth[m]["ml"] for m in ids) > 0
    (leak,) = [m.id for m in fleet.meters if m.profile.kind == "leak"]
    assert all(r["flow"] > 0 for r in gateway.readings[leak][1:-1])


def test_valve_command_flips_the_relay_and_is_confirmed(make_fleet, gateway):
    fleet = make_fleet(["v0001"], speed=300.0)  # a single meter is the fleet's leaking one
    fleet.start()
    m = fleet.meter("v0001")
    fleet.wait_for(lambda: m.online, 10, "meter online")
    assert m.relay_closed is False and m.valve == "open"
    gateway.command("v0001", "c-test-1", "closed")
    (result,) = gateway.wait_for(lambda: gateway.results["v0001"], 10, "stat/valve")
    assert result == {"v": 1, "id": "c-test-1", "state": "closed", "ok": True}
    assert m.relay_closed is True and m.valve == "closed"
    gateway.wait_for(lambda: any(r["valve"] == "closed" for r in gateway.readings["v0001"]), 10, "closed reading")
    # a closed valve delivers nothing, even to a leak
    before = fleet.ground_truth()["v0001"]["pulses"]
    fleet.wait_until(fleet.clock.now() + 600, timeout=10)
    assert fleet.ground_truth()["v0001"]["pulses"] == before
    # a bad command earns the documented error, and changes nothing
    gateway.command("v0001", "c-test-2", "ajar")
    gateway.wait_for(lambda: len(gateway.results["v0001"]) == 2, 10, "error reply")
    assert gateway.results["v0001"][1] == {"v": 1, "id": "c-test-2", "state": "closed", "ok": False,
                                           "error": "state must be open or closed"}
    gateway.command("v0001", "c-test-3", "open")
    gateway.wait_for(lambda: len(gateway.results["v0001"]) == 3, 10, "open reply")
    assert m.relay_closed is False
    fleet.quiesce(timeout=10)
    last = gateway.readings["v0001"][-1]
    assert last["valve"] == "open" and last["ml"] == fleet.ground_truth()["v0001"]["ml"]
    assert fleet.errors == []


def test_power_off_publishes_the_last_will(make_fleet, gateway):
    fleet = make_fleet(meter_ids(3), speed=300.0)
    fleet.start()
    m = fleet.meter("m0002")
    fleet.wait_for(lambda: m.online, 10, "meter online")
    boot = m.boot
    gateway.wait_for(lambda: gateway.status["m0002"], 10, "birth")
    birth = dict(gateway.status["m0002"][0])
    conn = birth.pop("conn")  # the connection's number, from the boot id on (the gateway's answer echoes it)
    assert birth == {"v": 1, "online": True, "boot": boot, "fw": VERSION, "valve": "open"}
    assert 1 <= conn - int(boot[1:], 16) <= 3  # the boot's first connect (or one of its first attempts)
    fleet.wait_until(fleet.clock.start_epoch + 300, timeout=10)
    fleet.wait_for(lambda: m.outbox_depth == 0, 10, "readings acknowledged")
    m.power_off()
    gateway.wait_for(lambda: len(gateway.status["m0002"]) >= 2, 10, "last will")
    assert gateway.status["m0002"][1] == {"v": 1, "online": False, "boot": boot}
    assert not m.online and m.relay_closed is False
    # back on: a new boot, the register restored from flash never goes backwards
    m.power_on()
    fleet.wait_for(lambda: m.online, 10, "meter back online")
    new = gateway.wait_for(lambda: [r for r in gateway.readings["m0002"] if r["boot"] == m.boot], 10, "new reading")
    old = [r for r in gateway.readings["m0002"] if r["boot"] == boot]
    assert m.boot != boot and new[0]["seq"] == 0
    assert new[0]["pulses"] >= max(r["pulses"] for r in old)
    assert gateway.status["m0002"][2]["boot"] == m.boot and gateway.status["m0002"][2]["online"] is True


def test_reboot_is_a_new_boot_with_the_register_continuing(make_fleet, gateway):
    fleet = make_fleet(["r0001"], speed=300.0)  # the leaking meter: water flows across the reboot
    fleet.start()
    m = fleet.meter("r0001")
    fleet.wait_until(fleet.clock.start_epoch + 300, timeout=10)
    fleet.wait_for(lambda: m.online and m.outbox_depth == 0, 10, "meter settled")
    old_boot = m.boot
    m.reboot()
    assert m.boot != old_boot and len(m.boots) == 2
    fleet.wait_until(fleet.clock.now() + 300, timeout=10)
    fleet.quiesce(timeout=10)
    readings = gateway.readings["r0001"]
    boots = assert_in_order_and_complete(readings)
    assert [b for b, _ in boots] == [old_boot, m.boot]
    old_last = [r for r in readings if r["boot"] == old_boot][-1]
    new_first = [r for r in readings if r["boot"] == m.boot][0]
    assert new_first["pulses"] >= old_last["pulses"] and new_first["ml"] >= old_last["ml"]
    statuses = [(s["online"], s["boot"]) for s in gateway.status["r0001"]]
    assert statuses == [(True, old_boot), (False, old_boot), (True, m.boot)]
    truth = fleet.ground_truth()["r0001"]
    assert (readings[-1]["pulses"], readings[-1]["ml"]) == (truth["pulses"], truth["ml"])  # no loss
    assert fleet.errors == []


def test_network_outage_queues_then_resends_in_order(make_fleet, gateway):
    fleet = make_fleet(meter_ids(2), speed=300.0)
    fleet.start()
    m = fleet.meter("m0001")
    fleet.wait_for(lambda: m.online, 10, "meter online")
    boot = m.boot
    m.net_down()
    gateway.wait_for(lambda: any(s == {"v": 1, "online": False, "boot": boot} for s in gateway.status["m0001"]),
                     10, "will after the link died")
    fleet.wait_until(fleet.clock.now() + 600, timeout=10)
    assert not m.online and m.outbox_depth >= 9  # ten minutes of readings waiting
    m.net_up()
    fleet.quiesce(timeout=20)
    readings = gateway.readings["m0001"]
    assert_in_order_and_complete(readings)
    truth = fleet.ground_truth()["m0001"]
    assert readings[-1]["ml"] == truth["ml"]
    assert m.app.stats["connects"] == 2


def test_duplicate_deliveries_are_harmless(make_fleet, gateway):
    fleet = make_fleet(meter_ids(5), speed=300.0, duplicate_prob=0.5)
    fleet.start()
    fleet.wait_until(fleet.clock.start_epoch + 600, timeout=10)
    fleet.quiesce(timeout=20)
    truth = fleet.ground_truth()
    dups = 0
    for mid in meter_ids(5):
        keys = [(r["boot"], r["seq"]) for r in gateway.readings[mid]]
        dups += len(keys) - len(set(keys))
        m = fleet.meter(mid)  # every delivery is a publish the meter recorded or an injected copy
        assert len(keys) == len(m.sent) + len(m.copies) and {(c["boot"], c["seq"]) for c in m.copies} <= set(keys)
        assert sorted(set(keys)) == [(keys[0][0], s) for s in range(len(set(keys)))]
        assert gateway.readings[mid][-1]["ml"] == truth[mid]["ml"]
    assert dups > 5  # the fault really was injected


def test_cli_runs_a_fleet_until_interrupted(broker, gateway, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "emulator"), "--broker", "%s:%d" % (broker.host, broker.port),
         "--meters", "3", "--prefix", "cli", "--seed", "1", "--speed", "120", "--status-every", "0.5",
         "--start", str(int(time.time()) - 3600), "--state-dir", str(tmp_path / "fs")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
    try:
        gateway.wait_for(lambda: all(gateway.readings["cli%04d" % i] for i in (1, 2, 3)), 20, "readings from the CLI")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "3 meters (cli0001..cli0003)" in out and "stopping" in out
    first = gateway.readings["cli0001"][0]
    assert time.time() - 3700 < first["ts"] < time.time() - 3000  # replaying from --start
    assert json.loads((tmp_path / "fs" / "cli0001" / "state.json").read_text())["v"] == 1
    # a graceful stop says offline with each meter's boot
    gateway.wait_for(lambda: any(s["online"] is False for s in gateway.status["cli0003"]), 10, "offline status")


def test_machine_reset_and_firmware_crash_reboot_the_meter(make_fleet, gateway):
    fleet = make_fleet(["x0001"], speed=300.0)
    fleet.start()
    m = fleet.meter("x0001")
    fleet.wait_until(fleet.clock.start_epoch + 300, timeout=10)
    fleet.quiesce(timeout=10)  # water stops; the last reading (and save) has the exact register
    first = m.boot

    def reset_once():
        m.board.reset()  # machine.reset(): no shutdown, the link just drops

    with m.step_lock:
        m.app.step = reset_once
    fleet.scheduler.wake(m)
    fleet.wait_for(lambda: len(m.boots) == 2 and m.online and m.outbox_depth == 0, 10, "reboot after machine.reset()")
    gateway.wait_for(lambda: {"v": 1, "online": False, "boot": first} in gateway.status["x0001"], 10, "will")
    assert fleet.errors == []
    second = m.boot

    def crash():
        raise ZeroDivisionError("a firmware bug")

    with m.step_lock:
        m.app.step = crash
    fleet.scheduler.wake(m)
    fleet.wait_for(lambda: len(m.boots) == 3 and m.online, 10, "reboot after a crash")
    assert [e[0] for e in fleet.errors] == ["x0001"] and "ZeroDivisionError" in fleet.errors[0][1]
    # like main.py: a crash shuts down gracefully (offline status with the boot) before the reset
    gateway.wait_for(lambda: {"v": 1, "online": False, "boot": second} in gateway.status["x0001"], 10, "offline")
    fleet.quiesce(timeout=10)
    readings = gateway.readings["x0001"]
    assert [r["boot"] for r in readings if r["seq"] == 0] == m.boots
    # the register survived both: restored from flash after machine.reset() (nothing was counted
    # after the last save, the water being stopped), saved by shutdown() after the crash
    assert readings[-1]["ml"] == fleet.ground_truth()["x0001"]["ml"] > 0
