"""Valve commands end to end: API -> ledger -> real Mosquitto -> emulated meter (the real
firmware) -> relay output -> stat/valve -> ledger says applied."""

from __future__ import annotations

import shutil
import time

import pytest

from emulator import Fleet

pytestmark = pytest.mark.integration

IDS = ["v001", "v002", "v003", "v004"]


@pytest.fixture
def rig(gateway_factory, broker, tmp_path):
    gw = gateway_factory(meters=IDS).start()
    fleet = Fleet(broker.host, broker.port, IDS, seed=3, speed=1.0, start_epoch=time.time() - 5,
                  fs_root=tmp_path / "flash")
    fleet.start()
    for mid in IDS:
        gw.wait_for(lambda mid=mid: gw.get(f"/meters/{mid}")["online"], f"{mid} online")
    yield gw, fleet
    fleet.stop()


def command(gw, cid):
    return gw.get(f"/commands/{cid}")["command"]


def test_close_switches_the_relay_and_the_ledger_says_applied_within_a_second(rig):
    gw, fleet = rig
    meter = fleet.meter("v001")
    assert not meter.relay_closed
    t0 = time.monotonic()
    status, body = gw.post("/meters/v001/valve", {"state": "closed", "reason": "test"})
    assert status == 202 and body["command"]["status"] in ("queued", "sent")
    cid = body["command"]["id"]
    done = gw.wait_for(lambda: command(gw, cid)["status"] == "applied", "applied", timeout=5, interval=0.005)
    elapsed = time.monotonic() - t0
    assert done and elapsed < 1.0, f"applied after {elapsed:.3f} s"
    assert meter.relay_closed
    m = gw.get("/meters/v001")
    assert m["valve"] == {"desired": "closed", "reported": "closed", "pending_command": None}

    status, body = gw.post("/meters/v001/valve", {"state": "open"})
    gw.wait_for(lambda: command(gw, body["command"]["id"])["status"] == "applied", "reopened", timeout=5)
    assert not meter.relay_closed


def test_a_meter_offline_when_commanded_applies_the_command_on_reconnect(rig):
    gw, fleet = rig
    meter = fleet.meter("v002")
    meter.power_off()
    gw.wait_for(lambda: gw.get("/meters/v002")["online"] is False, "last will seen")
    status, body = gw.post("/meters/v002/valve", {"state": "closed", "reason": "unpaid"})
    cid = body["command"]["id"]
    assert status == 202
    time.sleep(0.3)  # give a wrongly eager gateway the chance to claim more than it knows
    assert command(gw, cid)["status"] == "queued"
    meter.power_on()
    gw.wait_for(lambda: command(gw, cid)["status"] == "applied", "applied after reconnect", timeout=10)
    assert meter.relay_closed


def test_a_closed_valve_stays_closed_across_reboot_and_power_cut(rig):
    gw, fleet = rig
    meter = fleet.meter("v003")
    _, body = gw.post("/meters/v003/valve", {"state": "closed"})
    gw.wait_for(lambda: command(gw, body["command"]["id"])["status"] == "applied", "applied")
    boot = meter.boot
    meter.reboot()
    # restored from flash by start(), before any networking: not the gateway closing it again
    assert meter.relay_closed and not meter.online
    fleet.wait_for(lambda: meter.online and meter.boot != boot, 10, "rebooted")
    assert meter.relay_closed
    meter.power_off()
    assert not meter.relay_closed  # no power, no relay: a normally-open valve opens
    meter.power_on()
    assert meter.relay_closed and not meter.online
    fleet.wait_for(lambda: meter.online, 10, "back after power cut")
    assert meter.relay_closed and meter.valve == "closed"
    # the gateway had nothing to re-send: only the operator's command is in the ledger
    assert [c["origin"] for c in gw.get("/meters/v003/commands")["items"]] == ["api"]


def test_a_meter_that_comes_back_open_is_closed_again_by_the_gateway(rig, tmp_path):
    gw, fleet = rig
    meter = fleet.meter("v004")
    _, body = gw.post("/meters/v004/valve", {"state": "closed"})
    gw.wait_for(lambda: command(gw, body["command"]["id"])["status"] == "applied", "applied")
    meter.power_off()
    shutil.rmtree(tmp_path / "flash" / "v004")  # its flash is lost: it boots with the valve open
    (tmp_path / "flash" / "v004").mkdir()
    meter.power_on()
    gw.wait_for(lambda: any(c["origin"] == "reconcile" and c["status"] == "applied"
                            for c in gw.get("/meters/v004/commands")["items"]), "re-delivered", timeout=10)
    assert meter.relay_closed
    assert gw.get("/meters/v004")["valve"]["reported"] == "closed"


def test_unknown_meter_and_bad_bodies_are_refused_clearly(rig):
    gw, _ = rig
    status, body = gw.post("/meters/nobody/valve", {"state": "closed"})
    assert status == 404 and "not registered" in body["error"]["message"]
    status, body = gw.post("/meters/v001/valve", {"state": "shut"})
    assert status == 400 and body["error"]["field"] == "state"
    status, body = gw.post("/meters/v001/valve", raw=b"{not json")
    assert status == 400 and body["error"]["field"] == "body"
    status, body = gw.post("/meters/v001/valve", {"state": "closed", "reason": ["x"]})
    assert status == 400 and body["error"]["field"] == "reason"


def test_a_command_id_is_idempotent_end_to_end(rig):
    gw, fleet = rig
    s1, b1 = gw.post("/meters/v001/valve", {"state": "closed", "command_id": "op-77"})
    s2, b2 = gw.post("/meters/v001/valve", {"state": "closed", "command_id": "op-77"})
    s3, b3 = gw.post("/meters/v001/valve", {"state": "open", "command_id": "op-77"})
    assert (s1, s2, s3) == (202, 200, 409)
    assert b1["command"]["id"] == b2["command"]["id"] == "op-77"
    assert b3["error"]["field"] == "command_id"
    gw.wait_for(lambda: command(gw, "op-77")["status"] == "applied", "applied")
    assert fleet.meter("v001").relay_closed
